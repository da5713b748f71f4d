//! Event streams on Kafka topics and consumer groups (see the module doc of `kafka`).

use crate::Published;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    BACKEND, Shared, blocking, check_name, derived_id, kafka_error, millis, offset_of, position_of,
};
use crate::envelope::{Envelope, Malformed, WireDefaults, system_time_from_millis};
use crate::error::{MessagingError, Result};
use crate::partition_of;
use crate::stream::{Commit, EventStream, GroupLag, StartFrom, StreamEvent, StreamOptions};

/// (stream, group).
type GroupKey = (String, String);

/// The event-stream half of the Kafka broker.
pub struct KafkaStreams {
    shared: Arc<Shared>,
    producer: FutureProducer,
    /// Metadata and watermarks (a consumer-type client: it never auto-creates topics).
    meta: Arc<Result<BaseConsumer>>,
    /// Partition counts already looked up, so publishing costs no extra request.
    partitions: RwLock<HashMap<String, u16>>,
    /// This broker's live group members, by (stream, group): `reset` may move a group
    /// whose only active members are these.
    members: Mutex<HashMap<GroupKey, Vec<Weak<Member>>>>,
}

impl KafkaStreams {
    pub(crate) fn new(shared: Arc<Shared>, producer: FutureProducer) -> Self {
        let meta = shared
            .client_config()
            .set("allow.auto.create.topics", "false")
            .create::<BaseConsumer>()
            .map_err(|e| kafka_error("creating the metadata client", &e));
        Self {
            shared,
            producer,
            meta: Arc::new(meta),
            partitions: RwLock::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
        }
    }

    fn meta(&self) -> Result<Arc<Result<BaseConsumer>>> {
        match self.meta.as_ref() {
            Ok(_) => Ok(self.meta.clone()),
            Err(e) => Err(MessagingError::backend(BACKEND, e)),
        }
    }

    async fn partitions_of(&self, topic: &str) -> Result<u16> {
        check_name("stream name", topic)?;
        if let Some(n) = self
            .partitions
            .read()
            .ok()
            .and_then(|m| m.get(topic).copied())
        {
            return Ok(n);
        }
        let meta = self.meta()?;
        let timeout = self.shared.publish_timeout;
        let name = topic.to_owned();
        let n = blocking(move || -> Result<u16> {
            let consumer = meta
                .as_ref()
                .as_ref()
                .map_err(|e| MessagingError::backend(BACKEND, e))?;
            let metadata = consumer
                .fetch_metadata(Some(&name), timeout)
                .map_err(|e| kafka_error(format!("reading the metadata of {name}"), &e))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .filter(|t| t.error().is_none() && !t.partitions().is_empty());
            match found {
                Some(t) => Ok(u16::try_from(t.partitions().len()).unwrap_or(u16::MAX)),
                None => Err(MessagingError::NotFound(format!(
                    "stream {name} is not declared (no such Kafka topic)"
                ))),
            }
        })
        .await??;
        if let Ok(mut map) = self.partitions.write() {
            map.insert(topic.to_owned(), n);
        }
        Ok(n)
    }

