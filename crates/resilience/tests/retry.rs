//! Retries: full-jitter backoff bounds, the error table's verdicts, the server's pushback,
//! the deadline and the retry budget. Every async test runs on tokio's paused clock, so
//! backoff sleeps take no real time and elapsed times are exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use problem::{Kind, Problem};
use proptest::prelude::*;
use resilience::CallSite;
use resilience::retry::{
    Backoff, Classify, Pushback, RETRIES_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL, RetryBudget,
    RetryPolicy, Verdict, parse_grpc_pushback, parse_retry_after, retry, verdict,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn policy(max_attempts: u32, base: Duration, cap: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Backoff { base, cap },
    }
}

/// A budget that never runs dry, for tests about something else.
fn plenty() -> RetryBudget {
    RetryBudget::new(1.0, 1e9, 1e9)
}

/// What one call did: its result and when each attempt started.
struct Run {
    result: Result<&'static str, Problem>,
    starts: Vec<Instant>,
}

impl Run {
    fn attempts(&self) -> usize {
        self.starts.len()
    }
}

/// Drives `retry` with an attempt that fails with `fail(n)` (or succeeds on `None`).
async fn drive(
    policy: &RetryPolicy,
    budget: &RetryBudget,
    idempotent: bool,
    deadline: Option<Instant>,
    fail: impl Fn(u32) -> Option<Problem>,
) -> Run {
    let starts = RefCell::new(Vec::new());
    let result = retry(policy, budget, idempotent, deadline, &"test".into(), |n| {
        assert_eq!(
            n as usize,
            starts.borrow().len(),
            "attempts are numbered from 0"
        );
        starts.borrow_mut().push(Instant::now());
        let outcome = fail(n);
        async move { outcome.map_or(Ok("ok"), Err) }
    })
    .await;
    Run {
        result,
        starts: starts.into_inner(),
    }
}

// ---------------------------------------------------------------------------------------
// Backoff

/// The ceiling computed independently, in u128 nanoseconds.
fn expected_ceiling(b: Backoff, n: u32) -> Duration {
    let cap = b.cap.as_nanos();
    let grown = if n >= 128 {
        u128::MAX
    } else {
        b.base.as_nanos().saturating_mul(1u128 << n)
    };
    let nanos = if b.base.is_zero() { 0 } else { grown.min(cap) };
    Duration::from_nanos(u64::try_from(nanos).unwrap())
}

#[test]
fn ten_thousand_backoff_samples_all_lie_in_zero_to_the_ceiling_and_are_spread_over_it() {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_secs(10),
    };
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for n in [
        0,
        1,
        2,
        3,
        5,
        9,
        10,
        11,
        20,
        31,
        32,
        33,
        63,
        64,
        65,
        1000,
        u32::MAX,
    ] {
        let ceiling = backoff.ceiling(n);
        assert_eq!(ceiling, expected_ceiling(backoff, n), "ceiling({n})");
        let samples: Vec<Duration> = (0..10_000).map(|_| backoff.delay(n, &mut rng)).collect();
        for d in &samples {
            assert!(*d < ceiling, "attempt {n}: {d:?} is not below {ceiling:?}");
        }
        // Full jitter: uniform over [0, ceiling), so the mean is ceiling/2 (equal jitter's
        // would be 3/4 of it) and some delays are near zero (equal jitter's never are).
        let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / 10_000.0;
        let half = ceiling.as_secs_f64() / 2.0;
        assert!(
            (mean - half).abs() <= 0.1 * half,
            "attempt {n}: mean {mean}s, expected about {half}s"
        );
        let min = samples.iter().min().unwrap();
        assert!(*min < ceiling / 100, "attempt {n}: smallest delay {min:?}");
        let max = samples.iter().max().unwrap();
        assert!(
            *max > ceiling * 99 / 100,
            "attempt {n}: largest delay {max:?}"
        );
    }
    // Uncapped below attempt 10 (10 ms · 2^10 > 10 s), capped from then on.
    assert_eq!(backoff.ceiling(0), Duration::from_millis(10));
    assert_eq!(backoff.ceiling(9), Duration::from_millis(5_120));
    assert_eq!(backoff.ceiling(10), Duration::from_secs(10));
}

