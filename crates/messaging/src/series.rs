//! Every messaging metric: its name (one constant each, here) and where it is counted —
//! one decorator around any backend ([`Broker::for_service`]), so every backend reports
//! the same series with the same labels: `service` (who published or consumed), `backend`,
//! and `queue`, or `stream` and `group`. Backends count nothing themselves; what only a
//! backend can know reaches the decorator through the shapes' own return values
//! ([`Published`]'s duplicates, [`QueueConsumer::count_dead_letters`]).
//!
//! The gauges (`QUEUE_DEPTH`, `CONSUMER_LAG`) are sampled by the service that owns the
//! channel (`observe`); the outbox's series are its relay's (`outbox`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Label};

use crate::queue::{DeadLetter, Delivery, Outcome, QueueOptions, QueueStats, Settle};
use crate::stream::{GroupLag, StartFrom, StreamEvent, StreamOptions};
use crate::{
    Broker, Commit, Envelope, EventStream, Published, QueueConsumer, Result, StreamConsumer,
    WorkQueue,
};

/// Messages a backend stored, by queue or stream.
pub const PUBLISHED: &str = "brigade_messaging_published_total";
/// Publishes the backend dropped as duplicates of an id it already held.
pub const DUPLICATES: &str = "brigade_messaging_duplicates_total";
/// Publishes that failed (the backend did not take responsibility for the message).
pub const PUBLISH_FAILURES: &str = "brigade_messaging_publish_failures_total";
/// Deliveries handed to a consumer, by queue, or by stream and group.
pub const DELIVERED: &str = "brigade_messaging_delivered_total";
/// Deliveries that were not the message's first (attempt > 1).
pub const REDELIVERED: &str = "brigade_messaging_redelivered_total";
/// Settled deliveries, by outcome: `ack`, `requeue`, `retry`, `defer`, `reject` (queues);
/// `commit`, `retry` (streams).
pub const SETTLED: &str = "brigade_messaging_settled_total";
/// Messages moved to a queue's dead-letter queue: rejected, out of attempts, or
/// delivered `max_deliveries` times to consumers that went away.
pub const DEAD_LETTERED: &str = "brigade_messaging_dead_lettered_total";
/// Settles that failed (the message comes back: nothing is lost).
pub const SETTLE_FAILURES: &str = "brigade_messaging_settle_failures_total";
/// Dead letters moved back onto their queue.
pub const REDRIVEN: &str = "brigade_messaging_redriven_total";
/// Messages in a work queue, by `state`: `ready`, `in_flight`, `dead`.
pub const QUEUE_DEPTH: &str = "brigade_messaging_queue_depth";
/// Events on a stream a group has not committed yet.
pub const CONSUMER_LAG: &str = "brigade_messaging_consumer_lag";
/// Outbox rows the relay published, by service.
pub const OUTBOX_PUBLISHED: &str = "brigade_outbox_published_total";
/// Relay passes that stopped at a failed publish, by service.
pub const OUTBOX_PUBLISH_FAILURES: &str = "brigade_outbox_publish_failures_total";
/// Outbox rows not yet published, by service.
pub const OUTBOX_BACKLOG: &str = "brigade_outbox_backlog";
/// Operations per commit of the embedded store's writer thread. Process-wide (one
/// writer per store file, shared by every service of the process): no `service` label.
pub const EMBEDDED_BATCH_SIZE: &str = "brigade_messaging_embedded_batch_size";

/// Says once what every series means.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(PUBLISHED, "Messages a backend stored, by queue or stream.");
    describe_counter!(
        DUPLICATES,
        "Publishes dropped as duplicates of an id the backend already held."
    );
    describe_counter!(PUBLISH_FAILURES, "Publishes the backend did not confirm.");
    describe_counter!(
        DELIVERED,
        "Deliveries handed to a consumer, by queue, or by stream and group."
    );
    describe_counter!(REDELIVERED, "Deliveries that were not the message's first.");
    describe_counter!(
        SETTLED,
        "Settled deliveries, by outcome: ack, requeue, retry, defer (not counted against max_deliveries), reject (queues); commit, retry (streams)."
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages moved to a dead-letter queue (rejected, out of attempts, or abandoned max_deliveries times)."
    );
    describe_counter!(
        SETTLE_FAILURES,
        "Settles that failed; the message is delivered again."
    );
    describe_counter!(REDRIVEN, "Dead letters moved back onto their queue.");
    describe_gauge!(
        QUEUE_DEPTH,
        "Messages in a work queue, by state: ready (waiting, including retry delays), in_flight (delivered, not yet settled), dead (in its dead-letter queue)."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Events on a stream that a consumer group has not committed yet."
    );
    describe_counter!(OUTBOX_PUBLISHED, "Outbox rows the relay published.");
    describe_counter!(
        OUTBOX_PUBLISH_FAILURES,
        "Relay passes that stopped at a failed publish."
    );
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows not yet published.");
    describe_histogram!(
        EMBEDDED_BATCH_SIZE,
        "Operations per commit of the embedded store's writer thread."
    );
}

