//! The RabbitMQ backend against the real broker at 127.0.0.1:5672 (guest/guest). Start it
//! with `rabbitmq-server -detached`. Every test uses its own queue names and deletes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use messaging::{Broker, Envelope, MessagingError, QueueOptions};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn settings() -> settings::MessagingSettings {
    settings::MessagingSettings {
        backend: settings::MessagingBackend::Rabbitmq,
        url: Some(URL.to_owned()),
        ..settings::MessagingSettings::default()
    }
}

async fn broker() -> Broker {
    messaging::rabbitmq::connect(URL, &settings())
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ must run on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`): {e}")
        })
}

async fn raw() -> Connection {
    Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ must run on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`): {e}")
        })
}

/// A unique queue name, and its queues deleted when the test ends (even on panic).
struct TestQueue {
    name: String,
}

impl TestQueue {
    fn new(what: &str) -> Self {
        Self {
            name: format!("test-{what}-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A fresh runtime on another thread: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(conn) = Connection::connect(URL, ConnectionProperties::default()).await
                else {
                    return;
                };
                for q in [name.clone(), format!("{name}.dlq"), format!("{name}.retry")] {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "OK".into()).await;
            });
        })
        .join();
    }
}

async fn next(consumer: &mut Box<dyn messaging::QueueConsumer>) -> messaging::Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("a delivery")
}

async fn nothing_within(consumer: &mut Box<dyn messaging::QueueConsumer>, wait: Duration) {
    if let Ok(got) = tokio::time::timeout(wait, consumer.next()).await {
        panic!("expected no delivery, got {got:?}");
    }
}

/// Polls `stats` until `check` holds, or fails after 10 s.
async fn eventually_stats(
    broker: &Broker,
    queue: &str,
    check: impl Fn(&messaging::QueueStats) -> bool,
) -> messaging::QueueStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = broker.queues.stats(queue).await.unwrap();
        if check(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never matched: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn order(n: u32) -> Envelope {
    Envelope::new(
        "ProcessOrder",
        serde_json::json!({"order_id": format!("ORD-{n}"), "total": 1999.98}),
    )
}

#[tokio::test]
async fn publish_is_confirmed_and_the_envelope_survives_the_wire() {
    let broker = broker().await;
    let q = TestQueue::new("roundtrip");
    broker
        .queues
        .declare(&q.name, &QueueOptions::default())
        .await
        .unwrap();
    // Declaring again is idempotent.
    broker
        .queues
        .declare(&q.name, &QueueOptions::default())
        .await
        .unwrap();
    let mut sent = order(1).with_key("ORD-1");
    sent.correlation_id = Some("corr-1".to_owned());
    sent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
    broker.queues.publish(&q.name, &sent).await.unwrap();
    eventually_stats(&broker, &q.name, |s| s.ready == 1).await;

    let mut consumer = broker.queues.consume(&q.name, 4).await.unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.attempt, 1);
    assert_eq!(delivery.message.as_ref().unwrap(), &sent);
    assert_eq!(broker.queues.stats(&q.name).await.unwrap().in_flight, 1);
    delivery.ack().await.unwrap();
    let stats = eventually_stats(&broker, &q.name, |s| s.ready == 0 && s.in_flight == 0).await;
    assert_eq!(stats.dead, 0);
    nothing_within(&mut consumer, Duration::from_millis(300)).await;

    // What went on the wire: the payload alone, AMQP properties for the envelope.
    broker.queues.publish(&q.name, &sent).await.unwrap();
    drop(consumer);
    let conn = raw().await;
    let ch = conn.create_channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        if let Some(got) = ch
            .basic_get(q.name.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "the message given back by the dropped consumer never reached {} within 10 s",
            q.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let props = &got.delivery.properties;
    assert_eq!(got.delivery.data, sent.body());
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        sent.id.to_string()
    );
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "ProcessOrder");
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "corr-1");
    assert_eq!(
        props.timestamp().unwrap(),
        u64::try_from(sent.occurred_at.unix_timestamp()).unwrap()
    );
    let headers = props.headers().as_ref().unwrap();
    for name in [
        messaging::envelope::headers::ID,
        messaging::envelope::headers::TYPE,
        messaging::envelope::headers::KEY,
        messaging::envelope::headers::OCCURRED_AT,
        messaging::envelope::headers::SCHEMA_VERSION,
        messaging::envelope::headers::CORRELATION_ID,
        messaging::envelope::headers::TRACEPARENT,
    ] {
        assert!(headers.contains_key(name), "header {name} missing");
    }
}

