//! The NATS JetStream backend against the real server at 127.0.0.1:4222: the shared
//! conformance suite, then what is particular to JetStream (PubAck, `Nats-Msg-Id`
//! de-duplication, dead-lettering at receipt, foreign publishers). Every test uses its
//! own stream names and deletes its streams at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use messaging::conformance::Harness;
use messaging::nats::{self, START_HINT};
use messaging::{Broker, Envelope, QueueOptions, StartFrom, StreamOptions};
use serde_json::json;

const URL: &str = "nats://127.0.0.1:4222";
const WAIT: Duration = Duration::from_secs(10);

/// The next item of a consumer, within `WAIT`; a failed test otherwise.
async fn within<T>(next: impl std::future::Future<Output = messaging::Result<T>>) -> T {
    tokio::time::timeout(WAIT, next)
        .await
        .expect("an item within WAIT")
        .expect("the backend answered")
}

fn settings(handler_timeout: Duration) -> settings::MessagingSettings {
    settings::MessagingSettings {
        handler_timeout,
        ..Default::default()
    }
}

async fn broker_with(handler_timeout: Duration) -> Broker {
    anchor().await;
    nats::connect(URL, &settings(handler_timeout))
        .await
        .unwrap_or_else(|e| panic!("NATS JetStream is not reachable at {URL}: {e}. {START_HINT}"))
}

async fn broker() -> Broker {
    broker_with(Duration::from_secs(30)).await
}

async fn raw() -> async_nats::jetstream::Context {
    let client = async_nats::connect(URL)
        .await
        .unwrap_or_else(|e| panic!("NATS is not reachable at {URL}: {e}. {START_HINT}"));
    async_nats::jetstream::new(client)
}

/// A stream kept on the shared server for good. When a test deletes the last stream
/// there, nats-server removes the account's `streams` directory, and a stream another
/// test creates at that moment fails ("could not create storage directory", seen on
/// 2026-12-05): with this one always there, the directory never empties.
async fn anchor() {
    let config = async_nats::jetstream::stream::Config {
        name: "brigade_tests_anchor".to_owned(),
        subjects: vec!["brigade.tests.anchor".to_owned()],
        max_messages: 1,
        ..Default::default()
    };
    raw()
        .await
        .get_or_create_stream(config)
        .await
        .unwrap_or_else(|e| panic!("could not keep the anchor stream on {URL}: {e}"));
}

/// The stream names one test handed out: their JetStream streams (and `-dlq` streams)
/// are deleted when the test ends, whether it passed or not.
#[derive(Default)]
struct Streams(std::sync::Mutex<Vec<String>>);

impl Streams {
    fn unique(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.clone());
        name
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let names = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if names.is_empty() {
            return;
        }
        messaging::testing::on_own_runtime(async move { delete_streams(&names).await });
    }
}

async fn delete_streams(names: &[String]) {
    let Ok(client) = async_nats::connect(URL).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for name in names {
        let _ = js.delete_stream(name).await;
        let _ = js.delete_stream(format!("{name}-dlq")).await;
    }
}

async fn stored(stream: &str) -> u64 {
    let js = raw().await;
    let mut s = js.get_stream(stream).await.unwrap();
    s.info().await.unwrap().state.messages
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {WAIT:?}");
}

/// The conformance suite's way in: every `connect` is a new NATS connection; every
/// name it hands out is deleted when the test ends, passed or failed.
#[derive(Default)]
struct NatsHarness {
    streams: Streams,
}

#[async_trait]
impl Harness for NatsHarness {
    async fn connect(&self) -> Broker {
        // ack_wait 2 s: a delivery whose consumer went away comes back quickly.
        broker_with(Duration::from_secs(2)).await
    }

    fn unique(&self, base: &str) -> String {
        self.streams.unique(base)
    }

