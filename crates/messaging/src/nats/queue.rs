//! Work queues on JetStream: a `WorkQueue`-retention stream, one shared durable pull
//! consumer, and a `<queue>-dlq` stream.

use crate::Published;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::{self, Batch};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Message};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{
    BACKEND, Shared, api_error, check_name, dlq_headers, envelope_headers, envelope_of, header,
    header_safe, is_not_found, system_time,
};
use crate::envelope::{Envelope, headers};
use crate::error::{MessagingError, Result};
use crate::queue::{
    DeadLetter, Delivery, Outcome, QueueConsumer, QueueOptions, QueueStats, Settle, WorkQueue,
};

/// How long one pull request waits on the server for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// What `declare` records in the queue stream's description.
#[derive(Debug, Serialize, Deserialize)]
struct QueueMeta {
    brigade: String,
    max_deliveries: u32,
    default_kind: Option<String>,
}

fn dlq_name(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// The work-queue half of the NATS broker.
pub struct NatsQueues {
    shared: Arc<Shared>,
    /// Each queue's [`Deferrals`], shared by every consumer of it in this process.
    deferrals: std::sync::Mutex<HashMap<String, Arc<Deferrals>>>,
}

/// How many times each message of one queue was deferred ([`Outcome::Defer`]), by stream
/// sequence. JetStream counts every delivery on the server (a `Nak` included) and has
/// no way to give one back, so the deferrals are remembered here and taken off the
/// server's count. They are this process's memory: a message deferred here and then
/// delivered to another process is counted by the server's number alone (the backend's
/// behaviour before deferrals). Entries of messages another process settled are never
/// told to go: when the table is full, those not deferred for an hour are dropped; if it
/// is still full (a long outage with a backlog larger than the table), new deferrals are
/// not recorded and count, as before deferrals existed — never forgetting recorded ones,
/// which would count every deferral they had at once.
#[derive(Debug, Default)]
struct Deferrals(std::sync::Mutex<HashMap<u64, (u32, Instant)>>);

impl Deferrals {
    /// Far more than any prefetch holds.
    const CAPACITY: usize = 65_536;
    /// An entry not deferred again for this long is presumed settled elsewhere.
    const STALE: Duration = Duration::from_secs(60 * 60);

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u32, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn of(&self, sequence: u64) -> u32 {
        self.table().get(&sequence).map_or(0, |(n, _)| *n)
    }

    /// Records one more deferral of `sequence`; `false` when the table is full.
    fn add(&self, sequence: u64) -> bool {
        let mut table = self.table();
        if table.len() >= Self::CAPACITY && !table.contains_key(&sequence) {
            table.retain(|_, (_, at)| at.elapsed() < Self::STALE);
            if table.len() >= Self::CAPACITY {
                return false;
            }
        }
        let now = Instant::now();
        let entry = table.entry(sequence).or_insert((0, now));
        *entry = (entry.0 + 1, now);
        true
    }

    /// Takes back one deferral of `sequence` (its `Nak` never reached the server).
    fn undo(&self, sequence: u64) {
        let mut table = self.table();
        if let Some((n, _)) = table.get_mut(&sequence) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&sequence);
            }
        }
    }

    /// Forgets `sequence`: it was acknowledged or dead-lettered.
    fn forget(&self, sequence: u64) {
        self.table().remove(&sequence);
    }
}