/// The labels of one channel's series.
#[derive(Clone)]
struct Labels {
    service: &'static str,
    backend: &'static str,
}

impl Labels {
    fn queue(&self, queue: &str) -> Vec<Label> {
        vec![
            Label::new("service", self.service),
            Label::new("backend", self.backend),
            Label::new("queue", queue.to_owned()),
        ]
    }

    fn stream(&self, stream: &str) -> Vec<Label> {
        vec![
            Label::new("service", self.service),
            Label::new("backend", self.backend),
            Label::new("stream", stream.to_owned()),
        ]
    }

    fn group(&self, stream: &str, group: &str) -> Vec<Label> {
        let mut labels = self.stream(stream);
        labels.push(Label::new("group", group.to_owned()));
        labels
    }
}

fn counter(name: &'static str, labels: &[Label]) -> Counter {
    metrics::counter!(name, labels.iter())
}

fn outcome(name: &'static str, labels: &[Label], outcome: &'static str) -> Counter {
    let mut labels = labels.to_vec();
    labels.push(Label::new("outcome", outcome));
    metrics::counter!(name, labels.iter())
}

/// One channel's publish series.
struct PublishCounters {
    published: Counter,
    duplicates: Counter,
    failures: Counter,
}

impl PublishCounters {
    fn new(labels: &[Label]) -> Self {
        Self {
            published: counter(PUBLISHED, labels),
            duplicates: counter(DUPLICATES, labels),
            failures: counter(PUBLISH_FAILURES, labels),
        }
    }

    fn count(&self, result: &Result<Published>) {
        match result {
            Ok(published) => {
                self.published.increment(published.stored);
                self.duplicates.increment(published.duplicates);
            }
            Err(_) => self.failures.increment(1),
        }
    }
}

/// The publish series of each channel a broker publishes to, resolved once per channel:
/// a publish is the hot path (tens of thousands a second), and building its labels and
/// looking them up in the recorder's registry each time cost a visible share of it.
#[derive(Default)]
struct PublishSeries(std::sync::Mutex<HashMap<String, Arc<PublishCounters>>>);

impl PublishSeries {
    fn of(&self, channel: &str, labels: impl FnOnce() -> Vec<Label>) -> Arc<PublishCounters> {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(counters) = known.get(channel) {
            return Arc::clone(counters);
        }
        let counters = Arc::new(PublishCounters::new(&labels()));
        known.insert(channel.to_owned(), Arc::clone(&counters));
        counters
    }
}

impl Broker {
    /// This broker with every operation counted on `service`'s series (the names above).
    /// `server::Service::open` wraps every service's broker so; a broker used without it
    /// (the CLI, the backends' own tests) counts nothing.
    pub fn for_service(self, service: &'static str) -> Broker {
        // The process's recorder, before any counter below is resolved (a counter taken
        // before a recorder is installed counts into nothing, for good).
        telemetry::metrics::handle();
        describe();
        let labels = Labels {
            service,
            backend: self.backend,
        };
        Broker {
            backend: self.backend,
            queues: Arc::new(MeteredQueues {
                inner: self.queues,
                labels: labels.clone(),
                publishes: PublishSeries::default(),
            }),
            streams: Arc::new(MeteredStreams {
                inner: self.streams,
                labels,
                publishes: PublishSeries::default(),
            }),
        }
    }
}

struct MeteredQueues {
    inner: Arc<dyn WorkQueue>,
    labels: Labels,
    publishes: PublishSeries,
}

#[async_trait]
impl WorkQueue for MeteredQueues {
    async fn declare(&self, queue: &str, options: &QueueOptions) -> Result<()> {
        self.inner.declare(queue, options).await
    }

    async fn publish(&self, queue: &str, message: &Envelope) -> Result<Published> {
        let result = self.inner.publish(queue, message).await;
        self.publishes
            .of(queue, || self.labels.queue(queue))
            .count(&result);
        result
    }