#[test]
fn zero_ceilings_give_zero_delays() {
    let mut rng = fastrand::Rng::with_seed(1);
    let no_base = Backoff {
        base: Duration::ZERO,
        cap: Duration::from_secs(1),
    };
    let no_cap = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::ZERO,
    };
    for n in [0, 1, 40, u32::MAX] {
        assert_eq!(no_base.delay(n, &mut rng), Duration::ZERO);
        assert_eq!(no_cap.delay(n, &mut rng), Duration::ZERO);
    }
}

proptest! {
    /// Any base, cap and attempt: no panic, and the delay lies under a ceiling that lies
    /// under the cap.
    #[test]
    fn backoff_never_overflows(
        base_ns in any::<u64>(), base_s in prop_oneof![Just(0u64), any::<u64>()],
        cap_ns in any::<u64>(), cap_s in prop_oneof![Just(0u64), any::<u64>()],
        attempt in any::<u32>(), seed in any::<u64>(),
    ) {
        let backoff = Backoff {
            base: Duration::from_secs(base_s).saturating_add(Duration::from_nanos(base_ns)),
            cap: Duration::from_secs(cap_s).saturating_add(Duration::from_nanos(cap_ns)),
        };
        let ceiling = backoff.ceiling(attempt);
        prop_assert!(ceiling <= backoff.cap);
        let delay = backoff.delay(attempt, &mut fastrand::Rng::with_seed(seed));
        prop_assert!(delay < ceiling || (delay.is_zero() && ceiling.is_zero()));
    }
}

// ---------------------------------------------------------------------------------------
// The error table decides

