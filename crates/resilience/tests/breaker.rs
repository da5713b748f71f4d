//! The circuit breaker against its contract: the scenarios from issue 5 on tokio's paused
//! clock, its metrics, and a property test that drives it and a from-scratch reference
//! model through thousands of random operation sequences and demands they agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use resilience::breaker::{BreakerConfig, CircuitBreaker, Permit, Rejected, SlidingWindow, State};
use tokio::time::advance;

const FAST: Duration = Duration::from_millis(10);

/// A downstream that counts the calls that actually reach it.
#[derive(Default)]
struct Downstream {
    calls: u32,
}

impl Downstream {
    /// One guarded call: reaches the downstream only if the breaker grants a permit.
    fn call(&mut self, breaker: &CircuitBreaker, fail: bool) -> Result<(), Rejected> {
        self.call_taking(breaker, fail, FAST)
    }

    fn call_taking(
        &mut self,
        breaker: &CircuitBreaker,
        fail: bool,
        took: Duration,
    ) -> Result<(), Rejected> {
        let permit = breaker.try_acquire()?;
        self.calls += 1;
        if fail {
            permit.record_failure(took);
        } else {
            permit.record_success(took);
        }
        Ok(())
    }
}

fn count_config(size: u32, minimum_calls: u32) -> BreakerConfig {
    BreakerConfig {
        window: SlidingWindow::Count(size),
        minimum_calls,
        failure_rate_threshold: 50.0,
        ..BreakerConfig::default()
    }
}

/// A breaker (count window 10, minimum 10, 50 %, `probes` probes) that has just opened.
fn opened(probes: u32) -> (CircuitBreaker, BreakerConfig) {
    let config = BreakerConfig {
        permitted_calls_in_half_open: probes,
        ..count_config(10, 10)
    };
    let breaker = CircuitBreaker::new("catalog", config.clone());
    let mut downstream = Downstream::default();
    for _ in 0..10 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(breaker.state(), State::Open);
    (breaker, config)
}

#[tokio::test(start_paused = true)]
async fn the_hundredth_call_opens_it_then_it_fails_fast_and_admits_exactly_the_probes() {
    let config = count_config(100, 100);
    let breaker = CircuitBreaker::new("catalog", config.clone());
    let mut downstream = Downstream::default();

    for _ in 0..99 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "99 calls are below the minimum"
    );

    // The 100th call succeeds, but 99 of 100 failed: the window is judged, and it opens.
    downstream.call(&breaker, false).unwrap();
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(downstream.calls, 100);

    for _ in 0..1_000 {
        let rejected = downstream.call(&breaker, false).unwrap_err();
        assert_eq!(rejected.state, State::Open);
    }
    assert_eq!(
        downstream.calls, 100,
        "no call reached the downstream while OPEN"
    );

    advance(config.wait_in_open - Duration::from_millis(1)).await;
    assert!(breaker.try_acquire().is_err(), "still waiting");
    advance(Duration::from_millis(1)).await;

    let probes: Vec<Permit<'_>> = (0..10).filter_map(|_| breaker.try_acquire().ok()).collect();
    assert_eq!(probes.len(), config.permitted_calls_in_half_open as usize);
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn exactly_the_threshold_opens_it_and_just_below_does_not() {
    let breaker = CircuitBreaker::new("catalog", count_config(100, 100));
    let mut downstream = Downstream::default();
    for i in 0..100 {
        downstream.call(&breaker, i < 49).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed, "49 % stays closed");

    // The window slides: the oldest call (a failure) leaves as a new failure arrives.
    downstream.call(&breaker, true).unwrap();
    assert_eq!(breaker.state(), State::Closed, "still 49 of the last 100");
    for _ in 0..48 {
        downstream.call(&breaker, false).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed, "1 of the last 100 failed");
    for _ in 0..48 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed, "49 of the last 100");
    downstream.call(&breaker, true).unwrap();
    assert_eq!(breaker.state(), State::Open, "50 of the last 100 is 50 %");
}