    async fn publish_all(&self, queue: &str, messages: &[Envelope]) -> Result<Published> {
        let result = self.inner.publish_all(queue, messages).await;
        self.publishes
            .of(queue, || self.labels.queue(queue))
            .count(&result);
        result
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn QueueConsumer>> {
        let mut inner = self.inner.consume(queue, prefetch).await?;
        let labels = self.labels.queue(queue);
        inner.count_dead_letters(counter(DEAD_LETTERED, &labels));
        Ok(Box::new(MeteredQueueConsumer {
            inner,
            counters: Arc::new(QueueCounters {
                delivered: counter(DELIVERED, &labels),
                redelivered: counter(REDELIVERED, &labels),
                dead_lettered: counter(DEAD_LETTERED, &labels),
                settle_failures: counter(SETTLE_FAILURES, &labels),
                ack: outcome(SETTLED, &labels, "ack"),
                requeue: outcome(SETTLED, &labels, "requeue"),
                retry: outcome(SETTLED, &labels, "retry"),
                defer: outcome(SETTLED, &labels, "defer"),
                reject: outcome(SETTLED, &labels, "reject"),
            }),
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(queue, limit).await
    }

    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize> {
        let moved = self.inner.redrive(queue, limit).await?;
        counter(REDRIVEN, &self.labels.queue(queue)).increment(moved as u64);
        Ok(moved)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.inner.stats(queue).await
    }
}

/// One queue consumer's series, resolved once (a delivery only increments).
struct QueueCounters {
    delivered: Counter,
    redelivered: Counter,
    dead_lettered: Counter,
    settle_failures: Counter,
    ack: Counter,
    requeue: Counter,
    retry: Counter,
    defer: Counter,
    reject: Counter,
}

struct MeteredQueueConsumer {
    inner: Box<dyn QueueConsumer>,
    counters: Arc<QueueCounters>,
}

#[async_trait]
impl QueueConsumer for MeteredQueueConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        let delivery = self.inner.next().await?;
        self.counters.delivered.increment(1);
        if delivery.attempt > 1 {
            self.counters.redelivered.increment(1);
        }
        let counters = Arc::clone(&self.counters);
        Ok(delivery.map_settle(|settle| Box::new(MeteredSettle { settle, counters })))
    }
}

struct MeteredSettle {
    settle: Box<dyn Settle>,
    counters: Arc<QueueCounters>,
}

#[async_trait]
impl Settle for MeteredSettle {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<()> {
        let c = &self.counters;
        let (settled, dead) = match &outcome {
            Outcome::Ack => (&c.ack, false),
            Outcome::Requeue => (&c.requeue, false),
            Outcome::RetryAfter(_) => (&c.retry, false),
            Outcome::Defer(_) => (&c.defer, false),
            Outcome::Reject(_) => (&c.reject, true),
        };
        let result = self.settle.settle(outcome).await;
        match &result {
            Ok(()) => {
                settled.increment(1);
                if dead {
                    c.dead_lettered.increment(1);
                }
            }
            Err(_) => c.settle_failures.increment(1),
        }
        result
    }
}

struct MeteredStreams {
    inner: Arc<dyn EventStream>,
    labels: Labels,
    publishes: PublishSeries,
}

#[async_trait]
impl EventStream for MeteredStreams {
    async fn declare(&self, stream: &str, options: &StreamOptions) -> Result<()> {
        self.inner.declare(stream, options).await
    }

    async fn publish(&self, stream: &str, event: &Envelope) -> Result<Published> {
        let result = self.inner.publish(stream, event).await;
        self.publishes
            .of(stream, || self.labels.stream(stream))
            .count(&result);
        result
    }

    async fn publish_all(&self, stream: &str, events: &[Envelope]) -> Result<Published> {
        let result = self.inner.publish_all(stream, events).await;
        self.publishes
            .of(stream, || self.labels.stream(stream))
            .count(&result);
        result
    }

    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn StreamConsumer>> {
        let inner = self.inner.subscribe(stream, group, start).await?;
        let labels = self.labels.group(stream, group);
        Ok(Box::new(MeteredStreamConsumer {
            inner,
            counters: Arc::new(StreamCounters {
                delivered: counter(DELIVERED, &labels),
                redelivered: counter(REDELIVERED, &labels),
                settle_failures: counter(SETTLE_FAILURES, &labels),
                commit: outcome(SETTLED, &labels, "commit"),
                retry: outcome(SETTLED, &labels, "retry"),
            }),
        }))
    }

    async fn reset(&self, stream: &str, group: &str, to: StartFrom) -> Result<()> {
        self.inner.reset(stream, group, to).await
    }

    async fn lag(&self, stream: &str, group: &str) -> Result<GroupLag> {
        self.inner.lag(stream, group).await
    }
}

struct StreamCounters {
    delivered: Counter,
    redelivered: Counter,
    settle_failures: Counter,
    commit: Counter,
    retry: Counter,
}

struct MeteredStreamConsumer {
    inner: Box<dyn StreamConsumer>,
    counters: Arc<StreamCounters>,
}

#[async_trait]
impl StreamConsumer for MeteredStreamConsumer {
    async fn next(&mut self) -> Result<StreamEvent> {
        let event = self.inner.next().await?;
        self.counters.delivered.increment(1);
        if event.attempt > 1 {
            self.counters.redelivered.increment(1);
        }
        let counters = Arc::clone(&self.counters);
        Ok(event.map_settle(|settle| Box::new(MeteredCommit { settle, counters })))
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.inner.close().await
    }
}

struct MeteredCommit {
    settle: Box<dyn Commit>,
    counters: Arc<StreamCounters>,
}

#[async_trait]
impl Commit for MeteredCommit {
    async fn settle(self: Box<Self>, retry_after: Option<Duration>) -> Result<()> {
        let settled = match retry_after {
            None => &self.counters.commit,
            Some(_) => &self.counters.retry,
        };
        let result = self.settle.settle(retry_after).await;
        match &result {
            Ok(()) => settled.increment(1),
            Err(_) => self.counters.settle_failures.increment(1),
        }
        result
    }
}
