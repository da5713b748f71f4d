//! A circuit breaker per downstream (and per replica where balancing), with
//! resilience4j's `CircuitBreaker` semantics.
//!
//! **CLOSED** lets every call through and records its outcome in a sliding window: the
//! last N calls ([`SlidingWindow::Count`]) or the calls of the last N seconds in one-second
//! buckets ([`SlidingWindow::Time`]). Every recorded outcome re-evaluates the window; once
//! it holds at least [`BreakerConfig::minimum_calls`] calls, a failure rate or a slow-call
//! rate at or above its threshold opens the breaker. **OPEN** fails fast: [`Rejected`],
//! which converts to an UNAVAILABLE problem, and no downstream call. Once
//! [`BreakerConfig::wait_in_open`] has passed, the next [`CircuitBreaker::try_acquire`] moves
//! it to **HALF_OPEN** (lazily; no timer runs), which admits exactly
//! [`BreakerConfig::permitted_calls_in_half_open`] probes and rejects everything else; when
//! all of them have reported, a rate at or above a threshold re-opens the breaker, anything
//! else closes it. Operators can pin it **FORCED_OPEN** (rejects everything) or
//! **DISABLED** (permits everything, records nothing) until [`CircuitBreaker::reset`].
//! Every transition starts from an empty window.
//!
//! Where Brigade differs from resilience4j, on purpose:
//! - An outcome counts only in the state episode that admitted its call (each transition
//!   starts a new *generation*). A call admitted while CLOSED that finishes during
//!   HALF_OPEN is not mistaken for a probe, and a probe finishing after a reset does not
//!   land in the fresh window. resilience4j credits it to whatever state is current.
//! - HALF_OPEN decides when *all* permitted probes have reported (resilience4j decides
//!   after `min(minimumNumberOfCalls, permitted)`; the same with the defaults here).
//! - A call is slow when it took *at least* [`BreakerConfig::slow_call_duration`]
//!   (resilience4j: strictly longer), and the wait in OPEN is over once *at least*
//!   [`BreakerConfig::wait_in_open`] has passed (resilience4j: strictly after). Both
//!   differ only at the exact boundary; the inclusive reading matches `tokio::time::sleep`
//!   and keeps `Retry-After` positive.
//!
//! All time comes from [`tokio::time::Instant`], so tests drive the breaker with tokio's
//! paused clock.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::CallSite;

/// What the breaker remembers while CLOSED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N recorded calls. Rates are judged once `min(minimum_calls, N)` calls are in it.
    Count(u32),
    /// The calls recorded in the last N whole seconds (sub-second parts are ignored; at
    /// least one second), kept in one-second buckets counted from the breaker's creation:
    /// a call recorded in second `s` counts until second `s + N` begins.
    Time(Duration),
}

/// How one breaker judges its downstream. Build one per downstream kind; the defaults suit
/// an in-cluster service.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Which recent calls the rates are computed over while CLOSED.
    pub window: SlidingWindow,
    /// Rates are not judged until the window holds this many calls, so a handful of early
    /// failures after start-up or a reset cannot open the breaker. Capped at the size of a
    /// count window (as resilience4j does), or it could never be reached.
    pub minimum_calls: u32,
    /// Percent of failed calls in the window at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls (failed or not) at or above which the breaker opens. At 100.0
    /// it opens only when *every* call in the window was slow; above 100.0 slowness never
    /// opens it.
    pub slow_call_rate_threshold: f64,
    /// A call that took at least this long is slow.
    pub slow_call_duration: Duration,
    /// How long OPEN fails fast before letting probes through.
    pub wait_in_open: Duration,
    /// How many probes HALF_OPEN admits; their outcomes alone decide CLOSED or OPEN.
    pub permitted_calls_in_half_open: u32,
}

impl Default for BreakerConfig {
    /// - window of the last 100 calls: enough that a few unlucky calls don't dominate, few
    ///   enough that a downstream going bad is noticed within a second of normal traffic;
    /// - judged from 20 calls (resilience4j waits for 100): rates move in 5 % steps, and a
    ///   downstream failing from start-up is cut off after 20 calls instead of 100;
    /// - 50 % failures (resilience4j's default): past that, retrying it only adds load;
    /// - slow calls at 2 s with a 100 % rate: a uniformly slow downstream is left alone
    ///   unless every single call in the window took 2 s or more (deadlines and retries
    ///   handle ordinary slowness);
    /// - 5 s open (resilience4j: 60 s): an in-cluster service restarts in seconds, so a
    ///   minute of failing fast would outlast most outages;
    /// - 3 probes (resilience4j: 10): a recovering replica gets a trickle, and at 50 %
    ///   one failed probe of three still closes the breaker while two re-open it.
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count(100),
            minimum_calls: 20,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(2),
            wait_in_open: Duration::from_secs(5),
            permitted_calls_in_half_open: 3,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    Disabled,
}

