//! The Kafka backend (feature `kafka`) against a real Kafka-API broker named by
//! `BRIGADE_TEST_KAFKA_BOOTSTRAP` (e.g. `127.0.0.1:9092`); the suite fails, saying how to
//! get one, when it is unset.
//!
//! `.ci/kafka` runs this suite with no Docker, against tansu (an Apache-Kafka-API broker
//! from crates.io) installed once per machine and started for the run.
//!
//! Runs the stream properties of the shared conformance suite. The work-queue properties
//! are not run: Kafka is a log, and this backend's work queues refuse every call (checked
//! below without a broker, as is the list of what runs and what does not). Every test
//! uses its own topic and group names and deletes its topics at the end.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use async_trait::async_trait;
use messaging::conformance::{Feature, Harness};
use messaging::kafka::{self, KafkaQueues, NO_WORK_QUEUES};
use messaging::{Broker, Envelope, MessagingError, QueueOptions, WorkQueue};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const BOOTSTRAP_VAR: &str = "BRIGADE_TEST_KAFKA_BOOTSTRAP";

fn bootstrap() -> String {
    std::env::var(BOOTSTRAP_VAR).unwrap_or_else(|_| {
        panic!(
            "{BOOTSTRAP_VAR} is not set: the Kafka tests need a Kafka-API broker. Run \
             `.ci/kafka` (it installs tansu once per machine and starts it for the run), or \
             point {BOOTSTRAP_VAR} at your own Kafka or Redpanda, e.g. \
             `{BOOTSTRAP_VAR}=127.0.0.1:9092 cargo test -p messaging --features kafka --test kafka`"
        )
    })
}

fn settings() -> settings::MessagingSettings {
    settings::MessagingSettings {
        publish_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

async fn broker() -> Broker {
    let bootstrap = bootstrap();
    kafka::connect(&bootstrap, &settings())
        .await
        .unwrap_or_else(|e| panic!("Kafka is not reachable at {bootstrap} ({BOOTSTRAP_VAR}): {e}"))
}

fn client_config() -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap());
    config
}

/// The conformance suite's way in: every `connect` is a new set of Kafka clients.
struct KafkaHarness;

#[async_trait]
impl Harness for KafkaHarness {
    async fn connect(&self) -> Broker {
        broker().await
    }

    fn unique(&self, base: &str) -> String {
        format!("{base}_{}", uuid::Uuid::new_v4().simple())
    }

    /// A foreign record on topic `queue` (only the queue properties use it, and they do
    /// not run here).
    async fn publish_raw(&self, queue: &str, body: &[u8], metadata: &[(&str, String)]) {
        let producer: FutureProducer = client_config().create().unwrap();
        let mut headers = OwnedHeaders::new();
        for (name, value) in metadata {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_str()),
            });
        }
        producer
            .send(
                FutureRecord::<str, [u8]>::to(queue)
                    .payload(body)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    /// A member that went away leaves its group at once (close), but the next member
    /// waits for the rebalance (the broker's `group.initial.rebalance.delay.ms`, 3 s by
    /// default, plus the join).
    fn redelivery_within(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn unsupported(&self, feature: Feature) -> Option<&'static str> {
        match feature {
            Feature::StreamDeduplication => Some(
                "Kafka's idempotent producer only drops its own retries; publishing the same envelope id twice appends it twice (the consumer's inbox de-duplicates)",
            ),
            Feature::StreamAttempts => Some(
                "Kafka keeps no delivery count: `attempt` counts retries inside one member, an event re-read after a restart or rebalance says 1",
            ),
            Feature::QueueDeduplication | Feature::DelayedRetry => Some(NO_WORK_QUEUES),
            Feature::ReplayByTime => None,
        }
    }

    /// Deletes the test's topics — unless `BRIGADE_TEST_KAFKA_KEEP_TOPICS` is set, as
    /// `.ci/kafka` sets it for its tansu broker, which lives for one run in memory. tansu
    /// 0.6.0 answers a Metadata request for a topic deleted while a client still knows it
    /// with a topic whose name is null and whose error is NONE (Kafka answers
    /// UNKNOWN_TOPIC_OR_PARTITION with the name), and librdkafka 2.12.1 then crashes the
    /// process (`strcmp` on the null name in `rd_kafka_metadata_update_op`; seen under
    /// gdb, `mdi->metadata.topics[0].topic == 0x0`, err NO_ERROR). Keeping the topics,
    /// `stream_slow_members_keep_their_events` passes; deleting them, it crashes.
    async fn cleanup(&self, _queues: &[String], streams: &[String]) {
        if std::env::var_os("BRIGADE_TEST_KAFKA_KEEP_TOPICS").is_some() {
            return;
        }
        let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
        let names: Vec<&str> = streams.iter().map(String::as_str).collect();
        if !names.is_empty() {
            let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
        }
    }
}

// The stream properties. The queue properties (`queue_*` in `conformance::ALL`) are
// listed in NOT_RUN below with the reason.
messaging::conformance_tests!(KafkaHarness;
    stream_per_key_order,
    stream_groups_are_independent,
    stream_group_members_share_partitions,
    stream_replay,
    stream_deduplicates_republished_id,
    stream_persists_across_reconnect,
    stream_retry_after_holds_the_partition,
    stream_slow_members_keep_their_events,
);