#[test]
fn verdicts_follow_the_error_table() {
    let later = Duration::from_secs(2);
    for kind in Kind::ALL {
        let first = verdict(kind, 0, None);
        match kind.retry() {
            problem::Retry::Never => {
                assert_eq!(first, Verdict::GiveUp, "{kind:?}");
                assert_eq!(
                    verdict(kind, 0, Some(Pushback::After(later))),
                    Verdict::GiveUp,
                    "a server's delay does not make {kind:?} retryable"
                );
            }
            problem::Retry::Once => {
                assert_eq!(first, Verdict::Retry { after: None }, "{kind:?}");
                assert_eq!(verdict(kind, 1, None), Verdict::GiveUp, "{kind:?}");
            }
            problem::Retry::WithBackoff => {
                assert_eq!(first, Verdict::Retry { after: None }, "{kind:?}");
                assert_eq!(verdict(kind, 7, None), Verdict::Retry { after: None });
                assert_eq!(
                    verdict(kind, 1, Some(Pushback::After(later))),
                    Verdict::Retry { after: Some(later) }
                );
            }
        }
        assert_eq!(
            verdict(kind, 0, Some(Pushback::Stop)),
            Verdict::GiveUp,
            "{kind:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_not_found_and_permission_kinds_are_never_retried() {
    let never = [
        Kind::InvalidRequest,
        Kind::ValidationFailed,
        Kind::NotFound,
        Kind::Forbidden,
        Kind::Unauthenticated,
    ];
    for kind in never {
        let run = drive(&policy(5, MS, MS), &plenty(), true, None, |_| {
            Some(Problem::new(kind))
        })
        .await;
        assert_eq!(run.attempts(), 1, "{kind:?}");
        assert_eq!(run.result.unwrap_err().kind(), kind);
    }
    // And every other kind the table says never to retry.
    for kind in Kind::ALL
        .into_iter()
        .filter(|k| k.retry() == problem::Retry::Never)
    {
        let run = drive(&policy(5, MS, MS), &plenty(), true, None, |_| {
            Some(Problem::new(kind).with_retry_after(MS))
        })
        .await;
        assert_eq!(run.attempts(), 1, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn internal_errors_are_retried_once() {
    let run = drive(&policy(5, MS, MS), &plenty(), true, None, |_| {
        Some(Problem::new(Kind::Internal))
    })
    .await;
    assert_eq!(run.attempts(), 2);
    assert_eq!(run.result.unwrap_err().kind(), Kind::Internal);
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_up_to_max_attempts() {
    for max in [1, 2, 3, 5, 8] {
        let run = drive(&policy(max, MS, 10 * MS), &plenty(), true, None, |_| {
            Some(Problem::unavailable("down"))
        })
        .await;
        assert_eq!(run.attempts(), max as usize);
        assert_eq!(run.result.unwrap_err().kind(), Kind::Unavailable);
    }
    // Zero is read as one: the call is always made.
    let run = drive(&policy(0, MS, MS), &plenty(), true, None, |_| {
        Some(Problem::unavailable("down"))
    })
    .await;
    assert_eq!(run.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_recovers_returns_its_success() {
    let run = drive(&RetryPolicy::default(), &plenty(), true, None, |n| {
        (n < 2).then(|| Problem::unavailable("down"))
    })
    .await;
    assert_eq!(run.attempts(), 3);
    assert_eq!(run.result.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_calls_get_exactly_one_attempt() {
    for kind in [
        Kind::Unavailable,
        Kind::Internal,
        Kind::Timeout,
        Kind::RateLimited,
    ] {
        let run = drive(&policy(5, MS, MS), &plenty(), false, None, |_| {
            Some(Problem::new(kind))
        })
        .await;
        assert_eq!(run.attempts(), 1, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_under_each_ceiling() {
    let p = policy(6, 100 * MS, 400 * MS);
    for _ in 0..50 {
        let run = drive(&p, &plenty(), true, None, |_| {
            Some(Problem::unavailable("down"))
        })
        .await;
        assert_eq!(run.attempts(), 6);
        for (n, pair) in run.starts.windows(2).enumerate() {
            let waited = pair[1] - pair[0];
            // `<=`: tokio's timer rounds a sleep up to its next millisecond.
            assert!(
                waited <= p.backoff.ceiling(n as u32),
                "retry {n} waited {waited:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server's word

/// An error carrying a gRPC pushback, which `Problem` has no field for.
struct Pushed(Kind, Pushback);

impl Classify for Pushed {
    fn kind(&self) -> Kind {
        self.0
    }
    fn pushback(&self) -> Option<Pushback> {
        Some(self.1)
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let three = Duration::from_secs(3);
    let run = drive(&policy(3, MS, 10 * MS), &plenty(), true, None, |n| {
        (n == 0).then(|| Problem::new(Kind::RateLimited).with_retry_after(three))
    })
    .await;
    assert_eq!(run.attempts(), 2);
    assert_eq!(run.result.unwrap(), "ok");
    assert!(run.starts[1] - run.starts[0] >= three);
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_is_honoured_and_stop_means_stop() {
    let start = Instant::now();
    let attempts = AtomicU32::new(0);
    let result: Result<(), Pushed> = retry(
        &policy(3, MS, 10 * MS),
        &plenty(),
        true,
        None,
        &"test".into(),
        |n| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async move {
                match n {
                    0 => Err(Pushed(Kind::Unavailable, parse_grpc_pushback("3000"))),
                    _ => Ok(()),
                }
            }
        },
    )
    .await;
    assert!(result.is_ok());
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
    assert!(start.elapsed() >= Duration::from_secs(3));

    let attempts = AtomicU32::new(0);
    let result: Result<(), Pushed> = retry(
        &policy(5, MS, 10 * MS),
        &plenty(),
        true,
        None,
        &"test".into(),
        |_| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async { Err(Pushed(Kind::Unavailable, parse_grpc_pushback("-1"))) }
        },
    )
    .await;
    assert!(result.is_err());
    assert_eq!(attempts.load(Ordering::Relaxed), 1, "Stop means no retry");
}

#[test]
fn problems_classify_by_kind_and_retry_after() {
    let plain = Problem::unavailable("down");
    assert_eq!(Classify::kind(&plain), Kind::Unavailable);
    assert_eq!(plain.pushback(), None);
    let later = Problem::new(Kind::RateLimited).with_retry_after(Duration::from_secs(7));
    assert_eq!(
        later.pushback(),
        Some(Pushback::After(Duration::from_secs(7)))
    );
}

#[test]
fn retry_after_values_parse() {
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(parse_retry_after("120"), secs(120));
    assert_eq!(parse_retry_after("0"), secs(0));
    assert_eq!(parse_retry_after(" 5 "), secs(5));
    assert_eq!(parse_retry_after("007"), secs(7));
    assert_eq!(
        parse_retry_after("99999999999999999999999"),
        secs(u64::MAX),
        "too large saturates: the server meant 'not soon'"
    );
    for bad in ["", " ", "-1", "+1", "1.5", "1e3", "soon", "5s", "0x10"] {
        assert_eq!(parse_retry_after(bad), None, "{bad:?}");
    }
    // HTTP-dates: one in the past means now; one far ahead means a long wait.
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(Duration::ZERO)
    );
    let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").unwrap();
    assert!(far > Duration::from_secs(7_000 * 365 * 86_400));
    assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT"), None);
}

#[test]
fn grpc_pushback_values_parse() {
    let after = |ms| Pushback::After(Duration::from_millis(ms));
    assert_eq!(parse_grpc_pushback("250"), after(250));
    assert_eq!(parse_grpc_pushback("0"), after(0));
    assert_eq!(
        parse_grpc_pushback("99999999999999999999999"),
        after(u64::MAX)
    );
    for stop in ["-1", "-250", "", "abc", "1.5", "+5", "250ms", "-0"] {
        assert_eq!(parse_grpc_pushback(stop), Pushback::Stop, "{stop:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The deadline

#[tokio::test(start_paused = true)]
async fn attempts_stop_when_the_next_delay_would_pass_the_deadline() {
    // The server asks for 400 ms each time: attempts at 0, 400 and 800 ms; the next would
    // start at 1200 ms, past the 1 s deadline, so the call gives up at 800 ms.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1);
    let fail = |_| Some(Problem::unavailable("busy").with_retry_after(400 * MS));
    let run = drive(&policy(10, MS, MS), &plenty(), true, Some(deadline), fail).await;
    assert_eq!(run.attempts(), 3);
    assert_eq!(start.elapsed(), 800 * MS);
    assert_eq!(run.result.unwrap_err().kind(), Kind::Unavailable);

    // An attempt that would start exactly at the deadline is not made either.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1);
    let fail = |_| Some(Problem::unavailable("busy").with_retry_after(500 * MS));
    let run = drive(&policy(10, MS, MS), &plenty(), true, Some(deadline), fail).await;
    assert_eq!(run.attempts(), 2);
    assert_eq!(start.elapsed(), 500 * MS);
}

#[tokio::test(start_paused = true)]
async fn attempts_run_under_the_deadline_and_an_earlier_request_deadline_wins() {
    let start = Instant::now();
    let ours = start + Duration::from_secs(5);
    let request = start + Duration::from_secs(1);
    let seen = RefCell::new(Vec::new());
    let fail = |_| {
        seen.borrow_mut().push(telemetry::deadline::current());
        Some(Problem::unavailable("busy").with_retry_after(300 * MS))
    };
    let run = telemetry::deadline::scope(
        request,
        drive(&policy(10, MS, MS), &plenty(), true, Some(ours), fail),
    )
    .await;
    assert_eq!(
        run.attempts(),
        4,
        "0, 300, 600 and 900 ms; 1200 would be too late"
    );
    assert!(seen.borrow().iter().all(|d| *d == Some(request)));

    // Without a deadline of its own, the call takes the request's.
    let start = Instant::now();
    let fail = |_| Some(Problem::unavailable("busy").with_retry_after(300 * MS));
    let run = telemetry::deadline::scope(
        start + Duration::from_secs(1),
        drive(&policy(10, MS, MS), &plenty(), true, None, fail),
    )
    .await;
    assert_eq!(run.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn total_elapsed_never_exceeds_the_deadline() {
    let mut rng = fastrand::Rng::with_seed(42);
    let p = policy(8, 50 * MS, 2_000 * MS);
    for _ in 0..300 {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(rng.u64(1..3_000));
        let work = Duration::from_millis(rng.u64(0..400));
        let attempts = AtomicU32::new(0);
        // Each attempt works for `work`, or gives up with a timeout when the deadline
        // (which it reads from telemetry, as an outbound client would) comes first.
        let result: Result<(), Problem> =
            retry(&p, &plenty(), true, Some(deadline), &"test".into(), |_| {
                attempts.fetch_add(1, Ordering::Relaxed);
                async move {
                    let left = telemetry::deadline::remaining().unwrap();
                    tokio::time::sleep(work.min(left)).await;
                    Err(if work >= left {
                        Problem::new(Kind::Timeout)
                    } else {
                        Problem::unavailable("down")
                    })
                }
            })
            .await;
        assert!(result.is_err());
        assert!(
            Instant::now() <= deadline,
            "ran {:?} past a {:?} deadline",
            Instant::now() - deadline,
            deadline - start
        );
        assert!(attempts.load(Ordering::Relaxed) >= 1);
    }
}

// ---------------------------------------------------------------------------------------
// The budget

#[test]
fn the_default_budget_starts_with_ten_tokens_and_earns_a_tenth_per_call() {
    let budget = RetryBudget::default();
    assert!((budget.tokens() - 10.0).abs() < 1e-9);
    for _ in 0..10 {
        assert!(budget.try_withdraw());
    }
    assert!(!budget.try_withdraw(), "refused below one token");
    assert!(budget.tokens().abs() < 1e-9, "a refusal takes nothing");
    for _ in 0..9 {
        budget.deposit();
    }
    assert!(!budget.try_withdraw(), "0.9 tokens is not enough");
    budget.deposit();
    assert!(budget.try_withdraw(), "ten calls earn one retry");
    for _ in 0..100_000 {
        budget.deposit();
    }
    assert!((budget.tokens() - 100.0).abs() < 1e-9, "capped at 100");
}

#[test]
fn nonsense_budget_arguments_allow_nothing_and_do_not_panic() {
    for (ratio, initial, max) in [
        (f64::NAN, f64::NAN, f64::NAN),
        (-1.0, -5.0, -10.0),
        (0.1, 10.0, 0.5),
        (0.0, 0.0, 100.0),
    ] {
        let budget = RetryBudget::new(ratio, initial, max);
        for _ in 0..100 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw(), "{ratio} {initial} {max}");
    }
    let infinite = RetryBudget::new(f64::INFINITY, f64::INFINITY, f64::INFINITY);
    infinite.deposit();
    assert!(infinite.try_withdraw());
    assert_eq!(
        RetryBudget::new(0.1, 50.0, 20.0).tokens(),
        20.0,
        "initial is clamped to the maximum"
    );
}

#[test]
fn the_budget_holds_across_threads() {
    let budget = Arc::new(RetryBudget::new(0.2, 5.0, 1e9));
    let granted = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (budget, granted) = (Arc::clone(&budget), Arc::clone(&granted));
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    budget.deposit();
                    for _ in 0..3 {
                        if budget.try_withdraw() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let granted = granted.load(Ordering::Relaxed);
    // 80,000 calls at 0.2 plus 5 to start: exactly 16,005 retries, no more, no fewer.
    assert_eq!(granted, 16_005);
}

/// Counts every counter by name and labels, on this thread only.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, name: &str, downstream: &str) -> u64 {
        let key = format!("{name}{{downstream={downstream}}}");
        self.0
            .lock()
            .unwrap()
            .get(&key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let counter = Arc::clone(self.0.lock().unwrap().entry(name).or_default());
        Counter::from_arc(counter)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The dependency of the budget tests: fails every call until `healthy_from`.
struct Dependency {
    healthy_from: Instant,
    attempts: AtomicU32,
}

impl Dependency {
    async fn call(&self) -> Result<(), Problem> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(MS).await;
        if Instant::now() < self.healthy_from {
            Err(Problem::unavailable("down"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_dependency_under_steady_load_sees_at_most_one_point_one_times_the_calls() {
    // `current_thread` runtime: every task records on this thread's local recorder.
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);

    const CALLS: u32 = 10_000;
    let policy = policy(5, 10 * MS, 100 * MS);
    let budget = Rc::new(RetryBudget::new(0.1, 10.0, 100.0));
    // Down for the ten seconds in which 10,000 calls arrive, one a millisecond.
    let dependency = Rc::new(Dependency {
        healthy_from: Instant::now() + Duration::from_secs(10),
        attempts: AtomicU32::new(0),
    });
    let failed = Rc::new(AtomicU32::new(0));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut calls = Vec::new();
            for _ in 0..CALLS {
                let (policy, budget, dependency, failed) = (
                    policy.clone(),
                    Rc::clone(&budget),
                    Rc::clone(&dependency),
                    Rc::clone(&failed),
                );
                calls.push(tokio::task::spawn_local(async move {
                    let result = retry(&policy, &budget, true, None, &"inventory".into(), |_| {
                        dependency.call()
                    })
                    .await;
                    if result.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
                tokio::time::sleep(MS).await;
            }
            for call in calls {
                call.await.unwrap();
            }
        })
        .await;

    let attempts = dependency.attempts.load(Ordering::Relaxed);
    let retries = attempts - CALLS;
    assert!(
        f64::from(attempts) <= 1.1 * f64::from(CALLS) + 10.0,
        "{attempts} attempts for {CALLS} calls"
    );
    assert!(
        retries >= 1_000,
        "the budget still allows its share: {retries}"
    );
    assert!(
        failed.load(Ordering::Relaxed) > CALLS / 2,
        "most calls fail while it is down"
    );
    assert_eq!(counters.get(RETRIES_TOTAL, "inventory"), u64::from(retries));
    assert!(counters.get(RETRY_BUDGET_EXHAUSTED_TOTAL, "inventory") > 0);

    // Once it recovers, calls succeed on their first attempt.
    tokio::time::sleep_until(dependency.healthy_from).await;
    let before = dependency.attempts.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        retry(&policy, &budget, true, None, &"inventory".into(), |_| {
            dependency.call()
        })
        .await
        .unwrap();
    }
    assert_eq!(dependency.attempts.load(Ordering::Relaxed) - before, 1_000);
    assert_eq!(counters.get(RETRIES_TOTAL, "inventory"), u64::from(retries));
}

#[tokio::test(start_paused = true)]
async fn sequential_calls_to_a_dead_dependency_stay_within_the_budget() {
    const CALLS: u32 = 10_000;
    let budget = RetryBudget::new(0.1, 10.0, 100.0);
    let dependency = Dependency {
        healthy_from: Instant::now() + Duration::from_secs(1_000_000),
        attempts: AtomicU32::new(0),
    };
    for _ in 0..CALLS {
        let result = retry(
            &policy(5, 10 * MS, 100 * MS),
            &budget,
            true,
            None,
            &"x".into(),
            |_| dependency.call(),
        )
        .await;
        assert!(result.is_err());
    }
    let attempts = dependency.attempts.load(Ordering::Relaxed);
    assert!(attempts <= 11_010, "{attempts}");
    // Deposits before retries: 10 to start plus 0.1 for each of 10,000 calls.
    assert_eq!(attempts, CALLS + 1_010);
}

/// Two services of one process calling the same downstream keep apart series: each
/// carries its `service` (issue 13), and a bare client's carries none.
#[tokio::test(start_paused = true)]
async fn series_are_named_by_service_and_downstream() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let policy = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    for site in [
        CallSite::of_service("catalog", "accounts"),
        CallSite::of_service("orders", "accounts"),
        CallSite::of_service("orders", "accounts"),
        CallSite::new("accounts"),
    ] {
        let _: Result<(), Problem> = retry(&policy, &plenty(), true, None, &site, |_| async {
            Err(Problem::unavailable("down"))
        })
        .await;
    }
    let series = |labels: &str| {
        counters
            .0
            .lock()
            .unwrap()
            .get(&format!("{RETRIES_TOTAL}{{{labels}}}"))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    };
    assert_eq!(series("service=catalog,downstream=accounts"), 1);
    assert_eq!(series("service=orders,downstream=accounts"), 2);
    assert_eq!(series("downstream=accounts"), 1);
}
