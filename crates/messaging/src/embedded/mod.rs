//! The embedded backend: work queues and event streams in one SQLite file, no broker.
//!
//! **Durability.** The file is in WAL mode with `synchronous = NORMAL`: a publish, an ack
//! or a commit returns after its transaction committed, which survives the process being
//! killed (`kill -9`) but not the machine losing power (the last transactions before the
//! outage can be lost; `FULL` would fsync each commit and cost an order of magnitude in
//! throughput). `busy_timeout` is 5 s.
//!
//! **One writer thread per process.** Every operation runs on one dedicated thread that
//! owns the connection ([`writer`]) and commits whatever is waiting in one transaction
//! (group commit), so concurrent publishers and consumers share commits.
//!
//! **Several processes, one file.** Claims are `UPDATE ... RETURNING` under SQLite's write
//! lock; a claimed message carries a lease (`messaging.handler_timeout` + 1 s, renewed
//! when a prefetched message is handed out after waiting behind others) and a claim
//! token: a consumer that dies loses the lease, the message is claimed again with
//! `attempt + 1`, and a late settle from the dead claim changes nothing (nothing is
//! acknowledged twice). A message whose delivery count passes `max_deliveries` because
//! its consumers kept dying is dead-lettered instead of delivered again.
//!
//! **Waking.** Publishes made by this process wake its waiting consumers at once (a
//! `Notify` per queue and stream); publishes made by other processes, and messages whose
//! retry delay or lease runs out, are seen by polling while a consumer waits: every
//! [`POLL`] (50 ms) at first, doubling while it finds nothing up to [`IDLE_POLL`] (400 ms),
//! back to [`POLL`] as soon as it finds work or is woken. Nothing spins, and an idle
//! system costs a few claims a second per consumer, not twenty.
//!
//! **Order.** A queue hands out messages oldest-visible first: fresh publishes in publish
//! order; a message back from a retry delay or an expired lease queues behind what is
//! already waiting (as on RabbitMQ). `QueueConsumer::next` is cancel-safe (a claim in
//! flight is kept in the consumer); a cancelled `StreamConsumer::next` loses nothing but
//! may count its read-ahead as redelivered (`attempt` + 1).
//!
//! **Streams.** One log table with a stream-wide position; consumer groups keep a cursor
//! per partition; each partition is leased to one live member at a time and members take
//! an equal share (`ceil(partitions / members)`); a member gives a partition up only when
//! everything it read from it is committed, so per-key order holds across a rebalance.
//! Retention is by age, purged on publish (at most once a second per stream and process).
//! De-duplication: a queue remembers published ids for `messaging.retention`; a stream
//! refuses an id it still retains.

mod queue;
mod schema;
mod stream;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::Broker;
use crate::envelope::{Envelope, Malformed, WireDefaults, headers};
use crate::error::{MessagingError, Result};

pub(crate) use writer::Writer;

pub(crate) const BACKEND: &str = "embedded";

/// How often a waiting consumer looks for messages published by other processes, at
/// first...
pub const POLL: Duration = Duration::from_millis(50);
/// ...and at most, once it has found nothing for a while.
pub const IDLE_POLL: Duration = Duration::from_millis(400);

/// A waiting consumer's pace: [`POLL`] after it found work or was woken, doubling after
/// each look that found nothing, up to [`IDLE_POLL`].
#[derive(Debug, Default)]
pub(crate) struct Pace {
    empty: u32,
}

impl Pace {
    /// How long to wait before the next look, now that this one found nothing.
    pub(crate) fn found_nothing(&mut self) -> Duration {
        let wait = POLL.saturating_mul(1 << self.empty.min(4)).min(IDLE_POLL);
        self.empty = self.empty.saturating_add(1);
        wait
    }

    /// It found work, or was woken: look often again.
    pub(crate) fn busy(&mut self) {
        self.empty = 0;
    }
}

/// Opens (creating if needed) the store at `path` and returns it as a [`Broker`].
pub async fn open(path: &Path, settings: &settings::MessagingSettings) -> Result<Broker> {
    Ok(Embedded::open(path, settings).await?.broker())
}

