//! The Kafka backend (`backend: "kafka"`, cargo feature `kafka`), over `rdkafka` (the
//! bundled librdkafka, built with `make` and a C compiler). Works with Apache Kafka and
//! with Redpanda.
//!
//! **Event streams only.** Kafka is a log, not a queue: it has no per-message ack, no
//! redelivery of one message while later ones go ahead, no delivery count and no
//! dead-letter queue. Rather than fake those, every [`crate::WorkQueue`] method of this
//! backend fails with [`MessagingError::Invalid`] (`what: "backend"`) saying so: run work
//! queues on `embedded`, `rabbitmq` or `nats`.
//!
//! Layout on the cluster:
//!
//! - **Stream `s`** is topic `s`, created by `declare` with the admin client:
//!   `partitions` partitions, the broker's default replication factor, `retention.ms` =
//!   the retention. Declaring an existing topic is a no-op (its partition count is
//!   kept: **never add partitions to a stream**, keys would move and positions change
//!   meaning).
//! - **Publish**: an idempotent producer (`acks=all`, `enable.idempotence=true`); the
//!   record key is the envelope key, the partition is chosen explicitly with
//!   [`crate::partition_of`] (key, or the envelope id when there is none), so a key lands
//!   in the same partition as on every other backend (Kafka's own murmur2 partitioner is
//!   not used). The envelope travels as record headers ([`crate::envelope::headers`]), the
//!   body is the payload JSON. `publish` returns after the delivery report (all in-sync
//!   replicas have it). The idempotent producer only drops its own retries: publishing
//!   the same envelope id twice appends it twice (inboxes de-duplicate).
//! - **Groups** are Kafka consumer groups (`group.id` = the group name, no auto-commit).
//!   A new group (no committed offset yet) gets its start committed explicitly at
//!   `subscribe` (earliest / latest watermark, a position, or `offsets_for_times`), so
//!   "latest" means "from the subscribe call on", not "from whenever the rebalance
//!   finished". `auto.offset.reset=earliest` only covers offsets that retention deleted.
//!   A member hands out one event per partition at a time: the partition is paused while
//!   an event is out. `commit` commits offset+1 synchronously (so `lag` right after is
//!   exact), then resumes the partition; `retry_after` seeks the partition back to the
//!   event after the delay and resumes it, so the partition keeps its order. An event
//!   dropped unsettled is handed out again at once (as `retry_after(0)`). After a
//!   rebalance, events handed out before it can no longer commit (their `commit` is a
//!   no-op logged at debug): the partition's new owner reads them again from the
//!   committed offset (at least once).
//! - **Positions.** Kafka offsets are per partition; the trait's positions are one
//!   number per stream. An event's position is `offset * partitions + partition`: unique
//!   in the stream, growing within a partition, and roughly in publish order across
//!   partitions. `StartFrom::Position(n)` starts each partition `p` at the first offset
//!   `o` with `o * partitions + p >= n`, i.e. exactly at the events whose position is
//!   `>= n`. ([`position_of`] and [`offset_of`] convert.)
//! - **Replay** (`reset`): Kafka lets a client outside a group commit offsets only while
//!   the group has no active member. `reset` therefore works when the group is inactive
//!   (no consumer running: the offsets are committed directly), or when every active
//!   member is a consumer of this same `Broker` (the offsets are committed by one of them
//!   and each member seeks its partitions before its next event). With any other member
//!   active it fails with `Invalid { what: "reset", .. }`: stop the group's consumers
//!   first (as `kafka-consumer-groups --reset-offsets` requires).
//! - **Lag** = high watermark − committed offset, summed over the partitions (a partition
//!   with no committed offset counts from its low watermark).
//! - **Attempts**: Kafka keeps no delivery count. `attempt` counts the `retry_after`s of
//!   an event inside one member; after a restart or a rebalance a re-read event says 1.
//! - **Foreign records** (no `brigade-*` headers) get an id derived from topic,
//!   partition and offset (stable across re-reads), the record key as key and the record
//!   timestamp as `occurred_at`; one without `brigade-type` is `Malformed`.