#[tokio::test]
async fn publishing_to_a_queue_that_does_not_exist_is_not_found() {
    let broker = broker().await;
    let q = TestQueue::new("missing");
    let err = broker.queues.publish(&q.name, &order(1)).await.unwrap_err();
    assert!(matches!(err, MessagingError::NotFound(_)), "{err:?}");
    let err = broker.queues.stats(&q.name).await.unwrap_err();
    assert!(matches!(err, MessagingError::NotFound(_)), "{err:?}");
    // The publisher channel survives: the next publish to a real queue works.
    broker
        .queues
        .declare(&q.name, &QueueOptions::default())
        .await
        .unwrap();
    broker.queues.publish(&q.name, &order(2)).await.unwrap();
}

#[tokio::test]
async fn prefetch_limits_unsettled_deliveries_per_consumer() {
    let broker = broker().await;
    let q = TestQueue::new("prefetch");
    broker
        .queues
        .declare(&q.name, &QueueOptions::default())
        .await
        .unwrap();
    for n in 0..5 {
        broker.queues.publish(&q.name, &order(n)).await.unwrap();
    }
    let mut consumer = broker.queues.consume(&q.name, 2).await.unwrap();
    let a = next(&mut consumer).await;
    let b = next(&mut consumer).await;
    // Two unsettled: the broker sends no third until one is settled.
    nothing_within(&mut consumer, Duration::from_millis(300)).await;
    a.ack().await.unwrap();
    let c = next(&mut consumer).await;
    b.ack().await.unwrap();
    c.ack().await.unwrap();
    for _ in 0..2 {
        next(&mut consumer).await.ack().await.unwrap();
    }
    eventually_stats(&broker, &q.name, |s| s.ready == 0 && s.in_flight == 0).await;
}

#[tokio::test]
async fn nack_redelivers_with_the_attempt_counted() {
    let broker = broker().await;
    let q = TestQueue::new("nack");
    broker
        .queues
        .declare(&q.name, &QueueOptions::default())
        .await
        .unwrap();
    let sent = order(1);
    broker.queues.publish(&q.name, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.attempt, 1);
    first.nack().await.unwrap();
    let second = next(&mut consumer).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.message.as_ref().unwrap(), &sent);
    second.ack().await.unwrap();
    eventually_stats(&broker, &q.name, |s| {
        s.ready == 0 && s.in_flight == 0 && s.dead == 0
    })
    .await;
}

