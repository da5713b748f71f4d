//! Retries: exponential backoff with full jitter, a bounded number of attempts, only for
//! calls that may safely run twice, decided by the one error table, honouring the
//! server's `Retry-After` / `grpc-retry-pushback-ms`, inside a retry budget and the call's
//! deadline.
//!
//! Why each piece is there:
//! - **Full jitter** (a delay uniform in `[0, min(cap, base · 2^attempt))`, as in the AWS
//!   Architecture Blog's "Exponential Backoff and Jitter") spreads the clients that failed
//!   together, so they do not come back together.
//! - **The error table decides** ([`problem::Kind::retry`]): a bad request, a missing
//!   resource or a refused permission is the same on the second try; a bug is retried once;
//!   only transient failures get backoff.
//! - **The budget** ([`RetryBudget`]) is what keeps retries from multiplying load on a
//!   dependency that is already failing: backoff spreads retries in time, only a budget
//!   bounds how many there are (gRPC's retry throttling, Finagle's `RetryBudget`, the AWS
//!   SDKs' retry quota).
//! - **The deadline**: a retry that could not finish before the caller stops waiting is
//!   load for nothing.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use problem::{Kind, Problem, Retry as Advice};
use tokio::time::Instant;

use crate::CallSite;

/// Counter: retries made, by `downstream`.
pub const RETRIES_TOTAL: &str = "brigade_retries_total";
/// Counter: retries the budget refused, by `downstream`. A rising rate means a dependency
/// is failing and its callers are holding back, as they should.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "brigade_retry_budget_exhausted_total";

/// Describes this module's metrics to the installed recorder (`# HELP` lines). Call once
/// after the recorder is installed; harmless to call again.
pub fn describe_metrics() {
    metrics::describe_counter!(RETRIES_TOTAL, "Retries of outbound calls, by downstream.");
    metrics::describe_counter!(
        RETRY_BUDGET_EXHAUSTED_TOTAL,
        "Retries of outbound calls refused by the retry budget, by downstream."
    );
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The ceiling of the first retry's delay; each further retry doubles it.
    pub base: Duration,
    /// No delay ceiling grows beyond this, however many retries.
    pub cap: Duration,
}

impl Backoff {
    /// A delay drawn uniformly from `[0, min(cap, base · 2^attempt))`; `attempt` 0 is the
    /// first retry. Zero when the ceiling is zero. Never panics on overflow.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        // Ceilings beyond u64 nanoseconds (~584 years) are clamped there; nothing waits
        // that long anyway.
        let nanos = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.u64(..nanos))
    }

    /// `min(cap, base · 2^attempt)`: the exclusive upper bound of [`Backoff::delay`].
    /// Saturates at `cap` instead of overflowing.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        2u32.checked_pow(attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

/// What an attempt's failure says about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry; after the server's delay if it gave one, else after the backoff.
    Retry { after: Option<Duration> },
    /// Retrying cannot help (or the server asked us not to): return the error.
    GiveUp,
}

/// A server's word on when to retry: `Retry-After` or `grpc-retry-pushback-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry no earlier than this.
    After(Duration),
    /// Do not retry at all (a negative or unparsable `grpc-retry-pushback-ms`).
    Stop,
}

/// Classifies a failure of attempt number `attempt` (0 is the first attempt) by the error
/// table: [`problem::Retry::Never`] gives up, [`problem::Retry::Once`] retries only after
/// the first attempt, [`problem::Retry::WithBackoff`] retries. A server-given delay goes into `after`; a
/// server's [`Pushback::Stop`] gives up whatever the kind.
pub fn verdict(kind: Kind, attempt: u32, pushback: Option<Pushback>) -> Verdict {
    let after = match pushback {
        Some(Pushback::Stop) => return Verdict::GiveUp,
        Some(Pushback::After(delay)) => Some(delay),
        None => None,
    };
    match kind.retry() {
        Advice::Never => Verdict::GiveUp,
        Advice::Once if attempt > 0 => Verdict::GiveUp,
        Advice::Once | Advice::WithBackoff => Verdict::Retry { after },
    }
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) turned into the time left until then (zero if it has
/// passed). Delta-seconds too large for a `u64` saturate rather than being ignored: the
/// server meant "not soon". `None` for anything else, including the obsolete date formats.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only possible failure is overflow.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses a `grpc-retry-pushback-ms` value. gRPC's retry design (A6) says a non-negative
/// integer is the delay in milliseconds and anything else (negative, unparsable) means
/// "do not retry". Too many digits for a `u64` saturate.
pub fn parse_grpc_pushback(value: &str) -> Pushback {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Pushback::Stop;
    }
    Pushback::After(Duration::from_millis(value.parse().unwrap_or(u64::MAX)))
}