    async fn publish_raw(&self, queue: &str, body: &[u8], metadata: &[(&str, String)]) {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in metadata {
            headers.insert(*name, value.as_str());
        }
        raw()
            .await
            .publish_with_headers(queue.to_owned(), headers, body.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    fn redelivery_within(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn handler_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }

    async fn cleanup(&self, queues: &[String], streams: &[String]) {
        delete_streams(queues).await;
        delete_streams(streams).await;
    }
}

messaging::all_conformance_tests!(NatsHarness::default());

fn order(n: u32) -> Envelope {
    Envelope::new(
        "ProcessOrder",
        json!({"order_id": format!("ORD-{n}"), "total": 1999.98}),
    )
}

#[tokio::test]
async fn publish_waits_for_the_puback_and_a_consumer_acks() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    b.queues
        .declare(&q, &QueueOptions::default())
        .await
        .unwrap();
    let sent = order(1).with_key("ORD-1");
    b.queues.publish(&q, &sent).await.unwrap();
    assert_eq!(stored(&q).await, 1, "stored once publish returned");

    let mut consumer = b.queues.consume(&q, 10).await.unwrap();
    let delivery = within(consumer.next()).await;
    assert_eq!(delivery.attempt, 1);
    assert_eq!(delivery.message.as_ref().unwrap(), &sent);
    let stats = b.queues.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 1, 0));
    delivery.ack().await.unwrap();
    eventually("the ack removes the message", || async {
        stored(&q).await == 0
    })
    .await;
    let stats = b.queues.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0));
}

#[tokio::test]
async fn a_republished_id_is_stored_once() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    b.queues
        .declare(&q, &QueueOptions::default())
        .await
        .unwrap();
    let sent = order(2);
    b.queues.publish(&q, &sent).await.unwrap();
    b.queues.publish(&q, &sent).await.unwrap(); // duplicate PubAck: still Ok
    assert_eq!(stored(&q).await, 1);
    assert_eq!(b.queues.stats(&q).await.unwrap().ready, 1);
}

#[tokio::test]
async fn retry_after_waits_out_the_delay() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    b.queues
        .declare(&q, &QueueOptions::default())
        .await
        .unwrap();
    let sent = order(3);
    b.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = b.queues.consume(&q, 1).await.unwrap();
    let d = within(consumer.next()).await;
    let started = Instant::now();
    d.retry_after(Duration::from_millis(1500)).await.unwrap();
    let d = within(consumer.next()).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.attempt, 2);
    assert_eq!(d.message.as_ref().unwrap().id, sent.id);
    d.ack().await.unwrap();
}

#[tokio::test]
async fn reject_dead_letters_with_the_reason_and_redrive_brings_it_back() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    b.queues
        .declare(&q, &QueueOptions::default())
        .await
        .unwrap();
    let sent = order(4);
    b.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = b.queues.consume(&q, 5).await.unwrap();
    let d = within(consumer.next()).await;
    d.reject("no such product").await.unwrap();

    let dead = b.queues.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, sent.id.to_string());
    assert_eq!(dead[0].kind.as_deref(), Some("ProcessOrder"));
    assert_eq!(dead[0].reason, "no such product");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].body, sent.body());
    eventually("the original leaves the queue", || async {
        stored(&q).await == 0
    })
    .await;
    assert_eq!(b.queues.stats(&q).await.unwrap().dead, 1);
    // Listing does not consume.
    assert_eq!(b.queues.dead_letters(&q, 10).await.unwrap().len(), 1);

    // Redrive: same envelope id (within the de-dup window!), fresh delivery count.
    assert_eq!(b.queues.redrive(&q, 10).await.unwrap(), 1);
    assert!(b.queues.dead_letters(&q, 10).await.unwrap().is_empty());
    let d = within(consumer.next()).await;
    assert_eq!(d.attempt, 1);
    assert_eq!(d.message.as_ref().unwrap(), &sent);
    d.ack().await.unwrap();
    assert_eq!(b.queues.redrive(&q, 10).await.unwrap(), 0);
}