impl State {
    /// The state as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// The value of the `brigade_breaker_state` gauge.
    fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
            State::ForcedOpen => 3.0,
            State::Disabled => 4.0,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call the breaker refused: the downstream was not called.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker {name} is {state}")]
pub struct Rejected {
    /// The breaker's (the downstream's) name.
    pub name: String,
    /// OPEN, HALF_OPEN (all probes taken) or FORCED_OPEN.
    pub state: State,
    /// When trying again makes sense: what is left of the wait in OPEN, else one second.
    pub retry_after: Duration,
}

impl From<Rejected> for problem::Problem {
    fn from(err: Rejected) -> Self {
        problem::Problem::unavailable(format!("{err}; the call was not attempted"))
            .with_retry_after(err.retry_after)
            .with_extension("breaker", &err.name)
    }
}

const TRANSITIONS_TOTAL: &str = "brigade_breaker_transitions_total";
const STATE_GAUGE: &str = "brigade_breaker_state";
const REJECTIONS_TOTAL: &str = "brigade_breaker_rejections_total";

/// What a rejection outside OPEN tells the caller to wait.
const RETRY_LATER: Duration = Duration::from_secs(1);

/// One downstream's circuit breaker. Share it (`Arc`) among every caller of that
/// downstream; all methods take `&self` and hold an internal lock only briefly, never
/// across an `.await`.
pub struct CircuitBreaker {
    /// Labels every metric and log line.
    site: CallSite,
    config: BreakerConfig,
    /// Second zero of a time window's buckets.
    origin: Instant,
    inner: Mutex<Inner>,
}

/// The mutable part, behind the lock.
struct Inner {
    phase: Phase,
    /// Bumped by every transition (and reset); a permit's outcome counts only if it was
    /// admitted in the current generation.
    generation: u64,
}

enum Phase {
    Closed(Window),
    /// Fails fast until `until` (`None`: the wait overflowed the clock; only an operator
    /// can close it).
    Open {
        until: Option<Instant>,
    },
    HalfOpen(Probes),
    ForcedOpen,
    Disabled,
}

impl Phase {
    fn state(&self) -> State {
        match self {
            Phase::Closed(_) => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen(_) => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
        }
    }
}

/// The probes of one HALF_OPEN episode.
#[derive(Default)]
struct Probes {
    /// Permits handed out and not given back by `ignore`.
    admitted: u32,
    /// Outcomes reported so far.
    recorded: u32,
    failed: u32,
    slow: u32,
}

/// Failed/slow counts over the calls currently in a window.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    total: u64,
    failed: u64,
    slow: u64,
}

impl Tally {
    fn add(&mut self, call: Call) {
        self.total += 1;
        self.failed += u64::from(call.failed);
        self.slow += u64::from(call.slow);
    }

    fn remove(&mut self, other: Tally) {
        self.total = self.total.saturating_sub(other.total);
        self.failed = self.failed.saturating_sub(other.failed);
        self.slow = self.slow.saturating_sub(other.slow);
    }

    /// Whether either rate is at or above its threshold.
    fn exceeds(&self, config: &BreakerConfig) -> bool {
        let total = self.total as f64;
        let failure_rate = self.failed as f64 * 100.0 / total;
        let slow_rate = self.slow as f64 * 100.0 / total;
        failure_rate >= config.failure_rate_threshold
            || slow_rate >= config.slow_call_rate_threshold
    }
}

#[derive(Debug, Clone, Copy)]
struct Call {
    failed: bool,
    slow: bool,
}

/// CLOSED's memory of recent calls, with running totals so judging is O(1).
enum Window {
    Count {
        size: usize,
        calls: std::collections::VecDeque<Call>,
        tally: Tally,
    },
    Time {
        /// One per second of the window; `buckets[s % len]` holds second `s`.
        buckets: Vec<Tally>,
        /// The latest second recorded into; older buckets in range are still valid.
        newest: u64,
        tally: Tally,
    },
}

impl Window {
    fn new(window: SlidingWindow, second: u64) -> Self {
        match window {
            SlidingWindow::Count(size) => Window::Count {
                size: size.max(1) as usize,
                calls: std::collections::VecDeque::new(),
                tally: Tally::default(),
            },
            SlidingWindow::Time(span) => Window::Time {
                buckets: vec![Tally::default(); span.as_secs().max(1) as usize],
                newest: second,
                tally: Tally::default(),
            },
        }
    }