#[tokio::test]
async fn retry_after_waits_out_the_delay() {
    let broker = broker().await;
    let q = TestQueue::new("retry");
    broker
        .queues
        .declare(&q.name, &QueueOptions::default())
        .await
        .unwrap();
    let sent = order(1);
    broker.queues.publish(&q.name, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    let first = next(&mut consumer).await;
    let delay = Duration::from_millis(700);
    let retried_at = Instant::now();
    first.retry_after(delay).await.unwrap();
    // While it waits it still counts as ready (in the delay queue).
    let stats = broker.queues.stats(&q.name).await.unwrap();
    assert_eq!(stats.ready, 1, "{stats:?}");
    let second = next(&mut consumer).await;
    assert!(
        retried_at.elapsed() >= delay,
        "redelivered after {:?}, before the {delay:?} delay",
        retried_at.elapsed()
    );
    assert_eq!(second.attempt, 2);
    assert_eq!(second.message.as_ref().unwrap(), &sent);
    second.ack().await.unwrap();
    eventually_stats(&broker, &q.name, |s| {
        s.ready == 0 && s.in_flight == 0 && s.dead == 0
    })
    .await;
}

#[tokio::test]
async fn dead_lettered_after_max_deliveries_with_the_reason_then_listed_and_redriven() {
    let broker = broker().await;
    let q = TestQueue::new("dlq");
    let options = QueueOptions {
        max_deliveries: 3,
        default_kind: None,
    };
    broker.queues.declare(&q.name, &options).await.unwrap();
    let sent = order(7);
    broker.queues.publish(&q.name, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    for attempt in 1..=2 {
        let d = next(&mut consumer).await;
        assert_eq!(d.attempt, attempt);
        if attempt == 1 {
            d.nack().await.unwrap();
        } else {
            d.retry_after(Duration::from_millis(10)).await.unwrap();
        }
    }
    let last = next(&mut consumer).await;
    assert_eq!(last.attempt, 3);
    last.nack().await.unwrap(); // the last allowed attempt: dead-letters
    nothing_within(&mut consumer, Duration::from_millis(300)).await;
    eventually_stats(&broker, &q.name, |s| {
        s.dead == 1 && s.ready == 0 && s.in_flight == 0
    })
    .await;

    // Listing does not consume them: twice, same answer.
    for _ in 0..2 {
        let dead = broker.queues.dead_letters(&q.name, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, sent.id.to_string());
        assert_eq!(dead[0].kind.as_deref(), Some("ProcessOrder"));
        assert_eq!(dead[0].attempts, 3);
        assert!(
            dead[0].reason.contains("delivered 3 times"),
            "{}",
            dead[0].reason
        );
        assert_eq!(dead[0].body, sent.body());
        assert!(dead[0].dead_at.elapsed().unwrap() < Duration::from_secs(60));
    }
    assert_eq!(broker.queues.stats(&q.name).await.unwrap().dead, 1);

    assert_eq!(broker.queues.redrive(&q.name, 10).await.unwrap(), 1);
    let again = next(&mut consumer).await;
    assert_eq!(again.attempt, 1, "a redriven message starts a fresh count");
    assert_eq!(again.message.as_ref().unwrap(), &sent);
    again.ack().await.unwrap();
    eventually_stats(&broker, &q.name, |s| {
        s.dead == 0 && s.ready == 0 && s.in_flight == 0
    })
    .await;
    assert!(
        broker
            .queues
            .dead_letters(&q.name, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_message_whose_consumers_keep_dying_is_dead_lettered_and_never_handed_out_again() {
    let broker = broker().await;
    let q = TestQueue::new("dying");
    let options = QueueOptions {
        max_deliveries: 2,
        default_kind: None,
    };
    broker.queues.declare(&q.name, &options).await.unwrap();
    let sent = order(3);
    broker.queues.publish(&q.name, &sent).await.unwrap();
    for attempt in 1..=2 {
        // A consumer on its own connection takes the message and dies without settling.
        let other = broker_on_its_own().await;
        let mut consumer = other.queues.consume(&q.name, 1).await.unwrap();
        let d = next(&mut consumer).await;
        assert_eq!(d.attempt, attempt);
        std::mem::forget(d); // no nack from Drop: the process "dies"
        drop(consumer);
        drop(other);
    }
    let mut consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    nothing_within(&mut consumer, Duration::from_millis(500)).await;
    eventually_stats(&broker, &q.name, |s| s.dead == 1 && s.ready == 0).await;
    let dead = broker.queues.dead_letters(&q.name, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, sent.id.to_string());
    assert!(
        dead[0].reason.contains("without being settled"),
        "{}",
        dead[0].reason
    );
}

async fn broker_on_its_own() -> Broker {
    broker().await
}

#[tokio::test]
async fn a_foreign_message_without_properties_is_read_with_the_default_kind() {
    let broker = broker().await;
    let q = TestQueue::new("foreign");
    let options = QueueOptions {
        max_deliveries: 5,
        default_kind: Some("ProcessOrder".to_owned()),
    };
    broker.queues.declare(&q.name, &options).await.unwrap();
    let conn = raw().await;
    let ch = conn.create_channel().await.unwrap();
    let body = br#"{"order_id": "ORD-12345", "total": 1999.98}"#;
    ch.basic_publish(
        "".into(),
        q.name.as_str().into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    let mut consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    let d = next(&mut consumer).await;
    let message = d.message.as_ref().unwrap();
    assert_eq!(message.kind, "ProcessOrder");
    assert_eq!(message.payload["order_id"], "ORD-12345");
    assert_eq!(message.payload["total"], 1999.98);
    d.ack().await.unwrap();
    conn.close(200, "OK".into()).await.unwrap();
}

#[tokio::test]
async fn a_malformed_body_is_dead_lettered_with_its_reason_while_the_consumer_keeps_serving() {
    let broker = broker().await;
    let q = TestQueue::new("malformed");
    let options = QueueOptions {
        max_deliveries: 5,
        default_kind: Some("ProcessOrder".to_owned()),
    };
    broker.queues.declare(&q.name, &options).await.unwrap();
    let conn = raw().await;
    let ch = conn.create_channel().await.unwrap();
    for body in [&b"{not json"[..], br#"{"order_id": "ORD-1"}"#] {
        ch.basic_publish(
            "".into(),
            q.name.as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    let mut consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    let bad = next(&mut consumer).await;
    let reason = bad.message.as_ref().unwrap_err().reason.clone();
    assert!(reason.contains("not JSON"), "{reason}");
    bad.reject(reason.clone()).await.unwrap();
    let good = next(&mut consumer).await;
    assert_eq!(good.message.as_ref().unwrap().payload["order_id"], "ORD-1");
    good.ack().await.unwrap();
    let dead = broker.queues.dead_letters(&q.name, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, reason);
    assert_eq!(dead[0].body, b"{not json");
    assert_eq!(dead[0].attempts, 1);
    conn.close(200, "OK".into()).await.unwrap();
}

#[tokio::test]
async fn pika_interop_the_seeds_message_is_handled_and_bad_ones_dead_lettered() {
    let broker = broker().await;
    let q = TestQueue::new("pika");
    let options = QueueOptions {
        max_deliveries: 5,
        default_kind: Some("ProcessOrder".to_owned()),
    };
    broker.queues.declare(&q.name, &options).await.unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contract-tests/pika/run.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&q.name)
        .arg(URL)
        .output()
        .await
        .expect("run contract-tests/pika/run.sh (needs python3 with venv and pip)");
    assert!(
        output.status.success(),
        "pika script failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Brigade's consumer: the worker loop with a handler that knows one message type and
    // its shape, as the orders worker will.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct ProcessOrder {
        order_id: String,
        total: f64,
    }
    let (handled_tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |envelope: Envelope| {
        let handled_tx = handled_tx.clone();
        async move {
            if envelope.kind != "ProcessOrder" {
                return Err(messaging::worker::HandleError::Permanent(format!(
                    "unknown message type {:?}",
                    envelope.kind
                )));
            }
            let order: ProcessOrder =
                serde_json::from_value(envelope.payload.clone()).map_err(|e| {
                    messaging::worker::HandleError::Permanent(format!("invalid ProcessOrder: {e}"))
                })?;
            handled_tx.send((order.order_id, order.total)).unwrap();
            Ok(())
        }
    };
    let consumer = broker.queues.consume(&q.name, 1).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(messaging::worker::run(
        "pika",
        consumer,
        messaging::worker::WorkerOptions::default(),
        handler,
        stop.clone(),
    ));
    let first = tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .expect("the seed's message handled within 10 s")
        .unwrap();
    assert_eq!(first, ("ORD-12345".to_owned(), 1999.98));
    // The three bad ones are dead-lettered with their reasons...
    eventually_stats(&broker, &q.name, |s| s.ready == 0 && s.dead == 3).await;
    let dead = broker.queues.dead_letters(&q.name, 10).await.unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown message type \"RefundOrder\"")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("invalid ProcessOrder") && r.contains("total")),
        "{reasons:?}"
    );
    assert!(dead.iter().any(|d| d.body == b"{not json"));
    // ...and the consumer keeps serving.
    broker.queues.publish(&q.name, &order(99)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .expect("a later message handled within 10 s")
        .unwrap();
    assert_eq!(next.0, "ORD-99");
    eventually_stats(&broker, &q.name, |s| {
        s.ready == 0 && s.in_flight == 0 && s.dead == 3
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
}

/// The shared conformance suite (`messaging::conformance`) against RabbitMQ.
mod conformance {
    use async_trait::async_trait;
    use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    use messaging::Broker;
    use messaging::conformance::{Feature, Harness};

    use super::{URL, broker, raw};

    /// Every name it hands out is deleted when the test ends, passed or failed (as a
    /// queue with its `.dlq` and `.retry`, and as a stream: whichever it was).
    #[derive(Default)]
    struct RabbitHarness {
        names: std::sync::Mutex<Vec<String>>,
    }

    impl Drop for RabbitHarness {
        fn drop(&mut self) {
            let names = std::mem::take(
                &mut *self
                    .names
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if names.is_empty() {
                return;
            }
            messaging::testing::on_own_runtime(async move { delete(&names, &names).await });
        }
    }

    /// Deletes `queues` (with their `.dlq` and `.retry`) and `streams`, ignoring what
    /// is not there.
    async fn delete(queues: &[String], streams: &[String]) {
        if let Ok(conn) = Connection::connect(URL, ConnectionProperties::default()).await {
            for q in queues {
                for name in [q.clone(), format!("{q}.dlq"), format!("{q}.retry")] {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
            }
            let _ = conn.close(200, "OK".into()).await;
        }
        for s in streams {
            let _ = messaging::rabbitmq::stream::delete_stream(URL, s).await;
        }
    }

    #[async_trait]
    impl Harness for RabbitHarness {
        async fn connect(&self) -> Broker {
            broker().await
        }

        fn unique(&self, base: &str) -> String {
            let name = format!("conformance-{base}-{}", uuid::Uuid::new_v4().simple());
            self.names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(name.clone());
            name
        }

        async fn publish_raw(&self, queue: &str, body: &[u8], metadata: &[(&str, String)]) {
            let conn = raw().await;
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .unwrap();
            let mut headers = FieldTable::default();
            for (name, value) in metadata {
                headers.insert((*name).into(), AMQPValue::LongString(value.as_str().into()));
            }
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_headers(headers),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
            conn.close(200, "OK".into()).await.unwrap();
        }

        fn redelivery_within(&self) -> std::time::Duration {
            std::time::Duration::from_secs(10)
        }

        fn clock_granularity(&self) -> std::time::Duration {
            // `x-stream-offset` timestamps are whole seconds.
            std::time::Duration::from_millis(1100)
        }

        fn unsupported(&self, feature: Feature) -> Option<&'static str> {
            match feature {
                Feature::QueueDeduplication | Feature::StreamDeduplication => Some(
                    "RabbitMQ has no message de-duplication; consumers de-duplicate through \
                     the inbox (keyed on the envelope id)",
                ),
                Feature::StreamAttempts => Some(
                    "a stream member counts attempts in memory: a new member starts again at 1",
                ),
                _ => None,
            }
        }

        async fn cleanup(&self, queues: &[String], streams: &[String]) {
            delete(queues, streams).await;
        }
    }

    messaging::all_conformance_tests!(RabbitHarness::default());
}