/// Fixed-point scale of [`RetryBudget`]'s tokens: a millionth of a token, so the bucket
/// is one atomic integer.
const SCALE: u64 = 1_000_000;
// Exact in f64 (below 2^53), so the casts below lose nothing.
const SCALE_F: f64 = SCALE as f64;

/// A token bucket that caps retries to a fraction of calls, so a failing dependency never
/// sees a retry storm: each call deposits `ratio` tokens (up to `max_tokens`), each retry
/// withdraws one and is refused when less than one is left. Over any stretch of `n` calls
/// there are at most `tokens at the start + ratio · n` retries.
///
/// Share one per downstream (it is `Sync`; lock-free).
pub struct RetryBudget {
    /// Tokens now, in millionths.
    micros: AtomicU64,
    /// What each call deposits, in millionths.
    ratio: u64,
    /// The most the bucket holds, in millionths.
    max: u64,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per call (0.1 = 10%), starting with `initial`
    /// tokens and holding at most `max_tokens`. Negative or NaN arguments count as zero;
    /// `initial` is clamped to `max_tokens`. With `max_tokens < 1` no retry is ever
    /// allowed.
    pub fn new(ratio: f64, initial: f64, max_tokens: f64) -> Self {
        let max = to_micros(max_tokens);
        Self {
            micros: AtomicU64::new(to_micros(initial).min(max)),
            ratio: to_micros(ratio),
            max,
        }
    }

    /// Records a call: adds `ratio` tokens, up to the maximum.
    pub fn deposit(&self) {
        // The closure never refuses, so the update always succeeds.
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(self.ratio).min(self.max))
            });
    }

    /// Takes one token for a retry; `false` (and nothing taken) when less than one is left.
    pub fn try_withdraw(&self) -> bool {
        self.micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(SCALE)
            })
            .is_ok()
    }

    /// Tokens now: how many retries the budget would allow before the next deposit.
    pub fn tokens(&self) -> f64 {
        self.micros.load(Ordering::Relaxed) as f64 / SCALE_F
    }
}

/// 10% retries, starting with 10 tokens, holding at most 100.
///
/// - **ratio 0.1**: a dependency that fails every call sees at most 1.1× its normal load
///   from us, not `max_attempts`×; gRPC's throttling example uses the same ratio. (Finagle
///   allows 20%; we are stricter because every internal call already has a deadline
///   budget and most failures we retry are the dependency being overloaded.)
/// - **initial 10**: a client that has just started, or sees little traffic, can still
///   ride out a blip with a few retries (Finagle's "minimum retries per second" plays this
///   part).
/// - **max 100**: a long healthy stretch cannot bank unbounded credit; when an outage
///   starts, at most 100 retries burst out before the 10% ratio takes over.
impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(0.1, 10.0, 100.0)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("tokens", &self.tokens())
            .field("ratio", &(self.ratio as f64 / SCALE_F))
            .field("max_tokens", &(self.max as f64 / SCALE_F))
            .finish()
    }
}

/// Negative and NaN are zero; too large saturates (`as` from f64 does both).
fn to_micros(tokens: f64) -> u64 {
    if tokens.is_nan() || tokens <= 0.0 {
        0
    } else {
        (tokens * SCALE_F).round() as u64
    }
}

/// How hard to try one downstream.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 0 is read as 1: a call is always made once.
    pub max_attempts: u32,
    /// How long to wait between attempts when the server does not say.
    pub backoff: Backoff,
}

/// 3 attempts, 50 ms base, 1 s cap: for internal calls, whose budget in the seed's table
/// is 200 ms–2 s per call. The retries' delay ceilings are 50 ms and 100 ms, so both fit
/// well inside a typical internal deadline; the deadline check drops whatever does not.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_secs(1),
            },
        }
    }
}

/// How an error says whether retrying may help.
pub trait Classify {
    /// Its row in the error table.
    fn kind(&self) -> Kind;
    /// What the server said about retrying, if anything.
    fn pushback(&self) -> Option<Pushback> {
        None
    }
}