    /// Records a call made known in `second` and returns the window's totals.
    fn record(&mut self, call: Call, second: u64) -> Tally {
        match self {
            Window::Count { size, calls, tally } => {
                if calls.len() == *size
                    && let Some(old) = calls.pop_front()
                {
                    let mut gone = Tally::default();
                    gone.add(old);
                    tally.remove(gone);
                }
                calls.push_back(call);
                tally.add(call);
                *tally
            }
            Window::Time {
                buckets,
                newest,
                tally,
            } => {
                let len = buckets.len() as u64;
                if second > *newest {
                    if second - *newest >= len {
                        buckets.fill(Tally::default());
                        *tally = Tally::default();
                    } else {
                        // Seconds newest+1..=second reuse the buckets of seconds that have
                        // just left the window.
                        for s in *newest + 1..=second {
                            let bucket = &mut buckets[(s % len) as usize];
                            tally.remove(*bucket);
                            *bucket = Tally::default();
                        }
                    }
                    *newest = second;
                }
                buckets[(*newest % len) as usize].add(call);
                tally.add(call);
                *tally
            }
        }
    }

    /// Calls needed before rates are judged.
    fn minimum(&self, minimum_calls: u32) -> u64 {
        let minimum = u64::from(minimum_calls.max(1));
        match self {
            Window::Count { size, .. } => minimum.min(*size as u64),
            Window::Time { .. } => minimum,
        }
    }
}

enum Outcome {
    Success,
    Failure,
}

