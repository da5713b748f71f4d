//! The bulkhead: a downstream with `max_concurrency` calls in flight refuses the next one
//! at once — Unavailable with a retry hint, the call never made, the breaker untouched —
//! and admits calls again as soon as a slot frees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use problem::{Kind, Problem};
use resilience::breaker::State;
use resilience::downstream::{Downstream, Policy};
use resilience::retry::RetryPolicy;
use tokio::sync::{Notify, oneshot};

// A current-thread runtime: the test's own recorder sees the rejections it causes.
#[tokio::test]
async fn a_full_bulkhead_refuses_at_once_and_admits_again_when_a_slot_frees() {
    let recorder = telemetry::metrics::isolated_recorder();
    let series = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let policy = Policy {
        max_concurrency: 2,
        // One attempt: this is about the bulkhead, not the retries around it.
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..Policy::default()
    };
    let downstream = Downstream::of_service("orders", "inventory", policy);

    // Fill both slots with calls that wait until released.
    let release = Arc::new(Notify::new());
    let mut held = Vec::new();
    for n in 0..2 {
        let (entered_tx, entered) = oneshot::channel();
        let entered_tx = std::sync::Mutex::new(Some(entered_tx));
        let (d, release) = (downstream.clone(), release.clone());
        held.push(tokio::spawn(async move {
            d.call(true, |_| {
                let entered = entered_tx.lock().unwrap().take();
                let release = release.clone();
                async move {
                    if let Some(entered) = entered {
                        let _ = entered.send(());
                    }
                    release.notified().await;
                    Ok::<_, Problem>(n)
                }
            })
            .await
        }));
        entered.await.unwrap();
    }

    // Full: refused at once, the call never made, with a retry hint.
    for _ in 0..10 {
        let made = Arc::new(AtomicBool::new(false));
        let flag = made.clone();
        let refused = tokio::time::timeout(
            Duration::from_millis(500),
            downstream.call(true, |_| {
                let flag = flag.clone();
                async move {
                    flag.store(true, Ordering::SeqCst);
                    Ok::<_, Problem>(99)
                }
            }),
        )
        .await
        .expect("a full bulkhead answers at once")
        .unwrap_err();
        assert_eq!(refused.kind(), Kind::Unavailable, "{refused:?}");
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
        assert!(
            !made.load(Ordering::SeqCst),
            "the refused call was not made"
        );
    }
    // Refusals are not the downstream's failures: its breaker stays closed.
    assert_eq!(downstream.breaker().state(), State::Closed);
    let page = series.render();
    assert!(
        page.contains(
            r#"brigade_bulkhead_rejections_total{service="orders",downstream="inventory"} 10"#
        ),
        "{page}"
    );

    // A slot frees: calls are admitted again.
    release.notify_one();
    let finished = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(done) = held.iter().position(|h| h.is_finished()) {
                return held.swap_remove(done).await.unwrap();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a held call finished once released");
    assert!(matches!(finished, Ok(0 | 1)), "{finished:?}");
    let admitted = downstream
        .call(true, |_| async { Ok::<_, Problem>(7) })
        .await
        .unwrap();
    assert_eq!(admitted, 7);
    release.notify_waiters();
    for h in held {
        h.await.unwrap().unwrap();
    }
}