#[tokio::test(start_paused = true)]
async fn a_minimum_larger_than_a_count_window_is_capped_at_its_size() {
    let breaker = CircuitBreaker::new("catalog", count_config(10, 1_000));
    let mut downstream = Downstream::default();
    for _ in 0..9 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    downstream.call(&breaker, true).unwrap();
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn probes_that_all_succeed_close_it_with_an_empty_window() {
    let (breaker, config) = opened(3);
    advance(config.wait_in_open).await;
    let mut downstream = Downstream::default();
    for _ in 0..3 {
        downstream.call(&breaker, false).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);

    // The failures that opened it are gone: 9 new ones are below the minimum of 10.
    for _ in 0..9 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn one_failed_probe_of_two_reopens_it_for_another_full_wait() {
    let (breaker, config) = opened(2);
    advance(config.wait_in_open).await;
    let mut downstream = Downstream::default();
    downstream.call(&breaker, false).unwrap();
    assert_eq!(breaker.state(), State::HalfOpen, "waits for every probe");
    downstream.call(&breaker, true).unwrap();
    assert_eq!(breaker.state(), State::Open, "1 of 2 is 50 %");

    let rejected = breaker.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_after, config.wait_in_open);
    advance(config.wait_in_open).await;
    assert!(breaker.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_below_the_threshold_still_closes_it() {
    let (breaker, config) = opened(3);
    advance(config.wait_in_open).await;
    let mut downstream = Downstream::default();
    downstream.call(&breaker, true).unwrap();
    downstream.call(&breaker, false).unwrap();
    downstream.call(&breaker, false).unwrap();
    assert_eq!(breaker.state(), State::Closed, "1 of 3 is below 50 %");
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_probes_are_rejected_while_half_open() {
    let (breaker, config) = opened(2);
    advance(config.wait_in_open).await;
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    for _ in 0..100 {
        let rejected = breaker.try_acquire().unwrap_err();
        assert_eq!(rejected.state, State::HalfOpen);
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
    }

    // A finished probe does not free its slot; the episode still waits for the other.
    first.record_success(FAST);
    assert!(breaker.try_acquire().is_err());
    assert_eq!(breaker.state(), State::HalfOpen);
    second.record_success(FAST);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_ignored_or_dropped_probe_frees_its_slot() {
    let (breaker, config) = opened(1);
    advance(config.wait_in_open).await;

    let probe = breaker.try_acquire().unwrap();
    assert!(breaker.try_acquire().is_err());
    probe.ignore();

    let probe = breaker.try_acquire().unwrap();
    assert!(breaker.try_acquire().is_err());
    drop(probe); // a cancelled call

    breaker.try_acquire().unwrap().record_success(FAST);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_admitted_before_a_transition_does_not_count_after_it() {
    let (breaker, config) = opened(1);
    advance(config.wait_in_open).await;
    let probe = breaker.try_acquire().unwrap();
    breaker.reset();

    // The old probe's failure belongs to the HALF_OPEN episode that reset ended.
    let mut downstream = Downstream::default();
    for _ in 0..9 {
        downstream.call(&breaker, true).unwrap();
    }
    probe.record_failure(FAST);
    assert_eq!(breaker.state(), State::Closed, "9 failures, not 10");

    // And a call admitted while CLOSED is no probe when it ends during HALF_OPEN.
    let straggler = breaker.try_acquire().unwrap();
    downstream.call(&breaker, true).unwrap();
    assert_eq!(breaker.state(), State::Open);
    advance(config.wait_in_open).await;
    let probe = breaker.try_acquire().unwrap();
    straggler.record_failure(FAST);
    assert_eq!(breaker.state(), State::HalfOpen);
    probe.record_success(FAST);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it_even_when_every_call_succeeds() {
    let config = BreakerConfig {
        slow_call_rate_threshold: 50.0,
        slow_call_duration: Duration::from_secs(1),
        ..count_config(10, 10)
    };
    let breaker = CircuitBreaker::new("catalog", config.clone());
    let mut downstream = Downstream::default();
    for i in 0..10 {
        let took = if i % 2 == 0 {
            config.slow_call_duration // at the threshold counts as slow
        } else {
            config.slow_call_duration - Duration::from_millis(1)
        };
        downstream.call_taking(&breaker, false, took).unwrap();
    }
    assert_eq!(breaker.state(), State::Open, "5 of 10 slow is 50 %");
}

#[tokio::test(start_paused = true)]
async fn by_default_slowness_opens_it_only_when_every_call_is_slow() {
    let config = BreakerConfig::default();
    assert_eq!(config.window, SlidingWindow::Count(100));
    let slow = config.slow_call_duration;
    let breaker = CircuitBreaker::new("catalog", config);
    let mut downstream = Downstream::default();
    downstream.call(&breaker, false).unwrap();
    for _ in 0..99 {
        downstream.call_taking(&breaker, false, slow).unwrap();
    }
    assert_eq!(breaker.state(), State::Closed, "99 of 100 slow");
    downstream.call_taking(&breaker, false, slow).unwrap();
    assert_eq!(breaker.state(), State::Open, "100 of 100 slow");
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_failures_older_than_the_window() {
    let config = BreakerConfig {
        window: SlidingWindow::Time(Duration::from_secs(10)),
        minimum_calls: 5,
        failure_rate_threshold: 50.0,
        ..BreakerConfig::default()
    };
    let forgetting = CircuitBreaker::new("catalog", config.clone());
    let remembering = CircuitBreaker::new("accounts", config);
    let mut downstream = Downstream::default();
    for _ in 0..4 {
        downstream.call(&forgetting, true).unwrap();
        downstream.call(&remembering, true).unwrap();
    }

    // Seconds 0..=9 are the window until second 10 begins.
    advance(Duration::from_millis(9_999)).await;
    downstream.call(&remembering, true).unwrap();
    assert_eq!(remembering.state(), State::Open, "5 failures within 10 s");

    advance(Duration::from_millis(1)).await;
    downstream.call(&forgetting, true).unwrap();
    assert_eq!(
        forgetting.state(),
        State::Closed,
        "the 4 old failures left; 1 call is below the minimum"
    );
    for _ in 0..3 {
        downstream.call(&forgetting, false).unwrap();
    }
    downstream.call(&forgetting, true).unwrap();
    assert_eq!(forgetting.state(), State::Closed, "2 of 5 is below 50 %");
    downstream.call(&forgetting, true).unwrap();
    assert_eq!(forgetting.state(), State::Open, "3 of 6");
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_everything_until_reset() {
    let config = count_config(10, 10);
    let breaker = CircuitBreaker::new("catalog", config.clone());
    let mut downstream = Downstream::default();
    breaker.force_open();
    for _ in 0..100 {
        let rejected = downstream.call(&breaker, false).unwrap_err();
        assert_eq!(rejected.state, State::ForcedOpen);
    }
    advance(config.wait_in_open * 10).await;
    assert!(breaker.try_acquire().is_err(), "no wait ends a forced open");
    assert_eq!(breaker.state(), State::ForcedOpen);
    assert_eq!(downstream.calls, 0);

    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    downstream.call(&breaker, false).unwrap();
    assert_eq!(downstream.calls, 1);
}

#[tokio::test(start_paused = true)]
async fn disabled_never_rejects_never_opens_and_remembers_nothing() {
    let (breaker, _) = opened(3);
    breaker.disable();
    let mut downstream = Downstream::default();
    for _ in 0..1_000 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(downstream.calls, 1_000);
    assert_eq!(breaker.state(), State::Disabled);

    breaker.reset();
    for _ in 0..9 {
        downstream.call(&breaker, true).unwrap();
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "nothing was recorded while disabled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_an_unavailable_problem_with_the_remaining_wait() {
    let (breaker, config) = opened(3);
    advance(Duration::from_millis(1_500)).await;
    let rejected = breaker.try_acquire().unwrap_err();
    assert_eq!(rejected.to_string(), "circuit breaker catalog is open");
    assert_eq!(rejected.name, "catalog");

    let problem = problem::Problem::from(rejected);
    assert_eq!(problem.kind(), problem::Kind::Unavailable);
    assert_eq!(
        problem.retry_after(),
        Some(config.wait_in_open - Duration::from_millis(1_500))
    );

    breaker.force_open();
    let problem = problem::Problem::from(breaker.try_acquire().unwrap_err());
    assert_eq!(problem.retry_after(), Some(Duration::from_secs(1)));
}

// Breakers are shared across tasks and permits travel with them: checked when this file
// compiles (a static assertion, not a test that cannot fail at run time).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<CircuitBreaker>();
    send::<Permit<'static>>();
    send_sync::<Rejected>();
};

#[test]
fn state_names_are_the_metric_labels() {
    let names: Vec<_> = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ]
    .into_iter()
    .map(State::as_str)
    .collect();
    assert_eq!(
        names,
        ["closed", "open", "half_open", "forced_open", "disabled"]
    );
}

/// Keeps every counter and gauge by its rendered key, `name{label=value,...}`.
#[derive(Default)]
struct Captured {
    series: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Captured {
    fn handle(&self, key: &metrics::Key) -> Arc<AtomicU64> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let rendered = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut series = self.series.lock().unwrap();
        Arc::clone(series.entry(rendered).or_default())
    }

    fn counter(&self, rendered: &str) -> u64 {
        let series = self.series.lock().unwrap();
        series
            .get(rendered)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    fn gauge(&self, rendered: &str) -> f64 {
        let series = self.series.lock().unwrap();
        f64::from_bits(series[rendered].load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Captured {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

// A current-thread runtime, so the thread-local recorder sees everything.
#[tokio::test(start_paused = true)]
async fn every_transition_and_rejection_is_counted_and_the_gauge_follows() {
    let captured = Captured::default();
    let _recorder = metrics::set_default_local_recorder(&captured);
    let state = "brigade_breaker_state{breaker=catalog}";
    let transition = |from: &str, to: &str| {
        format!("brigade_breaker_transitions_total{{breaker=catalog,from={from},to={to}}}")
    };

    let (breaker, config) = opened(1);
    assert_eq!(captured.counter(&transition("closed", "open")), 1);
    assert_eq!(captured.gauge(state), 1.0);

    for _ in 0..7 {
        assert!(breaker.try_acquire().is_err());
    }
    assert_eq!(
        captured.counter("brigade_breaker_rejections_total{breaker=catalog}"),
        7
    );

    advance(config.wait_in_open).await;
    let probe = breaker.try_acquire().unwrap();
    assert_eq!(captured.counter(&transition("open", "half_open")), 1);
    assert_eq!(captured.gauge(state), 2.0);
    probe.record_success(FAST);
    assert_eq!(captured.counter(&transition("half_open", "closed")), 1);
    assert_eq!(captured.gauge(state), 0.0);

    breaker.force_open();
    assert_eq!(captured.gauge(state), 3.0);
    breaker.disable();
    assert_eq!(captured.counter(&transition("forced_open", "disabled")), 1);
    assert_eq!(captured.gauge(state), 4.0);
    breaker.reset();
    breaker.reset();
    assert_eq!(captured.counter(&transition("disabled", "closed")), 1);
    assert_eq!(
        captured.counter(&transition("closed", "closed")),
        0,
        "a reset of a closed breaker is no transition"
    );
}

// ---------------------------------------------------------------------------------------
// Property test: the breaker against a reference model.
// ---------------------------------------------------------------------------------------

/// The configuration the property test draws, in whole units the model can do exact
/// integer arithmetic with.
#[derive(Debug, Clone)]
struct Params {
    /// `Some(n)`: the last n calls; `None`: the last `seconds` seconds.
    count: Option<u64>,
    seconds: u64,
    minimum: u64,
    /// Percent.
    failure_threshold: u64,
    /// Percent; 101 switches the rule off.
    slow_threshold: u64,
    slow_ms: u64,
    wait_ms: u64,
    probes: u64,
}

impl Params {
    fn config(&self) -> BreakerConfig {
        BreakerConfig {
            window: match self.count {
                Some(n) => SlidingWindow::Count(n as u32),
                None => SlidingWindow::Time(Duration::from_secs(self.seconds)),
            },
            minimum_calls: self.minimum as u32,
            failure_rate_threshold: self.failure_threshold as f64,
            slow_call_rate_threshold: self.slow_threshold as f64,
            slow_call_duration: Duration::from_millis(self.slow_ms),
            wait_in_open: Duration::from_millis(self.wait_ms),
            permitted_calls_in_half_open: self.probes as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Success,
    Failure,
    Ignore,
    Drop,
}

#[derive(Debug, Clone)]
enum Op {
    /// Acquire and, if permitted, settle at once.
    Call {
        settle: Settle,
        latency_ms: u64,
    },
    /// Acquire and, if permitted, keep the permit in flight.
    Start,
    /// Settle the in-flight permit at `index` (modulo how many there are).
    Finish {
        index: usize,
        settle: Settle,
        latency_ms: u64,
    },
    Advance {
        ms: u64,
    },
    ForceOpen,
    Disable,
    Reset,
}

/// Obviously-correct breaker: every recorded call kept in a `Vec`, the window and its rates
/// recomputed from scratch whenever they are needed, integer percentages.
struct Model {
    p: Params,
    /// Milliseconds since the breaker was created.
    now: u64,
    state: State,
    /// Bumped on every transition; a permit carries the one that admitted it.
    generation: u64,
    /// CLOSED: (recorded at ms, failed, slow) for every call since the last transition.
    calls: Vec<(u64, bool, bool)>,
    /// OPEN: when the wait began.
    opened_at: u64,
    /// HALF_OPEN: probes admitted and not ignored, and the outcomes reported.
    admitted: u64,
    probes: Vec<(bool, bool)>,
}

impl Model {
    fn new(p: Params) -> Self {
        Self {
            p,
            now: 0,
            state: State::Closed,
            generation: 0,
            calls: Vec::new(),
            opened_at: 0,
            admitted: 0,
            probes: Vec::new(),
        }
    }

    fn go(&mut self, to: State) {
        self.state = to;
        self.generation += 1;
        self.calls.clear();
        self.probes.clear();
        self.admitted = 0;
        self.opened_at = self.now;
    }

    /// `Ok(generation)` or `Err((state, retry_after_ms))`.
    fn acquire(&mut self) -> Result<u64, (State, u64)> {
        if self.state == State::Open && self.now >= self.opened_at + self.p.wait_ms {
            self.go(State::HalfOpen);
        }
        match self.state {
            State::Closed | State::Disabled => Ok(self.generation),
            State::HalfOpen if self.admitted < self.p.probes => {
                self.admitted += 1;
                Ok(self.generation)
            }
            State::HalfOpen | State::ForcedOpen => Err((self.state, 1_000)),
            State::Open => Err((State::Open, self.opened_at + self.p.wait_ms - self.now)),
        }
    }

    fn too_bad(&self, outcomes: &[(bool, bool)]) -> bool {
        let total = outcomes.len() as u64;
        let failed = outcomes.iter().filter(|c| c.0).count() as u64;
        let slow = outcomes.iter().filter(|c| c.1).count() as u64;
        failed * 100 >= self.p.failure_threshold * total
            || slow * 100 >= self.p.slow_threshold * total
    }

    fn window(&self) -> Vec<(bool, bool)> {
        match self.p.count {
            Some(n) => self
                .calls
                .iter()
                .rev()
                .take(n as usize)
                .map(|c| (c.1, c.2))
                .collect(),
            None => self
                .calls
                .iter()
                .filter(|c| self.now / 1_000 - c.0 / 1_000 < self.p.seconds)
                .map(|c| (c.1, c.2))
                .collect(),
        }
    }

    fn settle(&mut self, generation: u64, settle: Settle, latency_ms: u64) {
        if generation != self.generation {
            return;
        }
        let (failed, slow) = match settle {
            Settle::Ignore | Settle::Drop => {
                if self.state == State::HalfOpen {
                    self.admitted -= 1;
                }
                return;
            }
            Settle::Success => (false, latency_ms >= self.p.slow_ms),
            Settle::Failure => (true, latency_ms >= self.p.slow_ms),
        };
        match self.state {
            State::Closed => {
                self.calls.push((self.now, failed, slow));
                let window = self.window();
                let minimum = match self.p.count {
                    Some(n) => self.p.minimum.min(n),
                    None => self.p.minimum,
                };
                if window.len() as u64 >= minimum && self.too_bad(&window) {
                    self.go(State::Open);
                }
            }
            State::HalfOpen => {
                self.probes.push((failed, slow));
                if self.probes.len() as u64 == self.p.probes {
                    let next = if self.too_bad(&self.probes) {
                        State::Open
                    } else {
                        State::Closed
                    };
                    self.go(next);
                }
            }
            State::Open | State::ForcedOpen | State::Disabled => {}
        }
    }
}

prop_compose! {
    fn params()(
        count in prop_oneof![(1u64..=8).prop_map(Some), Just(None)],
        seconds in 1u64..=4,
        minimum in 1u64..=10,
        failure_threshold in prop_oneof![Just(50u64), Just(100), 1u64..=100],
        slow_threshold in prop_oneof![Just(101u64), Just(100), 1u64..=100],
        slow_ms in 1u64..=200,
        // Round waits and round advances meet the end of the wait exactly, often.
        wait_ms in prop_oneof![Just(500u64), Just(1_000), Just(1_500), 500u64..=3_000],
        probes in 1u64..=4,
    ) -> Params {
        Params {
            count,
            seconds,
            minimum,
            failure_threshold,
            slow_threshold,
            slow_ms,
            wait_ms,
            probes,
        }
    }
}

fn settle() -> impl Strategy<Value = Settle> {
    prop_oneof![
        4 => Just(Settle::Success),
        4 => Just(Settle::Failure),
        1 => Just(Settle::Ignore),
        1 => Just(Settle::Drop),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (settle(), 0u64..=300)
            .prop_map(|(settle, latency_ms)| Op::Call { settle, latency_ms }),
        3 => Just(Op::Start),
        3 => (any::<usize>(), settle(), 0u64..=300)
            .prop_map(|(index, settle, latency_ms)| Op::Finish { index, settle, latency_ms }),
        4 => prop_oneof![Just(250u64), Just(500), Just(1_000), 0u64..=1_000, 1_000u64..=4_000]
            .prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
    ]
}

fn finish(permit: Permit<'_>, settle: Settle, latency_ms: u64) {
    let took = Duration::from_millis(latency_ms);
    match settle {
        Settle::Success => permit.record_success(took),
        Settle::Failure => permit.record_failure(took),
        Settle::Ignore => permit.ignore(),
        Settle::Drop => drop(permit),
    }
}

/// Runs `ops` against a fresh breaker and a fresh model on a paused clock, comparing them
/// after every step.
fn agree(p: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let breaker = CircuitBreaker::new("model", p.config());
        let mut model = Model::new(p);
        // Permits in flight, each with the model's generation that admitted it.
        let mut held: Vec<(Permit<'_>, u64)> = Vec::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call { settle, latency_ms } => {
                    let (actual, expected) = (breaker.try_acquire(), model.acquire());
                    match (actual, expected) {
                        (Ok(permit), Ok(generation)) => {
                            finish(permit, settle, latency_ms);
                            model.settle(generation, settle, latency_ms);
                        }
                        (actual, expected) => compare(step, actual.map(|_| ()), expected)?,
                    }
                }
                Op::Start => match (breaker.try_acquire(), model.acquire()) {
                    (Ok(permit), Ok(generation)) => held.push((permit, generation)),
                    (actual, expected) => compare(step, actual.map(|_| ()), expected)?,
                },
                Op::Finish {
                    index,
                    settle,
                    latency_ms,
                } => {
                    if !held.is_empty() {
                        let (permit, generation) = held.swap_remove(index % held.len());
                        finish(permit, settle, latency_ms);
                        model.settle(generation, settle, latency_ms);
                    }
                }
                Op::Advance { ms } => {
                    advance(Duration::from_millis(ms)).await;
                    model.now += ms;
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    if model.state != State::ForcedOpen {
                        model.go(State::ForcedOpen);
                    }
                }
                Op::Disable => {
                    breaker.disable();
                    if model.state != State::Disabled {
                        model.go(State::Disabled);
                    }
                }
                Op::Reset => {
                    breaker.reset();
                    model.go(State::Closed);
                }
            }
            prop_assert_eq!(breaker.state(), model.state, "state after step {}", step);
        }
        Ok(())
    })
}

/// The breaker's answer to an acquire against the model's, when they are not both permits.
fn compare(
    step: usize,
    actual: Result<(), Rejected>,
    expected: Result<u64, (State, u64)>,
) -> Result<(), TestCaseError> {
    match (actual, expected) {
        (Err(rejected), Err((state, retry_after_ms))) => {
            prop_assert_eq!(
                rejected.state,
                state,
                "rejected in which state, step {}",
                step
            );
            prop_assert_eq!(
                rejected.retry_after,
                Duration::from_millis(retry_after_ms),
                "retry-after at step {}",
                step
            );
            Ok(())
        }
        (actual, expected) => Err(TestCaseError::fail(format!(
            "step {step}: breaker permitted = {}, model permitted = {}",
            actual.is_ok(),
            expected.is_ok()
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn the_breaker_agrees_with_the_reference_model(
        p in params(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        agree(p, ops)?;
    }
}