impl Classify for Problem {
    fn kind(&self) -> Kind {
        Problem::kind(self)
    }

    fn pushback(&self) -> Option<Pushback> {
        self.retry_after().map(Pushback::After)
    }
}

/// Runs `attempt` (given its number, 0 first) until it succeeds, or the error's
/// [`verdict`] is [`Verdict::GiveUp`], or `policy.max_attempts` are spent, or `budget`
/// refuses, or the next delay would not end before the deadline; then returns the last
/// error. A call that is not `idempotent` (and carries no idempotency key) gets exactly
/// one attempt.
///
/// The deadline is the earlier of `deadline` and the request's
/// ([`telemetry::deadline::current`]), and each attempt runs with it as the current
/// deadline, so the attempt's own outbound code gives its callee only what is left. The
/// first attempt always runs; giving up on a passed deadline before it is the attempt's
/// business (it knows how to say "deadline exceeded" in its error type).
///
/// Deposits into `budget` once per call; each retry withdraws a token.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    budget: &RetryBudget,
    idempotent: bool,
    deadline: Option<Instant>,
    site: &CallSite,
    mut attempt: F,
) -> Result<T, E>
where
    E: Classify,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    budget.deposit();
    let downstream = site.downstream();
    let deadline = match (deadline, telemetry::deadline::current()) {
        (Some(ours), Some(outer)) => Some(ours.min(outer)),
        (ours, outer) => ours.or(outer),
    };
    let max_attempts = if idempotent {
        policy.max_attempts.max(1)
    } else {
        1
    };
    let mut rng = fastrand::Rng::new();
    let mut n: u32 = 0;
    loop {
        let outcome = match deadline {
            Some(at) => telemetry::deadline::scope(at, attempt(n)).await,
            None => attempt(n).await,
        };
        let err = match outcome {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let next = n.saturating_add(1);
        if next >= max_attempts {
            return Err(err);
        }
        let kind = err.kind();
        let after = match verdict(kind, n, err.pushback()) {
            Verdict::GiveUp => return Err(err),
            Verdict::Retry { after } => after,
        };
        let delay = after.unwrap_or_else(|| policy.backoff.delay(n, &mut rng));
        if let Some(at) = deadline {
            // `>=`: an attempt that would start at the deadline has no time to do anything.
            let fits = Instant::now()
                .checked_add(delay)
                .is_some_and(|start| start < at);
            if !fits {
                tracing::debug!(
                    downstream,
                    attempt = next,
                    delay = ?delay,
                    kind = kind.slug(),
                    "not retrying: the delay would pass the deadline"
                );
                return Err(err);
            }
        }
        if !budget.try_withdraw() {
            metrics::counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, site.labels("downstream")).increment(1);
            tracing::debug!(
                downstream,
                attempt = next,
                kind = kind.slug(),
                "not retrying: retry budget exhausted"
            );
            return Err(err);
        }
        metrics::counter!(RETRIES_TOTAL, site.labels("downstream")).increment(1);
        tracing::debug!(
            downstream,
            attempt = next,
            delay = ?delay,
            kind = kind.slug(),
            "retrying"
        );
        tokio::time::sleep(delay).await;
        n = next;
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the one HTTP-date format
/// senders must use. Dates before 1970 come back as the epoch: only "has it passed?"
/// matters here.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut parts = value.split(' ');
    let weekday = parts.next()?.strip_suffix(',')?;
    let day = digits(parts.next()?, 2)?;
    let month = parts.next()?;
    let year = digits(parts.next()?, 4)?;
    let mut clock = parts.next()?.split(':');
    let (hour, minute, second) = (
        digits(clock.next()?, 2)?,
        digits(clock.next()?, 2)?,
        digits(clock.next()?, 2)?,
    );
    let well_formed = parts.next() == Some("GMT")
        && parts.next().is_none()
        && clock.next().is_none()
        && WEEKDAYS.contains(&weekday)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60;
    if !well_formed {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == month)?;
    let days = days_from_civil(year, month as i64 + 1, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Exactly `len` ASCII digits.
fn digits(s: &str, len: usize) -> Option<i64> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imf_fixdates_parse_to_their_instant() {
        let at = |s| parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(at("Tue, 29 Feb 2000 23:59:59 GMT"), Some(951_868_799));
        assert_eq!(at("Wed, 31 Dec 1969 23:59:59 GMT"), Some(0));
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sün, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }
}
