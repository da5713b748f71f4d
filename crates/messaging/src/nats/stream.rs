//! Event streams on JetStream: one stream with subjects `<stream>.<partition>`, and per
//! group one durable pull consumer per partition with `max_ack_pending` 1.

use crate::Published;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{self};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Message};
use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    ACK_WAIT_MARGIN, BACKEND, Shared, api_error, boxed_not_found, check_name, envelope_headers,
    envelope_of, is_not_found, system_time,
};
use crate::envelope::Envelope;
use crate::error::{MessagingError, Result};
use crate::partition_of;
use crate::stream::{
    Commit, EventStream, GroupLag, StartFrom, StreamConsumer, StreamEvent, StreamOptions,
};

/// What `declare` records in the stream's description.
#[derive(Debug, Serialize, Deserialize)]
struct StreamMeta {
    brigade: String,
    partitions: u16,
}

/// The event-stream half of the NATS broker.
pub struct NatsStreams {
    shared: Arc<Shared>,
    /// Partition counts already looked up, so publishing costs no extra request.
    partitions: RwLock<HashMap<String, u16>>,
}

fn consumer_name(group: &str, partition: u16) -> String {
    format!("{group}-p{partition}")
}

fn deliver_policy(start: StartFrom) -> DeliverPolicy {
    match start {
        StartFrom::Earliest => DeliverPolicy::All,
        StartFrom::Latest => DeliverPolicy::New,
        StartFrom::Position(sequence) => DeliverPolicy::ByStartSequence {
            start_sequence: sequence.max(1),
        },
        StartFrom::Time(at) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(at),
        },
    }
}

impl NatsStreams {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    async fn get_stream(&self, name: &str) -> Result<stream::Stream> {
        check_name("stream name", name)?;
        self.shared
            .context
            .get_stream(name)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js) if is_not_found(&js) => {
                    MessagingError::NotFound(format!("stream {name} is not declared"))
                }
                _ => api_error(format!("looking up stream {name}"), e),
            })
    }

    async fn partitions_of(&self, name: &str) -> Result<u16> {
        if let Some(n) = self
            .partitions
            .read()
            .ok()
            .and_then(|m| m.get(name).copied())
        {
            return Ok(n);
        }
        let stream = self.get_stream(name).await?;
        let n = stream
            .cached_info()
            .config
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str::<StreamMeta>(d).ok())
            .map_or(1, |m| m.partitions.max(1));
        if let Ok(mut map) = self.partitions.write() {
            map.insert(name.to_owned(), n);
        }
        Ok(n)
    }

    fn group_config(
        &self,
        stream: &str,
        group: &str,
        partition: u16,
        start: StartFrom,
    ) -> pull::Config {
        pull::Config {
            durable_name: Some(consumer_name(group, partition)),
            filter_subject: format!("{stream}.{partition}"),
            deliver_policy: deliver_policy(start),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.shared.ack_wait,
            // One event of a partition out at a time: order per key holds across members.
            max_ack_pending: 1,
            ..Default::default()
        }
    }

    /// Creates the group's consumers that do not exist yet (an existing one keeps its
    /// position).
    async fn ensure_group(&self, stream: &str, group: &str, start: StartFrom) -> Result<u16> {
        check_name("group name", group)?;
        let partitions = self.partitions_of(stream).await?;
        let handle = self.get_stream(stream).await?;
        for partition in 0..partitions {
            let name = consumer_name(group, partition);
            match handle.get_consumer::<pull::Config>(&name).await {
                Ok(_) => continue,
                Err(e) if boxed_not_found(&e) => {}
                Err(e) => return Err(api_error(format!("looking up group {group}"), e)),
            }
            if let Err(e) = handle
                .create_consumer(self.group_config(stream, group, partition, start))
                .await
            {
                // Another member may have created it in between: then it exists.
                if handle.get_consumer::<pull::Config>(&name).await.is_err() {
                    return Err(api_error(format!("creating group {group}"), e));
                }
            }
        }
        Ok(partitions)
    }
}

