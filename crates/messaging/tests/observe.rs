//! What `/metrics` shows of the messaging layer (issue 6, item 8): queue depth and a
//! group's lag sampled from the backend, and deliveries, redeliveries and dead letters of
//! the worker loop counted by the service's broker (`series`); here on the embedded
//! backend, through the same Prometheus recorder the services render. (That every backend
//! shows the same series is the conformance property `series_are_the_same_on_every_backend`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use messaging::observe::{self, Watch};
use messaging::worker::{self, HandleError, WorkerOptions};
use messaging::{Envelope, QueueOptions, StartFrom, StreamOptions, series};

fn metric(rendered: &str, prefix: &str) -> Option<f64> {
    rendered
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn depth_lag_and_worker_counts_reach_metrics() {
    assert!(
        telemetry::metrics::handle().is_some(),
        "the recorder is installed"
    );
    let dir = tempfile::tempdir().unwrap();
    let settings = settings::MessagingSettings::default();
    let broker = messaging::embedded::open(&dir.path().join("messaging.db"), &settings)
        .await
        .unwrap()
        .for_service("observe");
    let queue: &'static str = "observe_q";
    let stream: &'static str = "observe-s";
    broker
        .queues
        .declare(
            queue,
            &QueueOptions {
                max_deliveries: 2,
                default_kind: None,
            },
        )
        .await
        .unwrap();
    broker
        .streams
        .declare(stream, &StreamOptions::default())
        .await
        .unwrap();
    for n in 0..3 {
        let e = Envelope::new("Job", serde_json::json!({ "n": n }));
        broker.queues.publish(queue, &e).await.unwrap();
    }
    for n in 0..5 {
        let e = Envelope::new("Happened", serde_json::json!({ "n": n })).with_key("k");
        broker.streams.publish(stream, &e).await.unwrap();
    }
    let mut group = broker
        .streams
        .subscribe(stream, "g", StartFrom::Earliest)
        .await
        .unwrap();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(10), group.next())
            .await
            .unwrap()
            .unwrap();
        event.commit().await.unwrap();
    }

    let watch = Watch {
        service: "observe",
        queues: vec![queue],
        groups: vec![(stream, "g")],
    };
    observe::sample(&broker, &watch).await;
    let rendered = telemetry::metrics::render();
    let depth = r#"brigade_messaging_queue_depth{service="observe",backend="embedded",queue="observe_q",state="ready"}"#;
    assert_eq!(metric(&rendered, depth), Some(3.0), "{rendered}");
    let lag = r#"brigade_messaging_consumer_lag{service="observe",backend="embedded",stream="observe-s",group="g"}"#;
    assert_eq!(metric(&rendered, lag), Some(3.0), "{rendered}");

    // The worker: job 0 succeeds, job 1 fails for good, job 2 fails transiently until
    // max_deliveries (2) dead-letters it.
    let consumer = broker.queues.consume(queue, 1).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let options = WorkerOptions {
        retry_base: Duration::from_millis(1),
        retry_cap: Duration::from_millis(5),
        ..WorkerOptions::default()
    };
    let run = tokio::spawn(worker::run(
        queue,
        consumer,
        options,
        |envelope: Envelope| async move {
            match envelope.payload["n"].as_u64() {
                Some(0) => Ok(()),
                Some(1) => Err(HandleError::Permanent("job 1 is invalid".into())),
                _ => Err(HandleError::Transient("a dependency is down".into())),
            }
        },
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = broker.queues.stats(queue).await.unwrap();
        if stats.ready == 0 && stats.in_flight == 0 && stats.dead == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    let dead = broker.queues.dead_letters(queue, 10).await.unwrap();
    assert!(
        dead.iter().any(|d| d.reason == "job 1 is invalid"),
        "{dead:?}"
    );
    assert!(dead.iter().any(|d| d.attempts == 2), "{dead:?}");

    let rendered = telemetry::metrics::render();
    let count = |name: &str| {
        metric(
            &rendered,
            &format!(r#"{name}{{service="observe",backend="embedded",queue="observe_q"}}"#),
        )
    };
    assert_eq!(count(series::DELIVERED), Some(4.0), "{rendered}");
    assert_eq!(count(series::REDELIVERED), Some(1.0), "{rendered}");
    assert_eq!(count(series::DEAD_LETTERED), Some(2.0), "{rendered}");
}

/// A handler slower than `handler_timeout` is abandoned and its message retried; the
/// worker keeps serving, and the message is not claimed by anyone else meanwhile (the
/// backend's lease outlasts the handler's timeout).
#[tokio::test]
async fn a_slow_handler_is_abandoned_and_its_message_retried() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings::MessagingSettings {
        handler_timeout: Duration::from_millis(300),
        ..settings::MessagingSettings::default()
    };
    let broker = messaging::embedded::open(&dir.path().join("messaging.db"), &settings)
        .await
        .unwrap();
    broker
        .queues
        .declare("slow_q", &QueueOptions::default())
        .await
        .unwrap();
    let job = Envelope::new("Job", serde_json::json!({ "n": 1 }));
    broker.queues.publish("slow_q", &job).await.unwrap();

    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let options = WorkerOptions {
        retry_base: Duration::from_millis(1),
        retry_cap: Duration::from_millis(5),
        ..WorkerOptions::from_settings(&settings)
    };
    assert_eq!(options.handler_timeout, Duration::from_millis(300));
    let stop = tokio_util::sync::CancellationToken::new();
    let seen = attempts.clone();
    let run = tokio::spawn(worker::run(
        "slow_q",
        broker.queues.consume("slow_q", 1).await.unwrap(),
        options,
        move |envelope: Envelope| {
            let attempt = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let done_tx = done_tx.clone();
            async move {
                if attempt == 1 {
                    // Far slower than the 300 ms timeout: abandoned.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                done_tx.send((attempt, envelope.id)).unwrap();
                Ok(())
            }
        },
        stop.clone(),
    ));
    let (attempt, id) = tokio::time::timeout(Duration::from_secs(10), done.recv())
        .await
        .expect("handled on a later attempt within 10 s")
        .unwrap();
    assert_eq!(
        (attempt, id),
        (2, job.id),
        "the abandoned first attempt never finished"
    );
    let stats = broker.queues.stats("slow_q").await.unwrap();
    assert_eq!((stats.ready, stats.dead), (0, 0), "{stats:?}");
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
}