#[tokio::test]
async fn nacks_up_to_max_deliveries_then_the_dlq() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    let options = QueueOptions {
        max_deliveries: 3,
        default_kind: None,
    };
    b.queues.declare(&q, &options).await.unwrap();
    b.queues.publish(&q, &order(5)).await.unwrap();
    let mut consumer = b.queues.consume(&q, 1).await.unwrap();
    for attempt in 1..=3 {
        let d = within(consumer.next()).await;
        assert_eq!(d.attempt, attempt);
        assert_eq!(d.max_deliveries, 3);
        d.nack().await.unwrap();
    }
    let dead = b.queues.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("delivered 3 times"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].attempts, 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_message_whose_consumers_died_is_dead_lettered_at_receipt() {
    let streams = Streams::default();
    // ack_wait 1 s: an unsettled delivery comes back after a second.
    let b = broker_with(Duration::from_secs(1)).await;
    let q = streams.unique("q");
    let options = QueueOptions {
        max_deliveries: 2,
        default_kind: None,
    };
    b.queues.declare(&q, &options).await.unwrap();
    b.queues.publish(&q, &order(6)).await.unwrap();
    for attempt in 1..=2 {
        // A consumer takes it and dies without settling.
        let mut consumer = b.queues.consume(&q, 1).await.unwrap();
        let d = within(consumer.next()).await;
        assert_eq!(d.attempt, attempt);
        std::mem::drop(d);
        std::mem::drop(consumer);
    }
    // The third delivery is never handed out: it goes to the DLQ.
    let mut consumer = b.queues.consume(&q, 1).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(3), consumer.next())
            .await
            .is_err()
    );
    let dead = b.queues.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("without being settled"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].attempts, 2);
}

#[tokio::test]
async fn a_foreign_headerless_message_gets_the_queue_defaults() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    let options = QueueOptions {
        max_deliveries: 5,
        default_kind: Some("ProcessOrder".into()),
    };
    b.queues.declare(&q, &options).await.unwrap();
    // What `nats pub` or any other client sends: a plain body, no headers.
    raw()
        .await
        .publish(
            q.clone(),
            r#"{"order_id": "ORD-12345", "total": 1999.98}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut consumer = b.queues.consume(&q, 1).await.unwrap();
    let d = within(consumer.next()).await;
    let got = d.message.as_ref().unwrap().clone();
    assert_eq!(got.kind, "ProcessOrder");
    assert_eq!(got.payload["order_id"], "ORD-12345");
    d.nack().await.unwrap();
    // The id is stable across redeliveries (inboxes key on it).
    let d = within(consumer.next()).await;
    assert_eq!(d.message.as_ref().unwrap().id, got.id);
    d.ack().await.unwrap();
}

#[tokio::test]
async fn a_malformed_body_is_handed_out_as_an_error_and_rejected_to_the_dlq() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    b.queues
        .declare(
            &q,
            &QueueOptions {
                max_deliveries: 5,
                default_kind: Some("ProcessOrder".into()),
            },
        )
        .await
        .unwrap();
    raw()
        .await
        .publish(q.clone(), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut consumer = b.queues.consume(&q, 1).await.unwrap();
    let d = within(consumer.next()).await;
    let reason = d.message.as_ref().unwrap_err().reason.clone();
    assert!(reason.contains("not JSON"), "{reason}");
    d.reject(reason.clone()).await.unwrap();
    let dead = b.queues.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, reason);
    assert_eq!(dead[0].body, b"not json");
}

#[tokio::test]
async fn prefetch_bounds_what_one_consumer_holds() {
    let streams = Streams::default();
    let b = broker().await;
    let q = streams.unique("q");
    b.queues
        .declare(&q, &QueueOptions::default())
        .await
        .unwrap();
    for n in 0..5 {
        b.queues.publish(&q, &order(n)).await.unwrap();
    }
    let mut a = b.queues.consume(&q, 2).await.unwrap();
    let a1 = within(a.next()).await;
    let a2 = within(a.next()).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), a.next())
            .await
            .is_err()
    );
    let mut other = b.queues.consume(&q, 10).await.unwrap();
    let mut seen = 0;
    while seen < 3 {
        let d = within(other.next()).await;
        d.ack().await.unwrap();
        seen += 1;
    }
    a1.ack().await.unwrap();
    a2.ack().await.unwrap();
    eventually("all acked", || async { stored(&q).await == 0 }).await;
}