#[async_trait]
impl EventStream for NatsStreams {
    async fn declare(&self, name: &str, options: &StreamOptions) -> Result<()> {
        check_name("stream name", name)?;
        let partitions = options.partitions.max(1);
        let description = serde_json::to_string(&StreamMeta {
            brigade: "stream".into(),
            partitions,
        })
        .map_err(|e| MessagingError::backend(BACKEND, e))?;
        self.shared
            .context
            .create_or_update_stream(stream::Config {
                name: name.to_owned(),
                description: Some(description),
                subjects: vec![format!("{name}.*")],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_age: options.retention,
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(format!("declaring stream {name}"), e))?;
        if let Ok(mut map) = self.partitions.write() {
            map.insert(name.to_owned(), partitions);
        }
        Ok(())
    }

    async fn publish(&self, name: &str, event: &Envelope) -> Result<Published> {
        let partitions = self.partitions_of(name).await?;
        let key = event.key.clone().unwrap_or_else(|| event.id.to_string());
        let partition = partition_of(&key, partitions);
        let duplicate = self
            .shared
            .publish_acked(
                format!("{name}.{partition}"),
                envelope_headers(event),
                event.body(),
                Some(event.id.to_string()),
            )
            .await?;
        Ok(Published::one(duplicate))
    }

    async fn subscribe(
        &self,
        name: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn StreamConsumer>> {
        let partitions = self.ensure_group(name, group, start).await?;
        let handle = self.get_stream(name).await?;
        let (tx, rx) = mpsc::channel(usize::from(partitions));
        let tasks = (0..partitions)
            .map(|partition| {
                tokio::spawn(pull_partition(
                    handle.clone(),
                    consumer_name(group, partition),
                    tx.clone(),
                    self.shared.ack_wait,
                ))
            })
            .collect();
        Ok(Box::new(NatsStreamConsumer {
            stream: name.to_owned(),
            rx,
            tasks,
        }))
    }

    /// Replay: deletes the group's consumers and creates them again at `to`. Members
    /// notice on their next pull. An event a member still holds from before the reset
    /// may be handed out once more; its commit goes to the old consumer and is lost.
    async fn reset(&self, name: &str, group: &str, to: StartFrom) -> Result<()> {
        check_name("group name", group)?;
        let partitions = self.partitions_of(name).await?;
        let handle = self.get_stream(name).await?;
        for partition in 0..partitions {
            let consumer = consumer_name(group, partition);
            if let Err(e) = handle.delete_consumer(&consumer).await {
                match e.kind() {
                    jetstream::stream::ConsumerErrorKind::JetStream(js) if is_not_found(&js) => {}
                    _ => return Err(api_error(format!("resetting group {group}"), e)),
                }
            }
            handle
                .create_consumer(self.group_config(name, group, partition, to))
                .await
                .map_err(|e| api_error(format!("resetting group {group}"), e))?;
        }
        tracing::info!(backend = BACKEND, stream = name, group, to = ?to, "group reset");
        Ok(())
    }

    async fn lag(&self, name: &str, group: &str) -> Result<GroupLag> {
        check_name("group name", group)?;
        let partitions = self.partitions_of(name).await?;
        let handle = self.get_stream(name).await?;
        let mut lag = 0;
        for partition in 0..partitions {
            let mut consumer: PullConsumer = handle
                .get_consumer(&consumer_name(group, partition))
                .await
                .map_err(|e| {
                    if boxed_not_found(&e) {
                        MessagingError::NotFound(format!(
                            "group {group} of stream {name} does not exist"
                        ))
                    } else {
                        api_error(format!("reading group {group}"), e)
                    }
                })?;
            let info = consumer
                .info()
                .await
                .map_err(|e| api_error(format!("reading group {group}"), e))?;
            lag += info.num_pending + info.num_ack_pending as u64;
        }
        Ok(GroupLag { lag })
    }
}

/// Keeps an event's `ack_wait` clock from running out while it waits for its member (the
/// member works on events of other partitions first) and while the member works on it,
/// up to `handler_timeout` after it was handed out: an in-progress ack every third of
/// `ack_wait`. Without it, an event that waited and then met a slow handler was sent to
/// another member mid-processing. Stops when dropped: the event was settled, or given up.
/// How long one pull request waits at the server before the client renews it. Short: with
/// 10 s, NATS stream tests under load (the whole binary beside two CPU hogs) saw no event
/// for 10 s in 2 of 12 runs — a retried, replayed or new group's event reached the member
/// only with a later request (suspected: a redelivery or a consumer change that the
/// waiting request missed, nats-server 2.9); with 2 s, 0 of 12.
const STREAM_PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Under half the expiry, as the client requires.
const STREAM_PULL_HEARTBEAT: Duration = Duration::from_millis(900);

struct Extender {
    task: Option<JoinHandle<()>>,
    handed_out: Arc<std::sync::OnceLock<Instant>>,
}

impl Extender {
    fn start(message: Message, ack_wait: Duration) -> Self {
        let handed_out = Arc::new(std::sync::OnceLock::<Instant>::new());
        let handler_timeout = ack_wait.saturating_sub(ACK_WAIT_MARGIN);
        let every = ack_wait / 3;
        let handed = Arc::clone(&handed_out);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if handed
                    .get()
                    .is_some_and(|at| at.elapsed() >= handler_timeout)
                {
                    return;
                }
                if message.ack_with(AckKind::Progress).await.is_err() {
                    return;
                }
            }
        });
        Self {
            task: Some(task),
            handed_out,
        }
    }

    /// Stops it and waits until it has: no in-progress ack is sent after this returns.
    async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Extender {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Pulls one partition's consumer forever, handing its events to the member; re-finds
/// the consumer after a reset deleted it. Stops when the member is gone.
async fn pull_partition(
    stream: stream::Stream,
    name: String,
    tx: mpsc::Sender<(Message, Extender)>,
    ack_wait: Duration,
) {
    loop {
        if tx.is_closed() {
            return;
        }
        let consumer: PullConsumer = match stream.get_consumer(&name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(backend = BACKEND, consumer = %name, error = %e, "partition consumer not available yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(1)
            .heartbeat(STREAM_PULL_HEARTBEAT)
            .expires(STREAM_PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(backend = BACKEND, consumer = %name, error = %e, "cannot pull; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let extender = Extender::start(message.clone(), ack_wait);
                    if let Err(mpsc::error::SendError((message, _))) =
                        tx.send((message, extender)).await
                    {
                        // The member left: give the event back at once.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(backend = BACKEND, consumer = %name, error = %e, "pull interrupted; re-joining");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                None => break,
            }
        }
    }
}

struct NatsStreamConsumer {
    stream: String,
    rx: mpsc::Receiver<(Message, Extender)>,
    tasks: Vec<JoinHandle<()>>,
}

#[async_trait]
impl StreamConsumer for NatsStreamConsumer {
    async fn next(&mut self) -> Result<StreamEvent> {
        loop {
            let (message, extender) = self.rx.recv().await.ok_or(MessagingError::Closed)?;
            let Ok(info) = message.info() else {
                continue;
            };
            let (sequence, delivered, published) =
                (info.stream_sequence, info.delivered, info.published);
            let partition = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(0);
            let envelope = envelope_of(
                &message,
                &self.stream,
                sequence,
                Some(system_time(published)),
                None,
            );
            let attempt = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
            let _ = extender.handed_out.set(Instant::now());
            return Ok(StreamEvent::new(
                envelope,
                partition,
                sequence,
                attempt,
                Box::new(NatsCommit { message, extender }),
            ));
        }
    }
}

impl Drop for NatsStreamConsumer {
    fn drop(&mut self) {
        // Closing makes the pullers stop and nak what they hold; what is already in the
        // channel is nak'd here, so other members get it now rather than after ack_wait.
        self.rx.close();
        let handle = tokio::runtime::Handle::try_current().ok();
        while let Ok((message, _)) = self.rx.try_recv() {
            if let Some(handle) = &handle {
                handle.spawn(async move {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                });
            }
        }
        let _ = &self.tasks;
    }
}

struct NatsCommit {
    message: Message,
    /// Until the event is settled.
    extender: Extender,
}

#[async_trait]
impl Commit for NatsCommit {
    async fn settle(self: Box<Self>, retry_after: Option<Duration>) -> Result<()> {
        // No in-progress ack may follow the settle: one that reached the server after a
        // delayed nak would restart the whole ack_wait instead of the delay.
        let NatsCommit { message, extender } = *self;
        extender.stop().await;
        match retry_after {
            // Confirmed by the server, so a commit that returned is the group's position.
            None => message
                .double_ack()
                .await
                .map_err(|e| MessagingError::unavailable(BACKEND, e)),
            Some(delay) => message
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| MessagingError::unavailable(BACKEND, e)),
        }
    }
}
