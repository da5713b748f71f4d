//! Messaging: the seed's two shapes, "not interchangeable", over any backend.
//!
//! - A **work queue** ([`WorkQueue`]): one message, one consumer, acked and deleted;
//!   prefetch-limited fair dispatch; nack, retry after a delay, reject; a dead-letter queue
//!   after `max_deliveries`, which can be listed and re-driven.
//! - An **event stream** ([`EventStream`]): keyed events retained for a time; consumer
//!   groups that each see every event, share the work inside the group, and keep per-key
//!   order; committed positions; replay from the start, a position or a time.
//!
//! Every message travels in one [`Envelope`]. Backends: `embedded` (a SQLite file, the
//! default: no broker needed), `rabbitmq`, `nats` (JetStream) and, behind the `kafka`
//! feature, `kafka`. The outbox and inbox tie messages to a service's database writes.
#![forbid(unsafe_code)]

pub mod asyncapi;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod embedded;
pub mod envelope;
pub mod error;
pub mod inbox;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nats;
pub mod observe;
pub mod outbox;
pub mod queue;
pub mod rabbitmq;
pub mod series;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

use std::sync::Arc;

pub use envelope::{Envelope, Malformed, WireDefaults};
pub use error::{MessagingError, Result};
pub use queue::{
    DeadLetter, Delivery, Outcome, QueueConsumer, QueueOptions, QueueStats, Settle, WorkQueue,
};
pub use stream::{
    Commit, EventStream, GroupLag, StartFrom, StreamConsumer, StreamEvent, StreamOptions,
};

/// What one publish did: how many messages the backend stored, and how many it dropped
/// as duplicates of ids it already held (only backends that de-duplicate drop any: the
/// embedded store and NATS; see each backend's module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub stored: u64,
    pub duplicates: u64,
}

impl Published {
    /// One message, stored or dropped as a duplicate.
    pub fn one(duplicate: bool) -> Self {
        Self {
            stored: u64::from(!duplicate),
            duplicates: u64::from(duplicate),
        }
    }
}

impl std::ops::AddAssign for Published {
    fn add_assign(&mut self, other: Self) {
        self.stored += other.stored;
        self.duplicates += other.duplicates;
    }
}

/// A connection to one backend, with both shapes.
#[derive(Clone)]
pub struct Broker {
    /// `embedded`, `rabbitmq`, `nats` or `kafka`: the metrics label and the CLI's word.
    pub backend: &'static str,
    pub queues: Arc<dyn WorkQueue>,
    pub streams: Arc<dyn EventStream>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Connects to the backend `settings.messaging` names: the embedded store in
/// `settings.messaging_path()`, or the broker at `settings.messaging.url`.
pub async fn connect(settings: &settings::Settings) -> Result<Broker> {
    use settings::MessagingBackend;
    let config = &settings.messaging;
    let url = |backend: &'static str| {
        config.url.clone().ok_or(MessagingError::Invalid {
            what: "messaging.url",
            reason: format!("the {backend} backend needs the broker's address"),
        })
    };
    match config.backend {
        MessagingBackend::Embedded => open_embedded_once(&settings.messaging_path(), config).await,
        MessagingBackend::Rabbitmq => rabbitmq::connect(&url("rabbitmq")?, config).await,
        MessagingBackend::Nats => nats::connect(&url("nats")?, config).await,
        #[cfg(feature = "kafka")]
        MessagingBackend::Kafka => kafka::connect(&url("kafka")?, config).await,
        #[cfg(not(feature = "kafka"))]
        MessagingBackend::Kafka => Err(MessagingError::Invalid {
            what: "messaging.backend",
            reason: "this build has no Kafka support (build with `--features kafka`)".to_owned(),
        }),
    }
}

/// The embedded stores this process has open, by path: `brigade up` runs five services
/// in one process, and they must share one store (one writer thread per file, and
/// in-process wake-ups between a publisher and a consumer).
type OpenStores = Vec<(
    std::path::PathBuf,
    std::sync::Weak<dyn WorkQueue>,
    std::sync::Weak<dyn EventStream>,
)>;
static EMBEDDED_STORES: std::sync::Mutex<OpenStores> = std::sync::Mutex::new(Vec::new());

async fn open_embedded_once(
    path: &std::path::Path,
    config: &settings::MessagingSettings,
) -> Result<Broker> {
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let live = |stores: &mut OpenStores| -> Option<Broker> {
        stores.retain(|(_, q, s)| q.strong_count() > 0 && s.strong_count() > 0);
        stores
            .iter()
            .find(|(p, _, _)| *p == key)
            .and_then(|(_, q, s)| {
                Some(Broker {
                    backend: "embedded",
                    queues: q.upgrade()?,
                    streams: s.upgrade()?,
                })
            })
    };
    {
        let mut stores = EMBEDDED_STORES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(broker) = live(&mut stores) {
            return Ok(broker);
        }
    }
    let broker = embedded::open(path, config).await?;
    let mut stores = EMBEDDED_STORES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Another task may have opened it meanwhile: keep the first, drop ours.
    if let Some(existing) = live(&mut stores) {
        return Ok(existing);
    }
    stores.push((
        key,
        Arc::downgrade(&broker.queues),
        Arc::downgrade(&broker.streams),
    ));
    Ok(broker)
}

/// Declares every channel on `broker` (idempotent): queues with their dead-letter queue
/// and `max_deliveries`, and a queue's one message type as the type assumed for a
/// foreign message that names none; streams with their retention and partitions.
pub async fn declare(
    broker: &Broker,
    channels: &[asyncapi::Channel],
    settings: &settings::MessagingSettings,
) -> Result<()> {
    for channel in channels {
        match channel.shape {
            asyncapi::Shape::Queue => {
                let default_kind = match channel.messages.as_slice() {
                    [only] => Some(only.kind.to_owned()),
                    _ => None,
                };
                let options = QueueOptions {
                    max_deliveries: settings.max_deliveries,
                    default_kind,
                };
                broker.queues.declare(channel.address, &options).await?;
            }
            asyncapi::Shape::Stream => {
                let options = StreamOptions {
                    retention: settings.retention,
                    partitions: settings.partitions,
                };
                broker.streams.declare(channel.address, &options).await?;
            }
        }
    }
    Ok(())
}

/// The partition of `key` among `partitions`: FNV-1a, stable across processes,
/// languages and releases (the embedded store, RabbitMQ and NATS all route with it, so
/// a key always lands in the same partition).
pub fn partition_of(key: &str, partitions: u16) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    u16::try_from(hash % u32::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_in_range() {
        // FNV-1a of "ORD-12345" is 4213322262 (fixed by the algorithm): pinned, so a
        // change of hash (which would re-route every key) fails here.
        assert_eq!(partition_of("ORD-12345", 4), 2);
        assert_eq!(partition_of("ORD-12345", 7), 2);
        for key in ["a", "b", "ORD-1", "ORD-2", ""] {
            assert!(partition_of(key, 4) < 4);
        }
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
        let spread: std::collections::HashSet<u16> = (0..100)
            .map(|i| partition_of(&format!("ORD-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "100 keys reach every partition");
    }
}