impl CircuitBreaker {
    /// A CLOSED breaker named after the downstream it guards (`"catalog"`,
    /// `"catalog@10.0.0.7:8081"`).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self::at(CallSite::new(name), config)
    }

    /// A CLOSED breaker for `site` (its series carry the calling service too).
    pub fn at(site: CallSite, config: BreakerConfig) -> Self {
        let origin = Instant::now();
        metrics::gauge!(STATE_GAUGE, site.labels("breaker")).set(State::Closed.gauge());
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Closed(Window::new(config.window, 0)),
                generation: 0,
            }),
            site,
            config,
            origin,
        }
    }

    pub fn name(&self) -> &str {
        self.site.downstream()
    }

    /// The current state. OPEN stays OPEN here after its wait; the next
    /// [`try_acquire`](Self::try_acquire) makes it HALF_OPEN.
    pub fn state(&self) -> State {
        self.lock().phase.state()
    }

    /// How long calls will still be refused, if the breaker is refusing them now: what
    /// is left of the wait in OPEN (one second when FORCED_OPEN); `None` when calls may go.
    pub fn open_for(&self) -> Option<Duration> {
        let now = Instant::now();
        match self.lock().phase {
            Phase::Open { until } => Some(until.map_or(self.config.wait_in_open, |until| {
                until.saturating_duration_since(now)
            }))
            .filter(|left| !left.is_zero()),
            Phase::ForcedOpen => Some(RETRY_LATER),
            _ => None,
        }
    }

    /// A permit to call the downstream, or [`Rejected`] if it must not be called (OPEN,
    /// FORCED_OPEN, or HALF_OPEN with every probe taken). Report the call's outcome on the
    /// permit; dropping it unreported ignores the call.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let now = Instant::now();
        let refusal = {
            let mut inner = self.lock();
            if let Phase::Open { until: Some(until) } = inner.phase
                && now >= until
            {
                self.transition(&mut inner, Phase::HalfOpen(Probes::default()));
            }
            let generation = inner.generation;
            match &mut inner.phase {
                Phase::Closed(_) | Phase::Disabled => {
                    return Ok(Permit::new(self, generation));
                }
                Phase::HalfOpen(probes) => {
                    if probes.admitted < self.permitted_probes() {
                        probes.admitted += 1;
                        return Ok(Permit::new(self, generation));
                    }
                    (State::HalfOpen, RETRY_LATER)
                }
                Phase::Open { until } => {
                    let left = until.map_or(self.config.wait_in_open, |until| {
                        until.saturating_duration_since(now)
                    });
                    (State::Open, left)
                }
                Phase::ForcedOpen => (State::ForcedOpen, RETRY_LATER),
            }
        };
        let (state, retry_after) = refusal;
        metrics::counter!(REJECTIONS_TOTAL, self.site.labels("breaker")).increment(1);
        Err(Rejected {
            name: self.name().to_owned(),
            state,
            retry_after,
        })
    }

    /// Pins the breaker OPEN (rejecting every call) until [`reset`](Self::reset).
    pub fn force_open(&self) {
        let mut inner = self.lock();
        if !matches!(inner.phase, Phase::ForcedOpen) {
            self.transition(&mut inner, Phase::ForcedOpen);
        }
    }

    /// Switches the breaker off (every call permitted, nothing recorded) until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        let mut inner = self.lock();
        if !matches!(inner.phase, Phase::Disabled) {
            self.transition(&mut inner, Phase::Disabled);
        }
    }

    /// Back to CLOSED with an empty window, from any state; calls still in flight no longer
    /// count.
    pub fn reset(&self) {
        let mut inner = self.lock();
        let window = self.new_window();
        self.transition(&mut inner, Phase::Closed(window));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something ever did, the state is still
        // a valid state machine, so carry on with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn permitted_probes(&self) -> u32 {
        self.config.permitted_calls_in_half_open.max(1)
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn new_window(&self) -> Window {
        Window::new(self.config.window, self.second(Instant::now()))
    }

    /// Moves to `to` with a new generation. The metric, gauge and log line are emitted under
    /// the lock so that the gauge always ends at the latest state.
    fn transition(&self, inner: &mut Inner, to: Phase) {
        let from = inner.phase.state();
        let to_state = to.state();
        inner.phase = to;
        inner.generation += 1;
        if from == to_state {
            return;
        }
        let mut labels = self.site.labels("breaker");
        labels.push(metrics::Label::new("from", from.as_str()));
        labels.push(metrics::Label::new("to", to_state.as_str()));
        metrics::counter!(TRANSITIONS_TOTAL, labels).increment(1);
        metrics::gauge!(STATE_GAUGE, self.site.labels("breaker")).set(to_state.gauge());
        tracing::info!(
            breaker = self.name(),
            from = from.as_str(),
            to = to_state.as_str(),
            "circuit breaker changed state"
        );
    }

    /// Settles a permit: records its outcome, or (`None`) gives a HALF_OPEN slot back.
    fn settle(&self, generation: u64, outcome: Option<(Outcome, Duration)>) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let Some((outcome, elapsed)) = outcome else {
            if let Phase::HalfOpen(probes) = &mut inner.phase {
                probes.admitted = probes.admitted.saturating_sub(1);
            }
            return;
        };
        let call = Call {
            failed: matches!(outcome, Outcome::Failure),
            slow: elapsed >= self.config.slow_call_duration,
        };
        let second = self.second(now);
        let next = match &mut inner.phase {
            Phase::Closed(window) => {
                let tally = window.record(call, second);
                let judged = tally.total >= window.minimum(self.config.minimum_calls);
                (judged && tally.exceeds(&self.config)).then(|| self.opened(now))
            }
            Phase::HalfOpen(probes) => {
                probes.recorded += 1;
                probes.failed += u32::from(call.failed);
                probes.slow += u32::from(call.slow);
                (probes.recorded >= self.permitted_probes()).then(|| {
                    let tally = Tally {
                        total: u64::from(probes.recorded),
                        failed: u64::from(probes.failed),
                        slow: u64::from(probes.slow),
                    };
                    if tally.exceeds(&self.config) {
                        self.opened(now)
                    } else {
                        Phase::Closed(Window::new(self.config.window, second))
                    }
                })
            }
            // Disabled records nothing; OPEN and FORCED_OPEN admit nothing in their
            // generation, so no permit of theirs can arrive here.
            Phase::Open { .. } | Phase::ForcedOpen | Phase::Disabled => None,
        };
        if let Some(next) = next {
            self.transition(&mut inner, next);
        }
    }

    fn opened(&self, now: Instant) -> Phase {
        Phase::Open {
            until: now.checked_add(self.config.wait_in_open),
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Leave to make one call. Report how it went with [`record_success`](Self::record_success)
/// or [`record_failure`](Self::record_failure); a call that says nothing about the
/// downstream's health (cancelled, refused by the caller's own validation) is
/// [`ignore`](Self::ignore)d, which dropping the permit also does. In HALF_OPEN an ignored
/// probe frees its slot for another.
#[must_use = "a permit is leave to call the downstream; record the outcome on it"]
#[derive(Debug)]
pub struct Permit<'a> {
    /// `None` once settled, so `Drop` knows there is nothing left to do.
    breaker: Option<&'a CircuitBreaker>,
    /// The generation that admitted the call; its outcome counts only in it.
    generation: u64,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a CircuitBreaker, generation: u64) -> Self {
        Self {
            breaker: Some(breaker),
            generation,
        }
    }

    /// The call succeeded after `elapsed` (slow if at least the configured duration).
    pub fn record_success(mut self, elapsed: Duration) {
        self.settle(Some((Outcome::Success, elapsed)));
    }

    /// The call failed after `elapsed`.
    pub fn record_failure(mut self, elapsed: Duration) {
        self.settle(Some((Outcome::Failure, elapsed)));
    }

    /// The call says nothing about the downstream; forget it.
    pub fn ignore(mut self) {
        self.settle(None);
    }

    fn settle(&mut self, outcome: Option<(Outcome, Duration)>) {
        if let Some(breaker) = self.breaker.take() {
            breaker.settle(self.generation, outcome);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.settle(None);
    }
}