#[tokio::test]
async fn a_stream_group_reads_in_key_order_commits_and_replays() {
    let streams = Streams::default();
    let b = broker().await;
    let s = streams.unique("s");
    let options = StreamOptions {
        retention: Duration::from_secs(3600),
        partitions: 4,
    };
    b.streams.declare(&s, &options).await.unwrap();
    b.streams.declare(&s, &options).await.unwrap(); // idempotent
    let mut sent = Vec::new();
    for n in 0..20 {
        let e = Envelope::new("OrderCreated", json!({"n": n})).with_key(format!("ORD-{}", n % 5));
        b.streams.publish(&s, &e).await.unwrap();
        sent.push(e);
    }
    let mut member = b
        .streams
        .subscribe(&s, "billing", StartFrom::Earliest)
        .await
        .unwrap();
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    let mut positions = Vec::new();
    for _ in 0..20 {
        let e = within(member.next()).await;
        let m = e.message.as_ref().unwrap().clone();
        assert_eq!(
            e.partition,
            messaging::partition_of(m.key.as_deref().unwrap(), 4)
        );
        per_key
            .entry(m.key.clone().unwrap())
            .or_default()
            .push(m.payload["n"].as_i64().unwrap());
        positions.push(e.position);
        e.commit().await.unwrap();
    }
    for (key, ns) in &per_key {
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, &sorted, "order of {key}");
    }
    assert_eq!(b.streams.lag(&s, "billing").await.unwrap().lag, 0);

    // A second group sees everything too; lag counts what it has not committed.
    let _other = b
        .streams
        .subscribe(&s, "audit", StartFrom::Latest)
        .await
        .unwrap();
    assert_eq!(b.streams.lag(&s, "audit").await.unwrap().lag, 0);

    // Replay from a position.
    positions.sort_unstable();
    let from = positions[15];
    b.streams
        .reset(&s, "billing", StartFrom::Position(from))
        .await
        .unwrap();
    assert_eq!(b.streams.lag(&s, "billing").await.unwrap().lag, 5);
    let mut replayed = Vec::new();
    for _ in 0..5 {
        let e = within(member.next()).await;
        replayed.push(e.position);
        e.commit().await.unwrap();
    }
    replayed.sort_unstable();
    assert_eq!(replayed, positions[15..].to_vec());
}

#[tokio::test]
async fn a_stream_retry_holds_back_its_partition() {
    let streams = Streams::default();
    let b = broker().await;
    let s = streams.unique("s");
    b.streams
        .declare(
            &s,
            &StreamOptions {
                retention: Duration::from_secs(3600),
                partitions: 1,
            },
        )
        .await
        .unwrap();
    let first = Envelope::new("E", json!({"n": 1})).with_key("k");
    let second = Envelope::new("E", json!({"n": 2})).with_key("k");
    b.streams.publish(&s, &first).await.unwrap();
    b.streams.publish(&s, &second).await.unwrap();
    let mut member = b
        .streams
        .subscribe(&s, "g", StartFrom::Earliest)
        .await
        .unwrap();
    let e = within(member.next()).await;
    assert_eq!(e.message.as_ref().unwrap().id, first.id);
    e.retry_after(Duration::from_millis(300)).await.unwrap();
    let e = within(member.next()).await;
    assert_eq!(
        e.message.as_ref().unwrap().id,
        first.id,
        "the partition waited"
    );
    assert_eq!(e.attempt, 2);
    e.commit().await.unwrap();
    let e = within(member.next()).await;
    assert_eq!(e.message.as_ref().unwrap().id, second.id);
    e.commit().await.unwrap();
}

#[tokio::test]
async fn two_members_of_a_group_share_the_events_once() {
    let streams = Streams::default();
    let b = broker().await;
    let s = streams.unique("s");
    b.streams
        .declare(
            &s,
            &StreamOptions {
                retention: Duration::from_secs(3600),
                partitions: 4,
            },
        )
        .await
        .unwrap();
    let mut m1 = b
        .streams
        .subscribe(&s, "g", StartFrom::Earliest)
        .await
        .unwrap();
    let mut m2 = b
        .streams
        .subscribe(&s, "g", StartFrom::Earliest)
        .await
        .unwrap();
    for n in 0..40 {
        let e = Envelope::new("E", json!({"n": n})).with_key(format!("k{n}"));
        b.streams.publish(&s, &e).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 40 && Instant::now() < deadline {
        let e = tokio::select! {
            e = m1.next() => e.unwrap(),
            e = m2.next() => e.unwrap(),
        };
        assert!(seen.insert(e.position), "delivered twice: {}", e.position);
        e.commit().await.unwrap();
    }
    assert_eq!(seen.len(), 40);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_with_how_to_start_it() {
    let err = nats::connect("nats://127.0.0.1:1", &settings(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("nats-server"), "{err}");
}
