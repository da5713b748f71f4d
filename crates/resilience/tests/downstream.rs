//! A downstream's failures and its breaker: a failure after which the breaker refuses
//! calls carries the breaker's `Retry-After`, so the retry loop stops and the caller (a
//! REST client, a queue worker) knows the downstream is down and for how long.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use problem::{Kind, Problem};
use resilience::breaker::{BreakerConfig, SlidingWindow, State};
use resilience::downstream::{Downstream, Policy};
use resilience::retry::RetryPolicy;

/// A failed call after which the breaker refuses calls says how long for, as a refused
/// call does: the failure that opens it and a probe's failure that opens it again carry
/// `Retry-After` (the breaker's wait, or what is left of it); a client error carries
/// none. The retry loop stops there instead of meeting the refusal.
#[tokio::test(start_paused = true)]
async fn a_failure_that_opens_the_breaker_says_when_to_come_back() {
    const WAIT: Duration = Duration::from_secs(5);
    // The call's budget (1 s) is shorter than the wait: no retry can wait it out.
    let policy = Policy {
        timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
        breaker: BreakerConfig {
            window: SlidingWindow::Count(10),
            minimum_calls: 3,
            failure_rate_threshold: 50.0,
            wait_in_open: WAIT,
            permitted_calls_in_half_open: 1,
            ..BreakerConfig::default()
        },
        ..Policy::default()
    };
    let downstream = Downstream::of_service("orders", "catalog", policy);
    let made = Arc::new(AtomicU32::new(0));
    let call = |kind: Kind| {
        let (d, made) = (downstream.clone(), made.clone());
        async move {
            d.call(true, |_| {
                made.fetch_add(1, Ordering::SeqCst);
                async move { Err::<(), _>(Problem::new(kind)) }
            })
            .await
            .unwrap_err()
        }
    };

    // Client errors: the downstream is healthy; no hint, and they count as successes.
    assert_eq!(call(Kind::NotFound).await.retry_after(), None);
    assert_eq!(
        made.swap(0, Ordering::SeqCst),
        1,
        "a client error is not retried"
    );
    // The first attempt fails with the breaker still closed (2 calls, not yet judged);
    // the second opens it (2 of 3 failed), and no third attempt is made.
    let opened = call(Kind::Unavailable).await;
    assert_eq!(made.swap(0, Ordering::SeqCst), 2, "stopped once it opened");
    assert_eq!(downstream.breaker().state(), State::Open);
    assert_eq!(opened.kind(), Kind::Unavailable);
    assert_eq!(opened.retry_after(), Some(WAIT), "{opened:?}");

    // Refused while open, with what is left of the wait.
    tokio::time::advance(Duration::from_secs(2)).await;
    let refused = call(Kind::Unavailable).await;
    assert_eq!(made.swap(0, Ordering::SeqCst), 0);
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(3)));

    // The probe fails: open again, for the whole wait; no retry meets the refusal.
    tokio::time::advance(Duration::from_secs(3)).await;
    let probed = call(Kind::Timeout).await;
    assert_eq!(made.swap(0, Ordering::SeqCst), 1, "one probe, not retried");
    assert_eq!(probed.kind(), Kind::Timeout);
    assert_eq!(probed.retry_after(), Some(WAIT));
}

/// Timeouts of calls bounded by the caller's own (short) deadline say nothing about the
/// downstream: a client sending tiny deadlines cannot open the breaker every other
/// client shares. The same slowness under the policy's own timeout does open it.
#[tokio::test(start_paused = true)]
async fn timeouts_under_the_callers_short_deadline_do_not_open_the_breaker() {
    let policy = Policy {
        timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        breaker: BreakerConfig {
            window: SlidingWindow::Count(10),
            minimum_calls: 3,
            failure_rate_threshold: 50.0,
            ..BreakerConfig::default()
        },
        ..Policy::default()
    };
    let downstream = Downstream::of_service("gateway", "catalog", policy);
    let slow = || {
        downstream.call(true, |_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<(), Problem>(())
        })
    };
    for _ in 0..10 {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let failed = telemetry::deadline::scope(deadline, slow())
            .await
            .unwrap_err();
        assert_eq!(failed.kind(), Kind::Timeout);
    }
    assert_eq!(downstream.breaker().state(), State::Closed);
    // Nor when the downstream itself answers that it ran out of that deadline (a 504,
    // DEADLINE_EXCEEDED) before our own timer fired.
    for _ in 0..10 {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let answered = downstream.call(true, |_| async {
            Err::<(), Problem>(Problem::new(Kind::Timeout).with_detail("no time left"))
        });
        let failed = telemetry::deadline::scope(deadline, answered)
            .await
            .unwrap_err();
        assert_eq!(failed.kind(), Kind::Timeout);
    }
    assert_eq!(downstream.breaker().state(), State::Closed);

    // Without the caller's deadline, a downstream slower than the policy's timeout is
    // a failure, and enough of them open the breaker.
    let too_slow = || {
        downstream.call(true, |_| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<(), Problem>(())
        })
    };
    for _ in 0..3 {
        assert_eq!(too_slow().await.unwrap_err().kind(), Kind::Timeout);
    }
    assert_eq!(downstream.breaker().state(), State::Open);
}
