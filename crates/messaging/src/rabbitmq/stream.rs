//! Event streams on RabbitMQ **stream queues**, read over AMQP (no plugin: stream queues
//! are core RabbitMQ since 3.9; the `rabbitmq_stream` plugin is only their binary
//! protocol).
//!
//! - **Partitions**: stream `s` with `P` partitions is `P` stream queues `s.p<k>`
//!   (`x-queue-type: stream`, `x-max-age` = retention), keyed by
//!   [`crate::partition_of`]. `s.meta` (a one-message queue) records `P` for processes
//!   that did not declare it.
//! - **Positions**: RabbitMQ numbers each stream queue separately, so the position of the
//!   event at offset `o` of partition `k` is `o * P + k`: it only grows within a partition
//!   and is unique in the stream; `StartFrom::Position(p)` starts each partition at its
//!   first offset whose position is `>= p`. It is not a publish order across partitions.
//! - **Group positions**: AMQP stream consumers have no server-side offset tracking, so
//!   each group keeps, per partition, a durable one-message queue `s.g.<group>.p<k>.commit`
//!   (`x-max-length: 1`, overflow drop-head) whose message is the next offset to read;
//!   a commit publishes the new one (confirmed). `reset` writes a new *epoch* with the
//!   target to `s.g.<group>.reset`; a commit made under an older epoch loses to it.
//!   Members look at the reset record when they wait for events and at least every
//!   [`CHECK_EVERY`], so "on their next read" means within that interval. The groups are
//!   listed in `s.groups` so that [`delete_stream`] can remove everything.
//! - **One member per partition**: a member holds partition `k` by declaring the
//!   *exclusive* queue `s.g.<group>.p<k>.lease` on its own connection; the broker refuses
//!   it to every other connection (RESOURCE_LOCKED) and deletes it when the connection
//!   dies, so a crashed member's partitions free themselves. Members count each other by
//!   consuming from `s.g.<group>.members` (its consumer count); each holds at most
//!   `ceil(P / members)` partitions, gives back extras between events (nothing handed out
//!   and unsettled), and claims free ones.
//! - **Order and retries**: a member hands out one event per partition at a time; a
//!   partition with an unsettled or retrying event waits.
//! - **Lag**: AMQP reports no length for a stream queue, so `lag` reads the partition's
//!   last chunk (`x-stream-offset: last`) until it has been quiet for [`QUIET`] and takes
//!   its last offset: the events after the group's position, assuming retention has not
//!   truncated the head.
//! - **Limits**: `StartFrom::Time` has second resolution (AMQP timestamps), and RabbitMQ
//!   starts a time-based read at a chunk boundary; `Latest` for a new group is "from this
//!   second". Attempts are counted in the member's memory (a new member starts at 1).
//!   No de-duplication of a re-published id (consumers de-duplicate through the inbox).

use crate::Published;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{BACKEND, Shared, amqp_error, envelope_of, header_u64, properties_of};
use crate::error::{MessagingError, Result};
use crate::stream::{
    Commit, EventStream, GroupLag, StartFrom, StreamConsumer, StreamEvent, StreamOptions,
};
use crate::{Envelope, partition_of};

/// How often a member looks at resets and at the group's size while events flow.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long `lag` waits for more of a partition's last chunk.
pub const QUIET: Duration = Duration::from_millis(150);

fn partition_queue(stream: &str, k: u16) -> String {
    format!("{stream}.p{k}")
}
fn meta_queue(stream: &str) -> String {
    format!("{stream}.meta")
}
fn groups_queue(stream: &str) -> String {
    format!("{stream}.groups")
}
fn commit_queue(stream: &str, group: &str, k: u16) -> String {
    format!("{stream}.g.{group}.p{k}.commit")
}
fn reset_queue(stream: &str, group: &str) -> String {
    format!("{stream}.g.{group}.reset")
}
fn lease_queue(stream: &str, group: &str, k: u16) -> String {
    format!("{stream}.g.{group}.p{k}.lease")
}
fn members_queue(stream: &str, group: &str) -> String {
    format!("{stream}.g.{group}.members")
}