/// The embedded store itself, for what the [`Broker`] traits do not say (publishing a
/// raw body as a foreign producer would).
#[derive(Clone)]
pub struct Embedded {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

/// What every queue, stream and consumer of one open store shares.
pub(crate) struct Shared {
    pub(crate) writer: Writer,
    /// A claimed message's lease, and a stream member's: `messaging.handler_timeout`
    /// plus a second.
    pub(crate) lease: Duration,
    /// How long published ids are remembered for de-duplication on queues.
    pub(crate) dedup_window: Duration,
    queue_wakers: Mutex<HashMap<String, Arc<Wake>>>,
    stream_wakers: Mutex<HashMap<String, Arc<Wake>>>,
    /// Bumped by `reset` in this process, so this process's consumers drop what they
    /// read ahead at once.
    resets: Mutex<HashMap<(String, String), Arc<std::sync::atomic::AtomicU64>>>,
    /// When each stream's (or queue's de-duplication) retention was last purged here.
    purged: Mutex<HashMap<String, std::time::Instant>>,
}

impl Embedded {
    pub async fn open(path: &Path, settings: &settings::MessagingSettings) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                MessagingError::unavailable(BACKEND, format!("{}: {e}", dir.display()))
            })?;
        }
        let writer = Writer::open(path, Duration::from_secs(5)).await?;
        tracing::info!(backend = BACKEND, path = %path.display(), "messaging store open");
        Ok(Self {
            shared: Arc::new(Shared {
                writer,
                // Longer than the handler may run (`worker` abandons it at
                // handler_timeout), so a slow handler's message is not claimed by
                // another consumer while the first is still on it.
                lease: settings.handler_timeout.max(Duration::from_millis(100))
                    + Duration::from_secs(1),
                dedup_window: settings.retention,
                queue_wakers: Mutex::default(),
                stream_wakers: Mutex::default(),
                resets: Mutex::default(),
                purged: Mutex::default(),
            }),
        })
    }

    pub fn broker(&self) -> Broker {
        Broker {
            backend: BACKEND,
            queues: Arc::new(queue::Queues::new(self.shared.clone())),
            streams: Arc::new(stream::Streams::new(self.shared.clone())),
        }
    }

    /// Puts `body` on `queue` with only the given metadata, as a producer that is not
    /// ours would (a body that is not JSON, no `brigade-type`, ...).
    pub async fn publish_raw(
        &self,
        queue: &str,
        body: &[u8],
        metadata: &[(&str, String)],
    ) -> Result<()> {
        let headers: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let id = headers
            .get(headers::ID)
            .cloned()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        queue::Queues::new(self.shared.clone())
            .insert(queue, id, encode_headers(&headers), body.to_vec())
            .await
            .map(drop)
    }
}

impl Shared {
    pub(crate) fn queue_waker(&self, queue: &str) -> Arc<Wake> {
        waker(&self.queue_wakers, queue)
    }

    pub(crate) fn stream_waker(&self, stream: &str) -> Arc<Wake> {
        waker(&self.stream_wakers, stream)
    }

    pub(crate) fn reset_counter(
        &self,
        stream: &str,
        group: &str,
    ) -> Arc<std::sync::atomic::AtomicU64> {
        let mut map = self.resets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((stream.to_owned(), group.to_owned()))
            .or_default()
            .clone()
    }

    /// Whether `name`'s retention should be purged now (at most once `every`).
    pub(crate) fn purge_due(&self, name: &str, every: Duration) -> bool {
        let mut map = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match map.get(name) {
            Some(last) if now.duration_since(*last) < every => false,
            _ => {
                map.insert(name.to_owned(), now);
                true
            }
        }
    }
}

fn waker(map: &Mutex<HashMap<String, Arc<Wake>>>, name: &str) -> Arc<Wake> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(name.to_owned()).or_default().clone()
}

/// Wakes this process's consumers of one queue or stream when something arrives.
#[derive(Default)]
pub(crate) struct Wake {
    notify: Notify,
    /// Bumped on every wake, so a consumer can tell whether it missed one.
    generation: AtomicU64,
}

impl Wake {
    pub(crate) fn wake(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Returns when woken after `seen` (at once if that already happened) or after the
    /// pace's next wait (other processes' writes wake nobody here); a wake sets the pace
    /// back to busy.
    pub(crate) async fn wait(&self, seen: u64, pace: &mut Pace) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.generation() != seen {
            pace.busy();
            return;
        }
        tokio::select! {
            () = notified => pace.busy(),
            () = tokio::time::sleep(pace.found_nothing()) => {}
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (shared by every process on the file).
pub(crate) fn now_ms() -> i64 {
    millis(SystemTime::now())
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The envelope's metadata as the `headers` column holds it (a JSON object).
pub(crate) fn envelope_headers(envelope: &Envelope) -> String {
    let map: HashMap<&str, String> = envelope.wire_headers().into_iter().collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
}

fn encode_headers(map: &HashMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

/// Rebuilds a delivered message from its columns.
pub(crate) fn decode(
    msg_id: &str,
    headers_json: &str,
    body: Vec<u8>,
    default_kind: Option<&str>,
) -> std::result::Result<Envelope, Malformed> {
    let map: HashMap<String, String> = match serde_json::from_str(headers_json) {
        Ok(map) => map,
        Err(e) => {
            return Err(Malformed {
                reason: format!("the stored metadata is not a JSON object: {e}"),
                body,
            });
        }
    };
    Envelope::from_wire(
        &body,
        |name| map.get(name).cloned(),
        WireDefaults {
            id: uuid::Uuid::parse_str(msg_id).ok(),
            kind: default_kind,
            ..WireDefaults::default()
        },
    )
}

/// A name a queue, stream or group may have: not empty, at most 200 bytes.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 {
        return Err(MessagingError::Invalid {
            what,
            reason: format!("{name:?} must be 1 to 200 bytes"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks that find nothing space out to the idle pace; work or a wake brings the
    /// next look back to the first.
    #[test]
    fn an_idle_consumer_looks_less_often_and_a_busy_one_often() {
        let mut pace = Pace::default();
        let waits: Vec<u128> = (0..6).map(|_| pace.found_nothing().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 400, 400]);
        pace.busy();
        assert_eq!(pace.found_nothing(), POLL);
    }
}