    /// Waits (up to the publish timeout) until every partition of a new topic has a
    /// leader, so what follows `declare` (publish, watermarks) finds it. A topic still
    /// not ready then is only logged: the calls after retry on their own.
    async fn await_leaders(&self, topic: &str, partitions: u16) -> Result<()> {
        let meta = self.meta()?;
        let timeout = self.shared.publish_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (m, name) = (meta.clone(), topic.to_owned());
            let ready = blocking(move || {
                let Ok(consumer) = m.as_ref().as_ref() else {
                    return false;
                };
                consumer
                    .fetch_metadata(Some(&name), timeout)
                    .ok()
                    .and_then(|md| {
                        md.topics().iter().find(|t| t.name() == name).map(|t| {
                            t.error().is_none()
                                && t.partitions().len() == usize::from(partitions)
                                && t.partitions()
                                    .iter()
                                    .all(|p| p.error().is_none() && p.leader() >= 0)
                        })
                    })
                    .unwrap_or(false)
            })
            .await?;
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    backend = BACKEND,
                    stream = topic,
                    "the new topic has no leader yet"
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of `group` that does not join it: reads and commits its offsets (the
    /// latter only while the group has no active member).
    fn group_client(&self, group: &str) -> Result<BaseConsumer> {
        self.shared
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            .create::<BaseConsumer>()
            .map_err(|e| kafka_error(format!("creating a client of group {group}"), &e))
    }

    /// The offset each partition starts at for `start`, clamped to what is retained.
    async fn start_offsets(
        &self,
        topic: &str,
        partitions: u16,
        start: StartFrom,
    ) -> Result<HashMap<i32, i64>> {
        let meta = self.meta()?;
        let timeout = self.shared.publish_timeout;
        let topic = topic.to_owned();
        blocking(move || -> Result<HashMap<i32, i64>> {
            let consumer = meta
                .as_ref()
                .as_ref()
                .map_err(|e| MessagingError::backend(BACKEND, e))?;
            let mut out = HashMap::new();
            let mut marks = HashMap::new();
            for p in 0..partitions {
                let p = i32::from(p);
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map_err(|e| kafka_error(format!("reading the offsets of {topic}"), &e))?;
                marks.insert(p, (low, high));
            }
            let by_time = match start {
                StartFrom::Time(at) => {
                    let ms = i64::try_from(
                        at.duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis(),
                    )
                    .unwrap_or(i64::MAX);
                    let mut tpl = TopicPartitionList::new();
                    for p in 0..partitions {
                        tpl.add_partition_offset(&topic, i32::from(p), Offset::Offset(ms))
                            .map_err(|e| kafka_error("building an offset list", &e))?;
                    }
                    let found = consumer
                        .offsets_for_times(tpl, timeout)
                        .map_err(|e| kafka_error(format!("looking up {topic} by time"), &e))?;
                    found
                        .elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) => Some((e.partition(), o)),
                            _ => None,
                        })
                        .collect::<HashMap<_, _>>()
                }
                _ => HashMap::new(),
            };
            for (&p, &(low, high)) in &marks {
                let offset = match start {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                    StartFrom::Position(n) => {
                        let partition = u16::try_from(p).unwrap_or(0);
                        i64::try_from(offset_of(n, partition, partitions)).unwrap_or(i64::MAX)
                    }
                    // No record at or after the time: the partition starts at its end.
                    StartFrom::Time(_) => by_time.get(&p).copied().unwrap_or(high),
                };
                out.insert(p, offset.clamp(low, high.max(low)));
            }
            Ok(out)
        })
        .await?
    }

    /// This broker's live members of `group` on `topic`.
    fn local_members(&self, topic: &str, group: &str) -> Vec<Arc<Member>> {
        let Ok(mut map) = self.members.lock() else {
            return Vec::new();
        };
        let key = (topic.to_owned(), group.to_owned());
        let live: Vec<Arc<Member>> = map
            .get(&key)
            .map(|v| v.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        map.insert(key, live.iter().map(Arc::downgrade).collect());
        live
    }
}

fn offsets_list(topic: &str, offsets: &HashMap<i32, i64>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .map_err(|e| kafka_error("building an offset list", &e))?;
    }
    Ok(tpl)
}

/// The committed offset of each partition of `topic` for the client's group
/// (`None` where the group never committed).
fn committed(
    client: &BaseConsumer,
    topic: &str,
    partitions: u16,
    timeout: Duration,
) -> Result<HashMap<i32, Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, i32::from(p));
    }
    let got = client
        .committed_offsets(tpl, timeout)
        .map_err(|e| kafka_error(format!("reading the committed offsets on {topic}"), &e))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), offset)
        })
        .collect())
}