/// Where a group's read of one partition starts, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Target {
    Earliest,
    /// A stream position (`offset * P + k`).
    Position(u64),
    /// Seconds since the Unix epoch.
    TimeSecs(u64),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ResetRecord {
    epoch: u64,
    to: Target,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CommitRecord {
    epoch: u64,
    /// The next offset of the partition to read.
    next: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    partitions: u16,
}

/// The AMQP `x-stream-offset` a read starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Offset(u64),
    First,
    TimeSecs(u64),
}

impl Cursor {
    fn argument(self) -> AMQPValue {
        match self {
            Self::Offset(o) => AMQPValue::LongLongInt(i64::try_from(o).unwrap_or(i64::MAX)),
            Self::First => AMQPValue::LongString("first".into()),
            Self::TimeSecs(s) => AMQPValue::Timestamp(s),
        }
    }
}

fn target_of(start: StartFrom) -> Target {
    match start {
        StartFrom::Earliest => Target::Earliest,
        StartFrom::Position(p) => Target::Position(p),
        StartFrom::Time(t) => {
            Target::TimeSecs(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        }
        StartFrom::Latest => Target::TimeSecs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        ),
    }
}

fn cursor_of(target: Target, k: u16, partitions: u16) -> Cursor {
    match target {
        Target::Earliest => Cursor::First,
        Target::TimeSecs(s) => Cursor::TimeSecs(s),
        Target::Position(p) => {
            let (k, n) = (u64::from(k), u64::from(partitions.max(1)));
            Cursor::Offset(if p <= k { 0 } else { (p - k).div_ceil(n) })
        }
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn one_message_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    args
}

fn json_props() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

async fn close(channel: &Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}

/// Every message of a (small) queue, oldest first, left in place.
async fn peek_all(conn_channel: Channel, queue: &str) -> Result<Vec<Vec<u8>>> {
    let result = async {
        let mut out = Vec::new();
        while let Some(got) = conn_channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(amqp_error)?
        {
            out.push(got.delivery.data);
            if out.len() > 10_000 {
                break;
            }
        }
        Ok::<_, MessagingError>(out)
    }
    .await;
    // Closing the channel gives every message back, in place.
    close(&conn_channel).await;
    result
}

/// The newest record of a one-message queue (a racing commit may leave two).
async fn latest<T: for<'de> Deserialize<'de>>(channel: Channel, queue: &str) -> Result<Option<T>> {
    let all = peek_all(channel, queue).await?;
    Ok(all
        .iter()
        .rev()
        .find_map(|body| serde_json::from_slice::<T>(body).ok()))
}

/// The event-stream half of a RabbitMQ [`crate::Broker`].
pub struct RabbitStreams {
    shared: Arc<Shared>,
    partitions: Mutex<HashMap<String, u16>>,
}

impl RabbitStreams {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            partitions: Mutex::new(HashMap::new()),
        }
    }

    async fn partitions_of(&self, stream: &str) -> Result<u16> {
        if let Some(p) = self
            .partitions
            .lock()
            .ok()
            .and_then(|m| m.get(stream).copied())
        {
            return Ok(p);
        }
        let channel = self.shared.channel().await?;
        let meta: Option<Meta> = latest(channel, &meta_queue(stream)).await?;
        let p = meta
            .ok_or_else(|| MessagingError::NotFound(format!("stream {stream} has no metadata")))?
            .partitions;
        if let Ok(mut m) = self.partitions.lock() {
            m.insert(stream.to_owned(), p);
        }
        Ok(p)
    }

    /// Creates the group's queues if it is new (at `start`); true if it was created.
    async fn ensure_group(&self, stream: &str, group: &str, start: StartFrom) -> Result<bool> {
        let partitions = self.partitions_of(stream).await?;
        let channel = self.shared.channel().await?;
        let passive = channel
            .queue_declare(
                reset_queue(stream, group).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        close(&channel).await;
        match passive {
            Ok(_) => return Ok(false),
            Err(e) => match amqp_error(e) {
                MessagingError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        let channel = self.shared.channel().await?;
        let result = async {
            for k in 0..partitions {
                channel
                    .queue_declare(
                        commit_queue(stream, group, k).as_str().into(),
                        durable(),
                        one_message_args(),
                    )
                    .await
                    .map_err(amqp_error)?;
            }
            channel
                .queue_declare(
                    reset_queue(stream, group).as_str().into(),
                    durable(),
                    one_message_args(),
                )
                .await
                .map_err(amqp_error)?;
            Ok::<_, MessagingError>(())
        }
        .await;
        close(&channel).await;
        result?;
        let record = ResetRecord {
            epoch: 0,
            to: target_of(start),
        };
        self.shared
            .publish(
                &reset_queue(stream, group),
                &serde_json::to_vec(&record).unwrap_or_default(),
                json_props(),
            )
            .await?;
        self.shared
            .publish(&groups_queue(stream), group.as_bytes(), json_props())
            .await?;
        Ok(true)
    }

    /// The last offset of partition `k`, if it has any event.
    async fn tail(&self, stream: &str, k: u16) -> Result<Option<u64>> {
        let channel = self.shared.channel().await?;
        let result = async {
            channel
                .basic_qos(1000, BasicQosOptions::default())
                .await
                .map_err(amqp_error)?;
            let mut args = FieldTable::default();
            args.insert(
                "x-stream-offset".into(),
                AMQPValue::LongString("last".into()),
            );
            let mut consumer = channel
                .basic_consume(
                    partition_queue(stream, k).as_str().into(),
                    ShortString::default(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await
                .map_err(amqp_error)?;
            let mut last = None;
            let mut wait = QUIET * 2;
            while let Ok(Some(delivery)) = tokio::time::timeout(wait, consumer.next()).await {
                let delivery = delivery.map_err(amqp_error)?;
                if let Some(o) = header_u64(&delivery.properties, "x-stream-offset") {
                    last = Some(last.map_or(o, |l: u64| l.max(o)));
                }
                wait = QUIET;
            }
            Ok::<_, MessagingError>(last)
        }
        .await;
        close(&channel).await;
        result
    }

    /// The first offset of partition `k` at or after `secs`, if any.
    async fn first_at(&self, stream: &str, k: u16, secs: u64) -> Result<Option<u64>> {
        let channel = self.shared.channel().await?;
        let result = async {
            channel
                .basic_qos(1, BasicQosOptions::default())
                .await
                .map_err(amqp_error)?;
            let mut args = FieldTable::default();
            args.insert("x-stream-offset".into(), AMQPValue::Timestamp(secs));
            let mut consumer = channel
                .basic_consume(
                    partition_queue(stream, k).as_str().into(),
                    ShortString::default(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await
                .map_err(amqp_error)?;
            match tokio::time::timeout(QUIET * 2, consumer.next()).await {
                Ok(Some(Ok(d))) => Ok(header_u64(&d.properties, "x-stream-offset")),
                _ => Ok(None),
            }
        }
        .await;
        close(&channel).await;
        result
    }
}

/// Where group `group` reads partition `k` from, per its records.
async fn resolve(
    shared: &Shared,
    stream: &str,
    group: &str,
    k: u16,
    partitions: u16,
) -> Result<(Cursor, u64)> {
    let reset: Option<ResetRecord> =
        latest(shared.channel().await?, &reset_queue(stream, group)).await?;
    let commit: Option<CommitRecord> =
        latest(shared.channel().await?, &commit_queue(stream, group, k)).await?;
    let reset = reset.unwrap_or(ResetRecord {
        epoch: 0,
        to: Target::Earliest,
    });
    Ok(match commit {
        Some(c) if c.epoch >= reset.epoch => (Cursor::Offset(c.next), reset.epoch),
        _ => (cursor_of(reset.to, k, partitions), reset.epoch),
    })
}

/// Deletes stream `stream` with every group's records (an operator's and the tests'
/// clean-up), on a connection of its own.
pub async fn delete_stream(url: &str, stream: &str) -> Result<()> {
    let conn = super::open(url).await?;
    let partitions: u16 = latest::<Meta>(
        conn.create_channel().await.map_err(amqp_error)?,
        &meta_queue(stream),
    )
    .await
    .ok()
    .flatten()
    .map_or(0, |m| m.partitions);
    let groups = peek_all(
        conn.create_channel().await.map_err(amqp_error)?,
        &groups_queue(stream),
    )
    .await
    .unwrap_or_default();
    let mut names = vec![meta_queue(stream), groups_queue(stream)];
    for k in 0..partitions {
        names.push(partition_queue(stream, k));
    }
    for group in groups {
        let group = String::from_utf8_lossy(&group).into_owned();
        names.push(reset_queue(stream, &group));
        names.push(members_queue(stream, &group));
        for k in 0..partitions {
            names.push(commit_queue(stream, &group, k));
        }
    }
    for name in names {
        let channel = conn.create_channel().await.map_err(amqp_error)?;
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        close(&channel).await;
    }
    let _ = conn.close(200, "OK".into()).await;
    Ok(())
}

#[async_trait]
impl EventStream for RabbitStreams {
    async fn declare(&self, stream: &str, options: &StreamOptions) -> Result<()> {
        let partitions = options.partitions.max(1);
        let channel = self.shared.channel().await?;
        let result = async {
            for k in 0..partitions {
                let mut args = FieldTable::default();
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("stream".into()),
                );
                args.insert(
                    "x-max-age".into(),
                    AMQPValue::LongString(
                        format!("{}s", options.retention.as_secs().max(1)).into(),
                    ),
                );
                channel
                    .queue_declare(partition_queue(stream, k).as_str().into(), durable(), args)
                    .await
                    .map_err(amqp_error)?;
            }
            channel
                .queue_declare(
                    meta_queue(stream).as_str().into(),
                    durable(),
                    one_message_args(),
                )
                .await
                .map_err(amqp_error)?;
            channel
                .queue_declare(
                    groups_queue(stream).as_str().into(),
                    durable(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_error)?;
            Ok::<_, MessagingError>(())
        }
        .await;
        close(&channel).await;
        result?;
        let meta = serde_json::to_vec(&Meta { partitions }).unwrap_or_default();
        self.shared
            .publish(&meta_queue(stream), &meta, json_props())
            .await?;
        if let Ok(mut m) = self.partitions.lock() {
            m.insert(stream.to_owned(), partitions);
        }
        Ok(())
    }

    async fn publish(&self, stream: &str, event: &Envelope) -> Result<Published> {
        let partitions = self.partitions_of(stream).await?;
        let id = event.id.to_string();
        let k = partition_of(event.key.as_deref().unwrap_or(&id), partitions);
        self.shared
            .publish(
                &partition_queue(stream, k),
                &event.body(),
                properties_of(event),
            )
            .await?;
        Ok(Published::one(false))
    }

    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn StreamConsumer>> {
        let partitions = self.partitions_of(stream).await?;
        self.ensure_group(stream, group, start).await?;
        let conn = self.shared.new_connection().await?;
        let members_channel = conn.create_channel().await.map_err(amqp_error)?;
        members_channel
            .queue_declare(
                members_queue(stream, group).as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        let membership = members_channel
            .basic_consume(
                members_queue(stream, group).as_str().into(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let mut member = Member {
            shared: self.shared.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            partitions,
            conn: Arc::new(conn),
            _members_channel: members_channel,
            _membership: membership,
            held: BTreeMap::new(),
            epoch: 0,
            generation: 0,
            events_tx,
            events_rx,
            settled_tx,
            settled_rx,
            last_check: None,
        };
        member.maintain().await?;
        Ok(Box::new(member))
    }

    async fn reset(&self, stream: &str, group: &str, to: StartFrom) -> Result<()> {
        if self.ensure_group(stream, group, to).await? {
            return Ok(());
        }
        let current: Option<ResetRecord> =
            latest(self.shared.channel().await?, &reset_queue(stream, group)).await?;
        let record = ResetRecord {
            epoch: current.map_or(0, |r| r.epoch) + 1,
            to: target_of(to),
        };
        self.shared
            .publish(
                &reset_queue(stream, group),
                &serde_json::to_vec(&record).unwrap_or_default(),
                json_props(),
            )
            .await?;
        tracing::info!(backend = BACKEND, stream, group, ?to, "group reset");
        Ok(())
    }

    async fn lag(&self, stream: &str, group: &str) -> Result<GroupLag> {
        let partitions = self.partitions_of(stream).await?;
        let mut lag = 0;
        for k in 0..partitions {
            let Some(tail) = self.tail(stream, k).await? else {
                continue;
            };
            let (cursor, _) = resolve(&self.shared, stream, group, k, partitions).await?;
            let from = match cursor {
                Cursor::Offset(o) => o,
                Cursor::First => 0,
                Cursor::TimeSecs(s) => self.first_at(stream, k, s).await?.unwrap_or(tail + 1),
            };
            lag += (tail + 1).saturating_sub(from);
        }
        Ok(GroupLag { lag })
    }
}

/// An event read from a partition, before it is handed out.
struct Raw {
    offset: u64,
    data: Vec<u8>,
    props: BasicProperties,
}

/// A partition this member holds.
struct Held {
    /// Its lease and its read, on one channel of the member's connection.
    channel: Channel,
    generation: u64,
    buffer: VecDeque<Raw>,
    /// An event was handed out and is not settled yet.
    pending: bool,
    /// An event to hand out again at the instant, with its attempt.
    retry: Option<(Instant, Raw, u32)>,
}

enum Settled {
    Committed {
        k: u16,
        generation: u64,
    },
    Retry {
        k: u16,
        generation: u64,
        raw: Box<Raw>,
        attempt: u32,
        at: Instant,
    },
}

/// One member of a group.
struct Member {
    shared: Arc<Shared>,
    stream: String,
    group: String,
    partitions: u16,
    /// The member's own connection: the broker ties its leases to it.
    conn: Arc<Connection>,
    _members_channel: Channel,
    _membership: lapin::Consumer,
    held: BTreeMap<u16, Held>,
    epoch: u64,
    generation: u64,
    events_tx: mpsc::Sender<(u16, u64, Raw)>,
    events_rx: mpsc::Receiver<(u16, u64, Raw)>,
    settled_tx: mpsc::UnboundedSender<Settled>,
    settled_rx: mpsc::UnboundedReceiver<Settled>,
    last_check: Option<Instant>,
}

impl Drop for Member {
    fn drop(&mut self) {
        // Close the connection now (its readers' tasks would keep it open): the broker
        // frees this member's leases and the others take its partitions.
        let conn = self.conn.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = conn.close(200, "member left".into()).await;
            });
        }
    }
}

impl Member {
    /// Looks at resets and the group's size; releases and claims partitions.
    async fn maintain(&mut self) -> Result<()> {
        self.last_check = Some(Instant::now());
        let reset: Option<ResetRecord> = latest(
            self.shared.channel().await?,
            &reset_queue(&self.stream, &self.group),
        )
        .await?;
        let epoch = reset.map_or(0, |r| r.epoch);
        if epoch > self.epoch {
            self.epoch = epoch;
            let held: Vec<u16> = self.held.keys().copied().collect();
            for k in held {
                self.restart(k).await?;
            }
        }
        let members = {
            let channel = self.shared.channel().await?;
            let q = channel
                .queue_declare(
                    members_queue(&self.stream, &self.group).as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_error);
            close(&channel).await;
            q?.consumer_count().max(1)
        };
        let fair = usize::from(self.partitions).div_ceil(usize::try_from(members).unwrap_or(1));
        while self.held.len() > fair {
            let Some(k) = self
                .held
                .iter()
                .rev()
                .find(|(_, h)| !h.pending && h.retry.is_none())
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.release(k).await;
        }
        for k in 0..self.partitions {
            if self.held.len() >= fair {
                break;
            }
            if !self.held.contains_key(&k) {
                self.claim(k).await?;
            }
        }
        Ok(())
    }

    async fn release(&mut self, k: u16) {
        if let Some(held) = self.held.remove(&k) {
            let _ = held
                .channel
                .queue_delete(
                    lease_queue(&self.stream, &self.group, k).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
            close(&held.channel).await;
            tracing::debug!(backend = BACKEND, stream = %self.stream, group = %self.group, partition = k, "partition released");
        }
    }

    /// Takes partition `k` if no other member holds it.
    async fn claim(&mut self, k: u16) -> Result<()> {
        let channel = self.conn.create_channel().await.map_err(amqp_error)?;
        let lease = channel
            .queue_declare(
                lease_queue(&self.stream, &self.group, k).as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if lease.is_err() {
            return Ok(()); // another member holds it (RESOURCE_LOCKED)
        }
        self.generation += 1;
        self.held.insert(
            k,
            Held {
                channel,
                generation: self.generation,
                buffer: VecDeque::new(),
                pending: false,
                retry: None,
            },
        );
        self.start_reading(k).await?;
        tracing::debug!(backend = BACKEND, stream = %self.stream, group = %self.group, partition = k, "partition claimed");
        Ok(())
    }

    /// Reads partition `k` again from the group's records (after a reset).
    async fn restart(&mut self, k: u16) -> Result<()> {
        let Some(held) = self.held.get_mut(&k) else {
            return Ok(());
        };
        // A new channel for the read; the lease stays on the connection.
        let _ = held
            .channel
            .basic_cancel(
                ShortString::default(),
                lapin::options::BasicCancelOptions::default(),
            )
            .await;
        close(&held.channel).await;
        held.channel = self.conn.create_channel().await.map_err(amqp_error)?;
        self.generation += 1;
        held.generation = self.generation;
        held.buffer.clear();
        held.pending = false;
        held.retry = None;
        self.start_reading(k).await
    }

    async fn start_reading(&mut self, k: u16) -> Result<()> {
        let (cursor, _) =
            resolve(&self.shared, &self.stream, &self.group, k, self.partitions).await?;
        let Some(held) = self.held.get(&k) else {
            return Ok(());
        };
        held.channel
            .basic_qos(256, BasicQosOptions::default())
            .await
            .map_err(amqp_error)?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), cursor.argument());
        let mut consumer = held
            .channel
            .basic_consume(
                partition_queue(&self.stream, k).as_str().into(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(amqp_error)?;
        let (tx, generation) = (self.events_tx.clone(), held.generation);
        let min = match cursor {
            Cursor::Offset(o) => o,
            _ => 0,
        };
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                // Stream queues keep messages; the ack only gives the consumer credit.
                let _ = delivery
                    .acker
                    .ack(lapin::options::BasicAckOptions::default())
                    .await;
                let Some(offset) = header_u64(&delivery.properties, "x-stream-offset") else {
                    continue;
                };
                // A read starts at a chunk boundary: skip what comes before the cursor.
                if offset < min {
                    continue;
                }
                let raw = Raw {
                    offset,
                    data: delivery.data,
                    props: delivery.properties,
                };
                if tx.send((k, generation, raw)).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    fn on_settled(&mut self, settled: Settled) {
        match settled {
            Settled::Committed { k, generation } => {
                if let Some(h) = self.held.get_mut(&k)
                    && h.generation == generation
                {
                    h.pending = false;
                }
            }
            Settled::Retry {
                k,
                generation,
                raw,
                attempt,
                at,
            } => {
                if let Some(h) = self.held.get_mut(&k)
                    && h.generation == generation
                {
                    h.pending = false;
                    h.retry = Some((at, *raw, attempt));
                }
            }
        }
    }

    /// The next event ready to hand out, if any.
    fn ready(&mut self) -> Option<(u16, Raw, u32)> {
        let now = Instant::now();
        for (k, h) in &mut self.held {
            if h.pending {
                continue;
            }
            if let Some((at, _, _)) = &h.retry {
                if *at <= now {
                    let (_, raw, attempt) = h.retry.take()?;
                    h.pending = true;
                    return Some((*k, raw, attempt));
                }
                continue;
            }
            if let Some(raw) = h.buffer.pop_front() {
                h.pending = true;
                return Some((*k, raw, 1));
            }
        }
        None
    }

    fn event(&self, k: u16, raw: Raw, attempt: u32) -> StreamEvent {
        let message = envelope_of(&raw.data, &raw.props, None);
        let position = raw.offset * u64::from(self.partitions) + u64::from(k);
        let generation = self.held.get(&k).map_or(0, |h| h.generation);
        let settle = MemberCommit {
            shared: self.shared.clone(),
            commit_queue: commit_queue(&self.stream, &self.group, k),
            epoch: self.epoch,
            k,
            generation,
            raw: Some(raw),
            attempt,
            settled: self.settled_tx.clone(),
        };
        StreamEvent::new(message, k, position, attempt, Box::new(settle))
    }
}

#[async_trait]
impl StreamConsumer for Member {
    async fn next(&mut self) -> Result<StreamEvent> {
        loop {
            while let Ok(s) = self.settled_rx.try_recv() {
                self.on_settled(s);
            }
            if self.last_check.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
                self.maintain().await?;
            }
            while let Ok((k, generation, raw)) = self.events_rx.try_recv() {
                if let Some(h) = self.held.get_mut(&k)
                    && h.generation == generation
                {
                    h.buffer.push_back(raw);
                }
            }
            if let Some((k, raw, attempt)) = self.ready() {
                return Ok(self.event(k, raw, attempt));
            }
            if !self.conn.status().connected() {
                return Err(MessagingError::Closed);
            }
            let due = self
                .held
                .values()
                .filter_map(|h| h.retry.as_ref().map(|r| r.0))
                .min()
                .map_or(CHECK_EVERY, |at| {
                    at.saturating_duration_since(Instant::now())
                        .min(CHECK_EVERY)
                });
            tokio::select! {
                got = self.events_rx.recv() => {
                    if let Some((k, generation, raw)) = got
                        && let Some(h) = self.held.get_mut(&k)
                        && h.generation == generation
                    {
                        h.buffer.push_back(raw);
                    }
                }
                Some(s) = self.settled_rx.recv() => self.on_settled(s),
                () = tokio::time::sleep(due) => {}
            }
        }
    }
}

struct MemberCommit {
    shared: Arc<Shared>,
    commit_queue: String,
    epoch: u64,
    k: u16,
    generation: u64,
    /// `None` once settled.
    raw: Option<Raw>,
    attempt: u32,
    settled: mpsc::UnboundedSender<Settled>,
}

impl Drop for MemberCommit {
    fn drop(&mut self) {
        // Dropped unsettled: hand it out again now.
        if let Some(raw) = self.raw.take() {
            let _ = self.settled.send(Settled::Retry {
                k: self.k,
                generation: self.generation,
                raw: Box::new(raw),
                attempt: self.attempt + 1,
                at: Instant::now(),
            });
        }
    }
}

#[async_trait]
impl Commit for MemberCommit {
    async fn settle(mut self: Box<Self>, retry_after: Option<Duration>) -> Result<()> {
        let Some(raw) = self.raw.take() else {
            return Ok(());
        };
        match retry_after {
            None => {
                let record = CommitRecord {
                    epoch: self.epoch,
                    next: raw.offset + 1,
                };
                let body = serde_json::to_vec(&record).unwrap_or_default();
                if let Err(e) = self
                    .shared
                    .publish(&self.commit_queue, &body, json_props())
                    .await
                {
                    self.raw = Some(raw);
                    return Err(e);
                }
                let _ = self.settled.send(Settled::Committed {
                    k: self.k,
                    generation: self.generation,
                });
            }
            Some(delay) => {
                let _ = self.settled.send(Settled::Retry {
                    k: self.k,
                    generation: self.generation,
                    raw: Box::new(raw),
                    attempt: self.attempt + 1,
                    at: Instant::now() + delay,
                });
            }
        }
        Ok(())
    }
}