impl NatsQueues {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            deferrals: Default::default(),
        }
    }

    fn deferrals_of(&self, queue: &str) -> Arc<Deferrals> {
        self.deferrals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    async fn queue_stream(&self, queue: &str) -> Result<stream::Stream> {
        check_name("queue name", queue)?;
        self.shared
            .context
            .get_stream(queue)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js) if is_not_found(&js) => {
                    MessagingError::NotFound(format!("queue {queue} is not declared"))
                }
                _ => api_error(format!("looking up queue {queue}"), e),
            })
    }

    async fn meta(&self, queue: &str) -> Result<QueueMeta> {
        let mut stream = self.queue_stream(queue).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| api_error(format!("reading queue {queue}"), e))?;
        Ok(info
            .config
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str::<QueueMeta>(d).ok())
            .unwrap_or(QueueMeta {
                brigade: "queue".into(),
                max_deliveries: QueueOptions::default().max_deliveries,
                default_kind: None,
            }))
    }

    async fn dlq_stream(&self, queue: &str) -> Result<stream::Stream> {
        check_name("queue name", queue)?;
        let name = dlq_name(queue);
        self.shared
            .context
            .get_stream(&name)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js) if is_not_found(&js) => {
                    MessagingError::NotFound(format!("queue {queue} is not declared"))
                }
                _ => api_error(format!("looking up {name}"), e),
            })
    }

    /// The oldest `limit` dead letters, with their DLQ sequence, through a short-lived
    /// ephemeral consumer that acks nothing (listing does not change the DLQ).
    async fn read_dlq(&self, queue: &str, limit: usize) -> Result<Vec<(u64, Message)>> {
        let stream = self.dlq_stream(queue).await?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(format!("reading {}", dlq_name(queue)), e))?;
        let name = consumer.cached_info().name.clone();
        let wanted = usize::try_from(consumer.cached_info().num_pending)
            .unwrap_or(usize::MAX)
            .min(limit);
        let mut out = Vec::with_capacity(wanted);
        if wanted > 0 {
            let mut batch = consumer
                .batch()
                .max_messages(wanted)
                .expires(self.shared.publish_timeout.max(Duration::from_secs(1)))
                .messages()
                .await
                .map_err(|e| api_error(format!("reading {}", dlq_name(queue)), e))?;
            while let Some(message) = batch.next().await {
                let message =
                    message.map_err(|e| api_error(format!("reading {}", dlq_name(queue)), e))?;
                let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                out.push((sequence, message));
                if out.len() >= wanted {
                    break;
                }
            }
        }
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(queue, error = %e, "could not delete the DLQ reader; it expires by itself");
        }
        Ok(out)
    }
}