mod stream;

use crate::Published;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use settings::MessagingSettings;
use uuid::Uuid;

use crate::Broker;
use crate::envelope::Envelope;
use crate::error::{MessagingError, Result};
use crate::queue::{DeadLetter, QueueConsumer, QueueOptions, QueueStats, WorkQueue};

pub use stream::KafkaStreams;

pub(crate) const BACKEND: &str = "kafka";

/// How to get a broker this backend can talk to, for error messages.
pub const START_HINT: &str = "point messaging.url at your Kafka or Redpanda bootstrap servers \
     (e.g. `docker run -d -p 9092:9092 redpandadata/redpanda redpanda start --overprovisioned \
     --smp 1 --kafka-addr 0.0.0.0:9092 --advertise-kafka-addr 127.0.0.1:9092`)";

/// Why the work-queue half of this backend refuses every call.
pub const NO_WORK_QUEUES: &str = "Kafka is a log, not a queue: it has no per-message ack, no \
     redelivery of one message, no delivery count and no dead-letter queue; use embedded, \
     rabbitmq or nats for work queues";

/// Connects to the Kafka cluster at `bootstrap` (`host:port[,host:port...]`, an optional
/// `kafka://` prefix is ignored) and returns a broker whose streams are Kafka topics and
/// whose work queues refuse every call (see the module doc).
pub async fn connect(bootstrap: &str, settings: &MessagingSettings) -> Result<Broker> {
    let bootstrap = bootstrap
        .trim()
        .trim_start_matches("kafka://")
        .trim_end_matches('/')
        .to_owned();
    if bootstrap.is_empty() {
        return Err(MessagingError::Invalid {
            what: "messaging.url",
            reason: format!("the Kafka backend needs bootstrap servers; {START_HINT}"),
        });
    }
    let shared = Arc::new(Shared {
        bootstrap,
        publish_timeout: settings.publish_timeout.max(Duration::from_millis(100)),
        handler_timeout: settings.handler_timeout,
    });
    let producer: FutureProducer = shared
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            millis(shared.publish_timeout).to_string(),
        )
        .set("linger.ms", "0")
        .create()
        .map_err(|e| MessagingError::backend(BACKEND, format!("creating the producer: {e}")))?;
    // Fail now, not on the first publish, when nothing answers at the address.
    let probe = producer.clone();
    let timeout = shared.publish_timeout;
    blocking(move || {
        use rdkafka::producer::Producer;
        probe.client().fetch_metadata(None, timeout).map(|_| ())
    })
    .await?
    .map_err(|e| {
        MessagingError::unavailable(
            BACKEND,
            format!(
                "no Kafka broker answers at {} ({e}); {START_HINT}",
                shared.bootstrap
            ),
        )
    })?;
    Ok(Broker {
        backend: BACKEND,
        queues: Arc::new(KafkaQueues),
        streams: Arc::new(KafkaStreams::new(shared, producer)),
    })
}

/// What the producer, the admin client and the consumers share.
pub(crate) struct Shared {
    pub(crate) bootstrap: String,
    /// How long a publish and every metadata / offset request may take.
    pub(crate) publish_timeout: Duration,
    /// The settings' `handler_timeout`: a member's `max.poll.interval.ms` is at least
    /// twice it (and at least Kafka's default 5 minutes), so a slow handler does not make
    /// its member leave the group.
    pub(crate) handler_timeout: Duration,
}

impl Shared {
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "brigade")
            .set("log_level", "4");
        config
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a blocking librdkafka call (metadata, offsets, commits, seeks) off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MessagingError::backend(BACKEND, format!("a blocking Kafka call failed: {e}")))
}