/// Conformance properties this backend does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("queue_ack_deletes", NO_WORK_QUEUES),
    ("queue_prefetch_limits_unsettled", NO_WORK_QUEUES),
    ("queue_prefetched_messages_keep_their_lease", NO_WORK_QUEUES),
    (
        "queue_redelivers_unacked_when_consumer_dropped",
        NO_WORK_QUEUES,
    ),
    ("queue_nack_and_retry_after", NO_WORK_QUEUES),
    ("queue_dead_letters_after_max_deliveries", NO_WORK_QUEUES),
    ("queue_defer_does_not_count", NO_WORK_QUEUES),
    ("queue_redrive", NO_WORK_QUEUES),
    ("queue_deduplicates_republished_id", NO_WORK_QUEUES),
    ("queue_persists_across_reconnect", NO_WORK_QUEUES),
    ("queue_malformed_body_is_rejected_to_dlq", NO_WORK_QUEUES),
    // Its traffic includes a work queue; the stream half of the series is the same
    // decorator's, which the other backends' runs hold to the table.
    ("series_are_the_same_on_every_backend", NO_WORK_QUEUES),
];

/// Every property of the suite is either run above or written down as not run.
#[test]
fn every_property_is_run_or_written_down_as_not_run() {
    let here = include_str!("kafka.rs");
    for property in messaging::conformance::ALL {
        let run = here.contains(&format!("    {property},\n"));
        let not_run = NOT_RUN.iter().any(|(name, _)| name == property);
        assert!(
            run != not_run,
            "{property}: run {run}, listed as not run {not_run}"
        );
    }
}

/// The work-queue half refuses every call with the reason (no broker needed).
#[tokio::test]
async fn work_queues_are_refused_with_the_reason() {
    let queues = KafkaQueues;
    let refused = |result: Result<(), MessagingError>| match result {
        Err(MessagingError::Invalid { what, reason }) => {
            assert_eq!(what, "backend");
            assert!(reason.contains("Kafka is a log"), "{reason}");
            assert!(reason.contains("rabbitmq"), "{reason}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    };
    refused(queues.declare("q", &QueueOptions::default()).await);
    refused(
        queues
            .publish(
                "q",
                &Envelope::new("ProcessOrder", json!({"order_id": "ORD-1"})),
            )
            .await
            .map(|_| ()),
    );
    refused(queues.consume("q", 1).await.map(|_| ()));
    refused(queues.stats("q").await.map(|_| ()));
    refused(queues.dead_letters("q", 10).await.map(|_| ()));
    refused(queues.redrive("q", 10).await.map(|_| ()));
}

/// Nothing listening: `Unavailable` (transient), saying how to get a broker. Needs no
/// broker.
#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_with_how_to_get_one() {
    let settings = settings::MessagingSettings {
        publish_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = kafka::connect("127.0.0.1:1", &settings).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("redpanda"), "{err}");
}

/// A record from a producer that is not ours (no headers, a key, a timestamp) reads as
/// an envelope with the record's key and time, and a stable derived id.
#[tokio::test]
async fn a_foreign_record_gets_its_key_time_and_a_stable_id() {
    let b = broker().await;
    let s = KafkaHarness.unique("foreign");
    b.streams
        .declare(
            &s,
            &messaging::StreamOptions {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let producer: FutureProducer = client_config().create().unwrap();
    let mut headers = OwnedHeaders::new();
    headers = headers.insert(Header {
        key: messaging::envelope::headers::TYPE,
        value: Some("OrderCreated"),
    });
    producer
        .send(
            FutureRecord::to(&s)
                .key("ORD-12345")
                .payload(r#"{"order_id": "ORD-12345", "total": 1999.98}"#)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let group = KafkaHarness.unique("g");
    let mut consumer = b
        .streams
        .subscribe(&s, &group, messaging::StartFrom::Earliest)
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap();
    let got = e.message.as_ref().unwrap().clone();
    assert_eq!(got.kind, "OrderCreated");
    assert_eq!(got.key.as_deref(), Some("ORD-12345"));
    assert_eq!(got.payload["order_id"], "ORD-12345");
    e.retry_after(Duration::ZERO).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.message.as_ref().unwrap().id, got.id, "the id is stable");
    e.commit().await.unwrap();
    drop(consumer);
    KafkaHarness.cleanup(&[], &[s]).await;
}

/// `reset` refuses a group whose active members are not this broker's.
#[tokio::test]
async fn reset_refuses_a_group_active_elsewhere() {
    let ours = broker().await;
    let theirs = broker().await;
    let s = KafkaHarness.unique("reset");
    ours.streams
        .declare(&s, &messaging::StreamOptions::default())
        .await
        .unwrap();
    ours.streams
        .publish(&s, &Envelope::new("E", json!({"n": 1})).with_key("k"))
        .await
        .unwrap();
    let group = KafkaHarness.unique("g");
    let mut member = theirs
        .streams
        .subscribe(&s, &group, messaging::StartFrom::Earliest)
        .await
        .unwrap();
    // Joined once it reads.
    let e = tokio::time::timeout(Duration::from_secs(30), member.next())
        .await
        .unwrap()
        .unwrap();
    e.commit().await.unwrap();
    let err = ours
        .streams
        .reset(&s, &group, messaging::StartFrom::Earliest)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("inactive"), "{err}");
    drop(member);
    KafkaHarness.cleanup(&[], &[s]).await;
}