#[async_trait]
impl WorkQueue for NatsQueues {
    #[tracing::instrument(skip(self, options), fields(backend = BACKEND))]
    async fn declare(&self, queue: &str, options: &QueueOptions) -> Result<()> {
        check_name("queue name", queue)?;
        let meta = QueueMeta {
            brigade: "queue".into(),
            max_deliveries: options.max_deliveries.max(1),
            default_kind: options.default_kind.clone(),
        };
        let description =
            serde_json::to_string(&meta).map_err(|e| MessagingError::backend(BACKEND, e))?;
        let context = &self.shared.context;
        let stream = context
            .create_or_update_stream(stream::Config {
                name: queue.to_owned(),
                description: Some(description),
                subjects: vec![queue.to_owned()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(format!("declaring queue {queue}"), e))?;
        let _ = stream;
        let dlq = dlq_name(queue);
        context
            .create_or_update_stream(stream::Config {
                name: dlq.clone(),
                description: Some(format!("dead letters of the brigade queue {queue}")),
                subjects: vec![dlq.clone()],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(format!("declaring {dlq}"), e))?;
        context
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some(queue.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.shared.ack_wait,
                    // Unlimited on the server: our consumer dead-letters any delivery
                    // past `max_deliveries` at receipt (see the module docs), so a
                    // message is never silently parked by the server.
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
                queue,
            )
            .await
            .map_err(|e| api_error(format!("declaring the consumer of {queue}"), e))?;
        Ok(())
    }

    async fn publish(&self, queue: &str, message: &Envelope) -> Result<Published> {
        check_name("queue name", queue)?;
        let duplicate = self
            .shared
            .publish_acked(
                queue.to_owned(),
                envelope_headers(message),
                message.body(),
                Some(message.id.to_string()),
            )
            .await?;
        if duplicate {
            tracing::debug!(backend = BACKEND, queue, message_id = %message.id, "duplicate publish dropped by the server");
        }
        Ok(Published::one(duplicate))
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn QueueConsumer>> {
        let meta = self.meta(queue).await?;
        let consumer: PullConsumer = self
            .shared
            .context
            .get_consumer_from_stream(queue, queue)
            .await
            .map_err(|e| api_error(format!("joining queue {queue}"), e))?;
        let prefetch = usize::from(prefetch.max(1));
        Ok(Box::new(NatsQueueConsumer {
            queue: Arc::new(QueueCtx {
                shared: self.shared.clone(),
                queue: queue.to_owned(),
                max_deliveries: meta.max_deliveries,
                default_kind: meta.default_kind,
                deferrals: self.deferrals_of(queue),
            }),
            consumer,
            permits: Arc::new(Semaphore::new(prefetch)),
            prefetch,
            batch: None,
            ready: VecDeque::new(),
            ready_since: None,
            dead_lettered: metrics::Counter::noop(),
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let messages = self.read_dlq(queue, limit).await?;
        Ok(messages
            .into_iter()
            .map(|(sequence, message)| {
                let h = message.headers.as_ref();
                DeadLetter {
                    id: header(h, headers::ID)
                        .or_else(|| header(h, "Nats-Msg-Id"))
                        .unwrap_or_else(|| format!("{}:{sequence}", dlq_name(queue))),
                    kind: header(h, headers::TYPE),
                    reason: header(h, dlq_headers::REASON).unwrap_or_default(),
                    attempts: header(h, dlq_headers::ATTEMPTS)
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(0),
                    dead_at: message
                        .info()
                        .map(|i| system_time(i.published))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    body: message.payload.to_vec(),
                }
            })
            .collect())
    }

    /// Republishes dead letters onto the queue, oldest first, then deletes them from the
    /// DLQ. The copy keeps its `brigade-id` (inboxes still recognise it) but NOT the
    /// envelope id as `Nats-Msg-Id`: within the duplicate window the server would take
    /// it for the original and drop it. Its `Nats-Msg-Id` is `redrive-<queue>-<dlq seq>`
    /// instead, so a redrive that crashed between publish and delete and is run again
    /// does not enqueue a second copy (within the window).
    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize> {
        let dlq = self.dlq_stream(queue).await?;
        let messages = self.read_dlq(queue, limit).await?;
        let mut moved = 0;
        for (sequence, message) in messages {
            let mut headers = HeaderMap::new();
            if let Some(h) = message.headers.as_ref() {
                for (name, values) in h.iter() {
                    let name_str: &str = name.as_ref();
                    if name_str.starts_with("brigade-dlq-")
                        || name_str.eq_ignore_ascii_case("Nats-Msg-Id")
                    {
                        continue;
                    }
                    for value in values {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
            self.shared
                .publish_acked(
                    queue.to_owned(),
                    headers,
                    message.payload.to_vec(),
                    Some(format!("redrive-{queue}-{sequence}")),
                )
                .await?;
            dlq.delete_message(sequence)
                .await
                .map_err(|e| api_error(format!("removing dead letter {sequence} of {queue}"), e))?;
            moved += 1;
        }
        if moved > 0 {
            tracing::info!(backend = BACKEND, queue, moved, "dead letters redriven");
        }
        Ok(moved)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let info = self
            .shared
            .context
            .get_consumer_from_stream::<pull::Config, _, _>(queue, queue)
            .await
            .map_err(|e| api_error(format!("reading queue {queue}"), e))?
            .cached_info()
            .clone();
        let mut dlq = self.dlq_stream(queue).await?;
        let dead = dlq
            .info()
            .await
            .map_err(|e| api_error(format!("reading {}", dlq_name(queue)), e))?
            .state
            .messages;
        // A nak with a delay keeps the message "ack pending" on the server until it is
        // redelivered, so on NATS `in_flight` includes messages waiting out a retry.
        Ok(QueueStats {
            ready: info.num_pending,
            in_flight: info.num_ack_pending as u64,
            dead,
        })
    }
}

/// What a consumer and its deliveries need to know about their queue.
struct QueueCtx {
    shared: Arc<Shared>,
    queue: String,
    max_deliveries: u32,
    default_kind: Option<String>,
    deferrals: Arc<Deferrals>,
}

impl QueueCtx {
    /// Publishes a copy of `message` to the DLQ (awaiting its PubAck), then terms the
    /// original. The copy's `Nats-Msg-Id` is the original's queue sequence, so dead-
    /// lettering the same delivery twice (a crash between the two steps) stores it once.
    async fn dead_letter(
        &self,
        message: &Message,
        reason: &str,
        attempts: u32,
        envelope: Option<(Uuid, &str)>,
    ) -> Result<()> {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let mut headers = HeaderMap::new();
        if let Some(h) = message.headers.as_ref() {
            for (name, values) in h.iter() {
                let name_str: &str = name.as_ref();
                if name_str.eq_ignore_ascii_case("Nats-Msg-Id") {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        // A foreign message gets the id and type it was handed out with, so the DLQ
        // listing and a redriven copy keep them.
        if let Some((id, kind)) = envelope {
            if header(message.headers.as_ref(), headers::ID).is_none() {
                headers.insert(headers::ID, id.to_string());
            }
            if header(message.headers.as_ref(), headers::TYPE).is_none() {
                headers.insert(headers::TYPE, header_safe(kind));
            }
        }
        headers.insert(dlq_headers::REASON, header_safe(reason));
        headers.insert(dlq_headers::ATTEMPTS, attempts.to_string());
        headers.insert(dlq_headers::QUEUE, self.queue.clone());
        headers.insert(dlq_headers::SOURCE_SEQUENCE, sequence.to_string());
        headers.insert(
            dlq_headers::DEAD_AT,
            time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        );
        self.shared
            .publish_acked(
                dlq_name(&self.queue),
                headers,
                message.payload.to_vec(),
                Some(format!("dlq-{}-{sequence}", self.queue)),
            )
            .await?;
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| MessagingError::unavailable(BACKEND, e))?;
        tracing::warn!(backend = BACKEND, queue = %self.queue, sequence, attempts, reason, "message dead-lettered");
        Ok(())
    }
}

/// One consumer instance: pulls at most `prefetch` messages and holds them unsettled.
///
/// The server's `ack_wait` clock starts when it sends a message, but the consumer hands
/// its prefetched messages out one `next()` at a time, and a message may wait behind
/// others' handlers. So when a message is handed out, an in-progress ack (`+WPI`, which
/// restarts the server's clock) goes to it and to every message still waiting whose clock
/// has run longer than [`EXTEND_AFTER`]: the handler always has the whole `ack_wait`
/// (`handler_timeout` + 1 s), and a waiting message is not sent to another consumer.
struct NatsQueueConsumer {
    queue: Arc<QueueCtx>,
    consumer: PullConsumer,
    /// One permit per delivery handed out and not yet settled (or per slot reserved
    /// for the pull request in flight, or per message waiting in `ready`).
    permits: Arc<Semaphore>,
    prefetch: usize,
    /// The pull request being served, the permits reserved for what it may bring, and
    /// when it was sent (no message it brings was sent by the server before that).
    batch: Option<(
        futures::stream::Fuse<Batch>,
        Vec<OwnedSemaphorePermit>,
        Instant,
    )>,
    /// Received, not yet handed out.
    ready: VecDeque<Waiting>,
    /// The oldest `since` in `ready` (`None` when it is empty).
    ready_since: Option<Instant>,
    /// Counts the messages past `max_deliveries` this consumer dead-letters on its own
    /// (given by [`QueueConsumer::count_dead_letters`]; counts nothing until then).
    dead_lettered: metrics::Counter,
}

/// A message received and not yet handed out.
struct Waiting {
    message: Message,
    permit: OwnedSemaphorePermit,
    /// No earlier than the server's `ack_wait` clock for it last (re)started.
    since: Instant,
}

/// Sends `waiting` an in-progress ack in the background, restarting its clock at `now`.
fn progress(waiting: &mut Waiting, now: Instant) -> tokio::task::JoinHandle<()> {
    waiting.since = now;
    let message = waiting.message.clone();
    tokio::spawn(async move {
        let _ = message.ack_with(AckKind::Progress).await;
    })
}

/// How long a message's `ack_wait` clock may have run when it is handed out (or while
/// another is) before an in-progress ack restarts it: less than the 1 s margin of
/// `ack_wait` over `handler_timeout`.
const EXTEND_AFTER: Duration = Duration::from_millis(500);

impl NatsQueueConsumer {
    async fn start_batch(&mut self) -> Result<()> {
        let first = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MessagingError::Closed)?;
        let mut reserved = vec![first];
        while reserved.len() < self.prefetch {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => reserved.push(permit),
                Err(_) => break,
            }
        }
        let sent = Instant::now();
        let batch = self
            .consumer
            .batch()
            .max_messages(reserved.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| api_error(format!("pulling from {}", self.queue.queue), e))?;
        self.batch = Some((batch.fuse(), reserved, sent));
        Ok(())
    }

    /// Takes one item of the pull request: a message joins `ready`; the end of the
    /// request, or an error, ends it (a deleted consumer is the caller's error).
    fn receive(
        &mut self,
        item: Option<std::result::Result<Message, Box<dyn std::error::Error + Send + Sync>>>,
    ) -> Result<()> {
        let Some((_, reserved, sent)) = self.batch.as_mut() else {
            return Ok(());
        };
        match item {
            Some(Ok(message)) => {
                // More messages than asked for cannot happen; one would be left for
                // redelivery.
                if let Some(permit) = reserved.pop() {
                    let since = *sent;
                    self.ready_since = Some(self.ready_since.map_or(since, |o| o.min(since)));
                    self.ready.push_back(Waiting {
                        message,
                        permit,
                        since,
                    });
                }
                Ok(())
            }
            Some(Err(e)) => {
                self.batch = None;
                let text = e.to_string();
                if text.contains("Consumer Deleted") || text.contains("consumer deleted") {
                    return Err(MessagingError::NotFound(format!(
                        "the consumer of queue {} was deleted",
                        self.queue.queue
                    )));
                }
                tracing::warn!(backend = BACKEND, queue = %self.queue.queue, error = %text, "pull failed; pulling again");
                Ok(())
            }
            None => {
                // Expired or complete: unused reserved permits go back.
                self.batch = None;
                Ok(())
            }
        }
    }

    /// Moves what the pull request has already brought into `ready`.
    fn receive_ready(&mut self) -> Result<()> {
        while let Some((batch, _, _)) = self.batch.as_mut() {
            match batch.next().now_or_never() {
                Some(item) => self.receive(item)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Restarts the `ack_wait` clock of `handed` and of the waiting messages whose clock
    /// has run longer than [`EXTEND_AFTER`] (in-progress acks, sent in the background so
    /// that `next()` stays cancel-safe). Returns the handed message's ack in flight, which
    /// its settle waits for: an in-progress ack arriving after a delayed nak would restart
    /// the whole ack_wait instead of the delay.
    fn extend(&mut self, handed: &mut Waiting) -> Option<tokio::task::JoinHandle<()>> {
        let now = Instant::now();
        // The waiting messages are checked only when the oldest clock among them is due:
        // one comparison per hand-out, not one per message waiting (a prefetch of 256).
        if self
            .ready_since
            .is_some_and(|oldest| now.duration_since(oldest) > EXTEND_AFTER)
        {
            for waiting in &mut self.ready {
                progress(waiting, now);
            }
            self.ready_since = (!self.ready.is_empty()).then_some(now);
        }
        (now.duration_since(handed.since) > EXTEND_AFTER).then(|| progress(handed, now))
    }

    /// The delivery of `waiting`, or `None` when it was dead-lettered at receipt.
    async fn deliver(
        &mut self,
        waiting: Waiting,
        progress: Option<tokio::task::JoinHandle<()>>,
    ) -> Result<Option<Delivery>> {
        let Waiting {
            message, permit, ..
        } = waiting;
        let info = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence, info.published),
            Err(e) => {
                tracing::warn!(backend = BACKEND, queue = %self.queue.queue, error = %e, "not a JetStream message; ignored");
                return Ok(None);
            }
        };
        let (delivered, sequence, published) = info;
        let deferred = i64::from(self.queue.deferrals.of(sequence));
        let attempt = u32::try_from(delivered.saturating_sub(deferred).max(1)).unwrap_or(u32::MAX);
        let message_result = envelope_of(
            &message,
            &self.queue.queue,
            sequence,
            Some(system_time(published)),
            self.queue.default_kind.as_deref(),
        );
        if attempt > self.queue.max_deliveries {
            // Its consumers died (or timed out) on every allowed delivery: it never
            // goes out again.
            let reason = format!(
                "delivered {} times without being settled (max_deliveries {})",
                attempt - 1,
                self.queue.max_deliveries
            );
            let envelope = message_result
                .as_ref()
                .ok()
                .map(|e| (e.id, e.kind.as_str()));
            self.queue
                .dead_letter(&message, &reason, attempt - 1, envelope)
                .await?;
            self.queue.deferrals.forget(sequence);
            self.dead_lettered.increment(1);
            drop(permit);
            return Ok(None);
        }
        let envelope = message_result.as_ref().ok().map(|e| (e.id, e.kind.clone()));
        let settle = NatsSettle {
            queue: self.queue.clone(),
            message,
            sequence,
            attempt,
            envelope,
            progress,
            _permit: permit,
        };
        Ok(Some(Delivery::new(
            message_result,
            attempt,
            self.queue.max_deliveries,
            Box::new(settle),
        )))
    }
}

#[async_trait]
impl QueueConsumer for NatsQueueConsumer {
    fn count_dead_letters(&mut self, counter: metrics::Counter) {
        self.dead_lettered = counter;
    }

    async fn next(&mut self) -> Result<Delivery> {
        loop {
            self.receive_ready()?;
            if let Some(mut waiting) = self.ready.pop_front() {
                if self.ready.is_empty() {
                    self.ready_since = None;
                }
                let progress = self.extend(&mut waiting);
                match self.deliver(waiting, progress).await? {
                    Some(delivery) => return Ok(delivery),
                    None => continue,
                }
            }
            if self.batch.is_none() {
                self.start_batch().await?;
            }
            let Some((batch, _, _)) = self.batch.as_mut() else {
                continue;
            };
            let item = batch.next().await;
            let failed = matches!(item, Some(Err(_)));
            self.receive(item)?;
            if failed {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for NatsQueueConsumer {
    fn drop(&mut self) {
        // Messages the server already sent for our pull request but nobody saw: give
        // them back now instead of after `ack_wait`.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.ready_since = None;
        let mut waiting: Vec<Message> = self.ready.drain(..).map(|w| w.message).collect();
        if let Some((mut batch, _, _)) = self.batch.take() {
            while let Some(Some(Ok(message))) = batch.next().now_or_never() {
                waiting.push(message);
            }
        }
        for message in waiting {
            handle.spawn(async move {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}

struct NatsSettle {
    queue: Arc<QueueCtx>,
    message: Message,
    /// Its stream sequence (the key of its [`Deferrals`]).
    sequence: u64,
    attempt: u32,
    envelope: Option<(Uuid, String)>,
    /// The in-progress ack sent when it was handed out, if still on its way.
    progress: Option<tokio::task::JoinHandle<()>>,
    /// Released when the delivery is settled (or dropped): the consumer may pull again.
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Settle for NatsSettle {
    async fn settle(mut self: Box<Self>, outcome: Outcome) -> Result<()> {
        if let Some(progress) = self.progress.take() {
            let _ = progress.await;
        }
        let deferrals = &self.queue.deferrals;
        // Recorded before the `Nak` goes (its redelivery must find it), taken back if it
        // does not.
        let mut deferred = false;
        let kind = match outcome {
            Outcome::Ack => AckKind::Ack,
            Outcome::Requeue => AckKind::Nak(None),
            Outcome::RetryAfter(delay) => AckKind::Nak(Some(delay)),
            Outcome::Defer(delay) => {
                deferred = deferrals.add(self.sequence);
                AckKind::Nak(Some(delay))
            }
            Outcome::Reject(reason) => {
                let envelope = self
                    .envelope
                    .as_ref()
                    .map(|(id, kind)| (*id, kind.as_str()));
                self.queue
                    .dead_letter(&self.message, &reason, self.attempt, envelope)
                    .await?;
                deferrals.forget(self.sequence);
                return Ok(());
            }
        };
        let acked = matches!(kind, AckKind::Ack);
        let sent = self
            .message
            .ack_with(kind)
            .await
            .map_err(|e| MessagingError::unavailable(BACKEND, e));
        match (&sent, acked, deferred) {
            (Ok(()), true, _) => deferrals.forget(self.sequence),
            (Err(_), _, true) => deferrals.undo(self.sequence),
            _ => {}
        }
        sent
    }
}