/// Maps a client error: transport trouble is `Unavailable` (transient), the rest
/// `Backend`.
pub(crate) fn kafka_error(
    what: impl std::fmt::Display,
    err: &rdkafka::error::KafkaError,
) -> MessagingError {
    use rdkafka::error::RDKafkaErrorCode as Code;
    let transient = matches!(
        err.rdkafka_error_code(),
        Some(
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::MessageTimedOut
                | Code::Resolve
                | Code::NotCoordinator
                | Code::CoordinatorNotAvailable
                | Code::CoordinatorLoadInProgress
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::NetworkException
        )
    );
    if transient {
        MessagingError::unavailable(BACKEND, format!("{what}: {err}"))
    } else {
        MessagingError::backend(BACKEND, format!("{what}: {err}"))
    }
}

/// Topic and group names: what Kafka accepts for a topic (letters, digits, `.`, `_`,
/// `-`, at most 249), which groups share here.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(MessagingError::Invalid {
            what,
            reason: format!("{name:?}: use letters, digits, '.', '_' and '-' only (Kafka names)"),
        })
    }
}

/// The stream position of the record at `offset` in `partition` (see the module doc).
pub fn position_of(offset: u64, partition: u16, partitions: u16) -> u64 {
    offset
        .saturating_mul(u64::from(partitions.max(1)))
        .saturating_add(u64::from(partition))
}

/// The first offset of `partition` whose position is `>= position`.
pub fn offset_of(position: u64, partition: u16, partitions: u16) -> u64 {
    let n = u64::from(partitions.max(1));
    position.saturating_sub(u64::from(partition)).div_ceil(n)
}

/// A stable id for a foreign record: FNV-1a of the topic and partition, then the offset.
pub(crate) fn derived_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes().chain(partition.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Uuid::from_u64_pair(hash, u64::try_from(offset).unwrap_or(0))
}

/// The work-queue half: refuses every call (Kafka is a log; see the module doc).
pub struct KafkaQueues;

fn no_work_queues<T>() -> Result<T> {
    Err(MessagingError::Invalid {
        what: "backend",
        reason: NO_WORK_QUEUES.to_owned(),
    })
}

#[async_trait]
impl WorkQueue for KafkaQueues {
    async fn declare(&self, _queue: &str, _options: &QueueOptions) -> Result<()> {
        no_work_queues()
    }

    async fn publish(&self, _queue: &str, _message: &Envelope) -> Result<Published> {
        no_work_queues()
    }

    async fn consume(&self, _queue: &str, _prefetch: u16) -> Result<Box<dyn QueueConsumer>> {
        no_work_queues()
    }

    async fn stats(&self, _queue: &str) -> Result<QueueStats> {
        no_work_queues()
    }

    async fn dead_letters(&self, _queue: &str, _limit: usize) -> Result<Vec<DeadLetter>> {
        no_work_queues()
    }

    async fn redrive(&self, _queue: &str, _limit: usize) -> Result<usize> {
        no_work_queues()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_interleave_partitions_and_round_trip() {
        for partitions in [1_u16, 2, 4, 7] {
            for partition in 0..partitions {
                for offset in 0..20 {
                    let position = position_of(offset, partition, partitions);
                    assert_eq!(offset_of(position, partition, partitions), offset);
                    // Every event at or after `position` in this partition starts there.
                    assert!(
                        position_of(
                            offset_of(position, partition, partitions),
                            partition,
                            partitions
                        ) >= position
                    );
                }
            }
        }
        // Position 5 of 2 partitions: partition 0 from offset 3 (pos 6), 1 from 2 (pos 5).
        assert_eq!(offset_of(5, 0, 2), 3);
        assert_eq!(offset_of(5, 1, 2), 2);
        assert_eq!(offset_of(0, 1, 2), 0);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("stream name", "orders.created_v1-x").is_ok());
        assert!(check_name("stream name", "a b").is_err());
        assert!(check_name("stream name", "").is_err());
        assert!(check_name("stream name", "..").is_err());
    }
}