#[async_trait]
impl EventStream for KafkaStreams {
    async fn declare(&self, name: &str, options: &StreamOptions) -> Result<()> {
        check_name("stream name", name)?;
        let partitions = options.partitions.max(1);
        let admin: AdminClient<DefaultClientContext> = self
            .shared
            .client_config()
            .create()
            .map_err(|e| kafka_error("creating the admin client", &e))?;
        let retention = millis(options.retention).to_string();
        let topic = NewTopic::new(name, i32::from(partitions), TopicReplication::Fixed(-1))
            .set("retention.ms", &retention);
        let opts = AdminOptions::new()
            .request_timeout(Some(self.shared.publish_timeout))
            .operation_timeout(Some(self.shared.publish_timeout));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .map_err(|e| kafka_error(format!("declaring stream {name}"), &e))?;
        for result in results {
            match result {
                Ok(_) => {
                    self.await_leaders(name, partitions).await?;
                    if let Ok(mut map) = self.partitions.write() {
                        map.insert(name.to_owned(), partitions);
                    }
                    tracing::info!(
                        backend = BACKEND,
                        stream = name,
                        partitions,
                        "topic created"
                    );
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    let existing = self.partitions_of(name).await?;
                    if existing != partitions {
                        tracing::warn!(
                            backend = BACKEND,
                            stream = name,
                            existing,
                            wanted = partitions,
                            "the topic exists with another partition count; keeping it"
                        );
                    }
                }
                Err((_, code)) => {
                    return Err(MessagingError::backend(
                        BACKEND,
                        format!("declaring stream {name}: {code}"),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, name: &str, event: &Envelope) -> Result<Published> {
        let partitions = self.partitions_of(name).await?;
        let routing = event.key.clone().unwrap_or_else(|| event.id.to_string());
        let partition = partition_of(&routing, partitions);
        let mut headers = OwnedHeaders::new();
        for (header, value) in event.wire_headers() {
            headers = headers.insert(Header {
                key: header,
                value: Some(value.as_str()),
            });
        }
        let body = event.body();
        let mut record = FutureRecord::<str, [u8]>::to(name)
            .partition(i32::from(partition))
            .payload(&body)
            .headers(headers);
        if let Some(key) = event.key.as_deref() {
            record = record.key(key);
        }
        self.producer
            .send(record, self.shared.publish_timeout)
            .await
            .map_err(|(e, _)| match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageTimedOut) => MessagingError::Timeout {
                    what: format!("publishing to {name} (no delivery report)"),
                    after: self.shared.publish_timeout,
                },
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                ) => MessagingError::NotFound(format!("stream {name} is not declared")),
                _ => MessagingError::NotConfirmed {
                    backend: BACKEND,
                    reason: e.to_string(),
                },
            })?;
        // Kafka without an idempotent transactional producer does not de-duplicate ids.
        Ok(Published::one(false))
    }

    async fn subscribe(
        &self,
        name: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn crate::stream::StreamConsumer>> {
        check_name("group name", group)?;
        let partitions = self.partitions_of(name).await?;
        // A new group starts where `start` says: commit that before joining.
        let client = self.group_client(group)?;
        let timeout = self.shared.publish_timeout;
        let topic = name.to_owned();
        let (client, known) = blocking(move || {
            let known = committed(&client, &topic, partitions, timeout);
            (client, known)
        })
        .await?;
        let known = known?;
        if known.values().all(Option::is_none) {
            let offsets = self.start_offsets(name, partitions, start).await?;
            let tpl = offsets_list(name, &offsets)?;
            let group_name = group.to_owned();
            blocking(move || client.commit(&tpl, CommitMode::Sync))
                .await?
                .map_err(|e| kafka_error(format!("starting group {group_name}"), &e))?;
            tracing::info!(backend = BACKEND, stream = name, group, start = ?start, "group created");
        }

        let state = Arc::new(Mutex::new(MemberState::default()));
        let consumer: StreamConsumer<MemberContext> = self
            .shared
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            // Only for offsets that retention deleted; a new group's start is committed.
            .set("auto.offset.reset", "earliest")
            .set(
                "max.poll.interval.ms",
                millis(self.shared.handler_timeout.saturating_mul(2))
                    .clamp(300_000, i32::MAX as u64)
                    .to_string(),
            )
            .create_with_context(MemberContext {
                state: state.clone(),
            })
            .map_err(|e| kafka_error(format!("joining group {group}"), &e))?;
        consumer
            .subscribe(&[name])
            .map_err(|e| kafka_error(format!("subscribing group {group} to {name}"), &e))?;
        let member = Arc::new(Member {
            consumer,
            topic: name.to_owned(),
            partitions,
            state,
            wake: tokio::sync::Notify::new(),
            timeout,
        });
        if let Ok(mut map) = self.members.lock() {
            map.entry((name.to_owned(), group.to_owned()))
                .or_default()
                .push(Arc::downgrade(&member));
        }
        Ok(Box::new(KafkaStreamConsumer {
            member: Some(member),
        }))
    }

    /// Replay. Kafka takes new offsets for a group from outside it only while the group
    /// has no active member; so this works on an inactive group, or when every active
    /// member is one of this broker's consumers (they commit and seek), and fails with
    /// `Invalid` otherwise.
    async fn reset(&self, name: &str, group: &str, to: StartFrom) -> Result<()> {
        check_name("group name", group)?;
        let partitions = self.partitions_of(name).await?;
        let offsets = self.start_offsets(name, partitions, to).await?;
        let tpl = offsets_list(name, &offsets)?;
        let local = self.local_members(name, group);
        let client = self.group_client(group)?;
        let timeout = self.shared.publish_timeout;
        let group_name = group.to_owned();
        let active = blocking(move || {
            client
                .fetch_group_list(Some(&group_name), timeout)
                .map(|list| {
                    list.groups()
                        .iter()
                        .find(|g| g.name() == group_name)
                        .map_or(0, |g| g.members().len())
                })
                .map_err(|e| kafka_error(format!("describing group {group_name}"), &e))
                .map(|n| (client, n))
        })
        .await??;
        let (client, active) = active;
        if active > local.len() {
            return Err(MessagingError::Invalid {
                what: "reset",
                reason: format!(
                    "Kafka only resets an inactive consumer group: group {group} has {active} active member(s), {} of them in this process; stop the others first",
                    local.len()
                ),
            });
        }
        let group_name = group.to_owned();
        let committer = local.first().cloned();
        blocking(move || match (&committer, active) {
            (Some(member), n) if n > 0 => member.consumer.commit(&tpl, CommitMode::Sync),
            _ => client.commit(&tpl, CommitMode::Sync),
        })
        .await?
        .map_err(|e| kafka_error(format!("resetting group {group_name}"), &e))?;
        for member in &local {
            if let Ok(mut state) = member.state.lock() {
                state.reset = Some(offsets.clone());
            }
            member.wake.notify_one();
        }
        tracing::info!(backend = BACKEND, stream = name, group, to = ?to, "group reset");
        Ok(())
    }

    async fn lag(&self, name: &str, group: &str) -> Result<GroupLag> {
        check_name("group name", group)?;
        let partitions = self.partitions_of(name).await?;
        let client = self.group_client(group)?;
        let meta = self.meta()?;
        let timeout = self.shared.publish_timeout;
        let topic = name.to_owned();
        let group_name = group.to_owned();
        let lag = blocking(move || -> Result<u64> {
            let known = committed(&client, &topic, partitions, timeout)?;
            if known.values().all(Option::is_none) {
                return Err(MessagingError::NotFound(format!(
                    "group {group_name} of stream {topic} does not exist"
                )));
            }
            let consumer = meta
                .as_ref()
                .as_ref()
                .map_err(|e| MessagingError::backend(BACKEND, e))?;
            let mut lag = 0_u64;
            for (p, offset) in known {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map_err(|e| kafka_error(format!("reading the offsets of {topic}"), &e))?;
                let from = offset.unwrap_or(low).max(low);
                lag += u64::try_from(high - from).unwrap_or(0);
            }
            Ok(lag)
        })
        .await??;
        Ok(GroupLag { lag })
    }
}

/// Events of one partition a member holds while an earlier one is out, at most: past
/// it the partition is paused until the member catches up.
const MAX_WAITING: usize = 256;

/// What a member knows about its partitions.
#[derive(Default)]
struct MemberState {
    /// Bumped by every rebalance and reset: events handed out before cannot commit.
    generation: u64,
    /// Partition → the offset of the event handed out and not settled: one event of a
    /// partition is out at a time, so order per key holds.
    busy: HashMap<i32, i64>,
    /// Events received for a busy partition, in order, waiting for their turn. Kept
    /// instead of pausing the partition at every hand-out: a paused partition leaves
    /// the broker's fetch, and once resumed waits out the fetch in flight for the other
    /// partitions (`fetch.wait.max.ms`), which capped a busy partition at two events a
    /// second.
    waiting: HashMap<i32, VecDeque<OwnedMessage>>,
    /// Partitions paused because their `waiting` is full.
    paused: HashSet<i32>,
    /// Partition → the offset a rewind sought it back to: until that event comes,
    /// anything else received for the partition was fetched before the seek (stale,
    /// and fetched again after it) and is dropped.
    rewound: HashMap<i32, i64>,
    /// (partition, offset) → deliveries inside this member.
    attempts: HashMap<(i32, i64), u32>,
    /// Offsets a `reset` asks this member to seek its partitions to.
    reset: Option<HashMap<i32, i64>>,
}

impl MemberState {
    fn new_generation(&mut self) {
        self.generation += 1;
        self.busy.clear();
        self.waiting.clear();
        self.paused.clear();
        self.rewound.clear();
        self.attempts.clear();
    }

    /// A waiting event whose partition is free, claimed: its generation and attempt,
    /// and whether its partition, paused while full, can fetch again.
    fn claim_waiting(&mut self) -> Option<(OwnedMessage, u64, u32, bool)> {
        let partition = *self
            .waiting
            .iter()
            .find(|(p, q)| !q.is_empty() && !self.busy.contains_key(p))?
            .0;
        let queue = self.waiting.get_mut(&partition)?;
        let message = queue.pop_front()?;
        let resume = queue.len() < MAX_WAITING / 2 && self.paused.remove(&partition);
        let (generation, attempt) = self.claim(partition, message.offset());
        Some((message, generation, attempt, resume))
    }

    /// Takes in an event received from the broker: it goes out now (claimed: its
    /// generation and attempt), or waits behind its partition's event that is out, or is
    /// dropped as fetched before a rewind. `Waits(true)` when the partition's waiting
    /// events just reached [`MAX_WAITING`]: the caller pauses it.
    fn receive(&mut self, message: OwnedMessage) -> Received {
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(&from) = self.rewound.get(&partition) {
            if offset != from {
                return Received::Stale;
            }
            self.rewound.remove(&partition);
        }
        let queued = self.waiting.get(&partition).is_some_and(|q| !q.is_empty());
        if self.busy.contains_key(&partition) || queued {
            let queue = self.waiting.entry(partition).or_default();
            queue.push_back(message);
            let full = queue.len() >= MAX_WAITING && self.paused.insert(partition);
            return Received::Waits(full);
        }
        let (generation, attempt) = self.claim(partition, offset);
        Received::Out(message, generation, attempt)
    }

    /// Marks `offset` of `partition` as out; its generation and attempt.
    fn claim(&mut self, partition: i32, offset: i64) -> (u64, u32) {
        self.busy.insert(partition, offset);
        let attempt = self.attempts.entry((partition, offset)).or_insert(0);
        *attempt += 1;
        (self.generation, *attempt)
    }
}

struct MemberContext {
    state: Arc<Mutex<MemberState>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Ok(mut state) = self.state.lock() {
            state.new_generation();
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                // A partition this member paused before losing it must fetch again.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(backend = BACKEND, error = %e, "resuming assigned partitions");
                }
                tracing::debug!(
                    backend = BACKEND,
                    partitions = tpl.count(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(tpl) => {
                tracing::debug!(
                    backend = BACKEND,
                    partitions = tpl.count(),
                    "partitions revoked"
                );
            }
            Rebalance::Error(e) => {
                tracing::warn!(backend = BACKEND, error = %e, "rebalance failed");
            }
        }
    }
}

/// What became of an event received from the broker.
enum Received {
    /// It goes out: the event, its generation and attempt.
    Out(OwnedMessage, u64, u32),
    /// It waits for its partition's turn; `true` when the partition must now pause.
    Waits(bool),
    /// Fetched before a rewind: dropped (it comes again).
    Stale,
}

/// One member of a group: a joined Kafka consumer.
struct Member {
    consumer: StreamConsumer<MemberContext>,
    topic: String,
    partitions: u16,
    state: Arc<Mutex<MemberState>>,
    wake: tokio::sync::Notify,
    timeout: Duration,
}

impl Member {
    fn one(&self, partition: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        tpl
    }

    /// An event received from the broker, taken in ([`MemberState::receive`]): `Some`
    /// when it goes out now.
    async fn take(
        &self,
        received: std::result::Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    ) -> Option<(OwnedMessage, u64, u32)> {
        let message = match received {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(backend = BACKEND, stream = %self.topic, error = %e, "consumer error; going on");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return None;
            }
        };
        let partition = message.partition();
        let outcome = {
            let Ok(mut state) = self.state.lock() else {
                return None;
            };
            let outcome = state.receive(message);
            // Paused under the lock, so a rewind cannot resume it in between.
            if let Received::Waits(true) = outcome
                && let Err(e) = self.consumer.pause(&self.one(partition))
            {
                tracing::warn!(backend = BACKEND, stream = %self.topic, partition, error = %e, "cannot pause a partition");
            }
            outcome
        };
        match outcome {
            Received::Out(message, generation, attempt) => Some((message, generation, attempt)),
            Received::Waits(_) | Received::Stale => None,
        }
    }

    /// Whether the event at `out` of `partition` is still this member's, out now.
    fn holds(&self, partition: i32, out: i64, generation: u64) -> bool {
        self.state
            .lock()
            .map(|s| s.generation == generation && s.busy.get(&partition) == Some(&out))
            .unwrap_or(false)
    }

    /// The event at `out` of `partition` is done: the next one of the partition (waiting
    /// or still to come) may go out.
    fn done(&self, partition: i32, out: i64, generation: u64) {
        if let Ok(mut state) = self.state.lock()
            && state.generation == generation
            && state.busy.get(&partition) == Some(&out)
        {
            state.busy.remove(&partition);
        }
        self.wake.notify_one();
    }

    /// Hands the event at `out` of `partition` out again: the partition is read again
    /// from `out` (what waited behind it is dropped and fetched again), unless a
    /// rebalance or a reset came in between (blocking). Paused across the seek, and what
    /// arrives afterwards before `out` itself is dropped as stale, so nothing fetched
    /// around the seek is lost or overtakes `out`.
    fn rewind(&self, partition: i32, out: i64, generation: u64) {
        if !self.holds(partition, out, generation) {
            return;
        }
        if let Err(e) = self.consumer.pause(&self.one(partition)) {
            tracing::warn!(backend = BACKEND, stream = %self.topic, partition, error = %e, "cannot pause a partition");
        }
        if let Err(e) =
            self.consumer
                .seek(&self.topic, partition, Offset::Offset(out), self.timeout)
        {
            tracing::warn!(backend = BACKEND, stream = %self.topic, partition, offset = out, error = %e, "cannot seek back; the event comes again after a rebalance");
        }
        if let Ok(mut state) = self.state.lock() {
            state.busy.remove(&partition);
            state.waiting.remove(&partition);
            state.paused.remove(&partition);
            state.rewound.insert(partition, out);
        }
        if let Err(e) = self.consumer.resume(&self.one(partition)) {
            tracing::warn!(backend = BACKEND, stream = %self.topic, partition, error = %e, "cannot resume a partition");
        }
        self.wake.notify_one();
    }

    /// Seeks the assigned partitions to a reset's offsets (blocking).
    fn apply_reset(&self, offsets: &HashMap<i32, i64>) {
        if let Ok(mut state) = self.state.lock() {
            state.new_generation();
        }
        let assigned = match self.consumer.assignment() {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::warn!(backend = BACKEND, error = %e, "cannot read the assignment for a reset");
                return;
            }
        };
        for element in assigned.elements_for_topic(&self.topic) {
            let p = element.partition();
            if let Some(&offset) = offsets.get(&p)
                && let Err(e) =
                    self.consumer
                        .seek(&self.topic, p, Offset::Offset(offset), self.timeout)
            {
                tracing::warn!(backend = BACKEND, stream = %self.topic, partition = p, error = %e, "reset: cannot seek");
            }
        }
        if let Err(e) = self.consumer.resume(&assigned) {
            tracing::debug!(backend = BACKEND, error = %e, "reset: resuming partitions");
        }
    }

    fn envelope_of(&self, message: &impl Message) -> std::result::Result<Envelope, Malformed> {
        let headers: Vec<(String, String)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| {
                        Some((
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value?).into_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        Envelope::from_wire(
            message.payload().unwrap_or_default(),
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            },
            WireDefaults {
                id: Some(derived_id(
                    &self.topic,
                    message.partition(),
                    message.offset(),
                )),
                kind: None,
                key,
                occurred_at: message.timestamp().to_millis().map(system_time_from_millis),
            },
        )
    }
}

struct KafkaStreamConsumer {
    member: Option<Arc<Member>>,
}

#[async_trait]
impl crate::stream::StreamConsumer for KafkaStreamConsumer {
    async fn next(&mut self) -> Result<StreamEvent> {
        let member = self.member.clone().ok_or(MessagingError::Closed)?;
        loop {
            let reset = member.state.lock().ok().and_then(|mut s| s.reset.take());
            if let Some(offsets) = reset {
                let m = member.clone();
                blocking(move || m.apply_reset(&offsets)).await?;
            }
            // Whatever the broker has for us now, without waiting: this also keeps the
            // member polling (within `max.poll.interval.ms`) while it serves events that
            // waited.
            let now = member.consumer.recv().now_or_never();
            let taken = match now {
                Some(received) => member.take(received).await,
                None => None,
            };
            // Then an event that waited for its partition's turn, then the broker.
            let ready = match taken {
                Some(out) => Some(out),
                None => member.state.lock().ok().and_then(|mut s| s.claim_waiting()).map(
                    |(message, generation, attempt, resume)| {
                        if resume
                            && let Err(e) = member.consumer.resume(&member.one(message.partition()))
                        {
                            tracing::warn!(backend = BACKEND, stream = %member.topic, error = %e, "cannot resume a partition");
                        }
                        (message, generation, attempt)
                    },
                ),
            };
            let (message, generation, attempt) = match ready {
                Some(out) => out,
                None => {
                    let received = tokio::select! {
                        received = member.consumer.recv() => received,
                        () = member.wake.notified() => continue,
                    };
                    match member.take(received).await {
                        Some(out) => out,
                        None => continue,
                    }
                }
            };
            let (partition, offset) = (message.partition(), message.offset());
            let envelope = member.envelope_of(&message);
            let p16 = u16::try_from(partition).unwrap_or(0);
            let position = position_of(u64::try_from(offset).unwrap_or(0), p16, member.partitions);
            return Ok(StreamEvent::new(
                envelope,
                p16,
                position,
                attempt,
                Box::new(KafkaCommit {
                    member: Arc::downgrade(&member),
                    partition,
                    offset,
                    generation,
                    settled: false,
                }),
            ));
        }
    }
}

impl Drop for KafkaStreamConsumer {
    fn drop(&mut self) {
        // Closing a Kafka consumer leaves the group: a blocking round trip.
        if let Some(member) = self.member.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn_blocking(move || drop(member));
        }
    }
}

struct KafkaCommit {
    member: Weak<Member>,
    partition: i32,
    offset: i64,
    generation: u64,
    settled: bool,
}

#[async_trait]
impl Commit for KafkaCommit {
    async fn settle(mut self: Box<Self>, retry_after: Option<Duration>) -> Result<()> {
        self.settled = true;
        let member = self.member.upgrade().ok_or(MessagingError::Closed)?;
        let (partition, offset, generation) = (self.partition, self.offset, self.generation);
        let current = member
            .state
            .lock()
            .map(|s| s.generation == generation && s.busy.get(&partition) == Some(&offset))
            .unwrap_or(false);
        if !current {
            tracing::debug!(backend = BACKEND, stream = %member.topic, partition, offset, "settled after a rebalance or reset: the partition's owner reads it again");
            return Ok(());
        }
        match retry_after {
            None => {
                let m = member.clone();
                let committed = blocking(move || {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&m.topic, partition, Offset::Offset(offset + 1))
                        .and_then(|()| m.consumer.commit(&tpl, CommitMode::Sync))
                })
                .await?;
                match committed {
                    Ok(()) => {
                        if let Ok(mut state) = member.state.lock() {
                            state.attempts.remove(&(partition, offset));
                        }
                        member.done(partition, offset, generation);
                        Ok(())
                    }
                    Err(e) => {
                        // Not committed: hand it out again.
                        let topic = member.topic.clone();
                        blocking(move || member.rewind(partition, offset, generation)).await?;
                        Err(kafka_error(format!("committing on {topic}"), &e))
                    }
                }
            }
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = blocking(move || member.rewind(partition, offset, generation)).await;
                });
                Ok(())
            }
        }
    }
}

impl Drop for KafkaCommit {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: hand it out again now (as `retry_after(0)`).
        let (member, partition, offset, generation) = (
            self.member.clone(),
            self.partition,
            self.offset,
            self.generation,
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || {
                if let Some(member) = member.upgrade() {
                    member.rewind(partition, offset, generation);
                }
            });
        }
    }
}
