//! The work-queue shape: one message, one consumer, acknowledged and deleted (RabbitMQ,
//! SQS). A message that keeps failing goes to the queue's dead-letter queue.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::Published;
use crate::envelope::{Envelope, Malformed};
use crate::error::Result;

/// How a queue behaves; given when it is declared (declaring is idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// A message delivered this many times without an ack goes to the dead-letter queue
    /// (reason: "delivered N times").
    pub max_deliveries: u32,
    /// The message type assumed for a message that names none (a foreign producer's).
    pub default_kind: Option<String>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_deliveries: 5,
            default_kind: None,
        }
    }
}

/// What a consumer decided about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: delete it.
    Ack,
    /// Failed: deliver it again now (to this or another consumer).
    Requeue,
    /// Failed: deliver it again, not before `delay` has passed.
    RetryAfter(Duration),
    /// Not tried: something it needs is known to be down (an open breaker, a
    /// `Retry-After`). Deliver it again, not before `delay` has passed, and do not count
    /// this delivery against `max_deliveries` — it was not the message that failed, so an
    /// outage longer than the retry budget does not dead-letter work that would succeed.
    Defer(Duration),
    /// Never going to work: straight to the dead-letter queue, with the reason.
    Reject(String),
}

/// How a backend settles one delivery. Backends implement it; consumers use [`Delivery`].
#[async_trait]
pub trait Settle: Send {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<()>;
}

/// One delivery of one message.
pub struct Delivery {
    /// The message, or why it could not be read (a consumer should [`Delivery::reject`]
    /// it with that reason).
    pub message: std::result::Result<Envelope, Malformed>,
    /// 1 for the first delivery, 2 for the first redelivery, ...
    pub attempt: u32,
    /// The queue's `max_deliveries`: at this attempt, a requeue or retry dead-letters.
    pub max_deliveries: u32,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(
        message: std::result::Result<Envelope, Malformed>,
        attempt: u32,
        max_deliveries: u32,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self {
            message,
            attempt,
            max_deliveries,
            settle,
        }
    }

    /// The same delivery settled through `wrap(its settle)`: how `series` counts settles.
    pub(crate) fn map_settle(
        mut self,
        wrap: impl FnOnce(Box<dyn Settle>) -> Box<dyn Settle>,
    ) -> Self {
        self.settle = wrap(self.settle);
        self
    }

    pub async fn ack(self) -> Result<()> {
        self.settle.settle(Outcome::Ack).await
    }

    /// Deliver again now; on the last allowed attempt this dead-letters instead.
    pub async fn nack(self) -> Result<()> {
        let outcome = self.bounded(Outcome::Requeue);
        self.settle.settle(outcome).await
    }

    /// Deliver again after `delay`; on the last allowed attempt this dead-letters instead.
    pub async fn retry_after(self, delay: Duration) -> Result<()> {
        let outcome = self.bounded(Outcome::RetryAfter(delay));
        self.settle.settle(outcome).await
    }

    /// [`retry_after`](Self::retry_after), saying why it failed: if this was the last
    /// allowed attempt, the dead letter's reason names that last failure too.
    pub async fn retry_after_because(self, delay: Duration, why: &str) -> Result<()> {
        let outcome = match self.bounded(Outcome::RetryAfter(delay)) {
            Outcome::Reject(reason) => Outcome::Reject(format!("{reason}; the last: {why}")),
            other => other,
        };
        self.settle.settle(outcome).await
    }

    /// Deliver again after `delay` without counting this delivery ([`Outcome::Defer`]):
    /// for a handler that found a dependency down. How long a message may be deferred
    /// for free is the worker's business (`WorkerOptions::max_defer`).
    pub async fn defer(self, delay: Duration) -> Result<()> {
        self.settle.settle(Outcome::Defer(delay)).await
    }

    /// Straight to the dead-letter queue.
    pub async fn reject(self, reason: impl Into<String>) -> Result<()> {
        self.settle.settle(Outcome::Reject(reason.into())).await
    }

    fn bounded(&self, outcome: Outcome) -> Outcome {
        if self.attempt >= self.max_deliveries {
            Outcome::Reject(format!(
                "delivered {} times without success (max_deliveries {})",
                self.attempt, self.max_deliveries
            ))
        } else {
            outcome
        }
    }
}

/// A dead-lettered message, as `brigade dlq list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The message id (or the backend's, for a body that was never an envelope).
    pub id: String,
    pub kind: Option<String>,
    pub reason: String,
    pub attempts: u32,
    pub dead_at: SystemTime,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// Depth of a queue, for `/metrics` and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Waiting to be delivered (including those waiting out a retry delay).
    pub ready: u64,
    /// Delivered and not yet settled.
    pub in_flight: u64,
    pub dead: u64,
}

/// Takes deliveries from one queue.
#[async_trait]
pub trait QueueConsumer: Send {
    /// The next delivery; waits until there is one. At most `prefetch` deliveries of
    /// this consumer are unsettled at a time.
    async fn next(&mut self) -> Result<Delivery>;

    /// Where to count the messages this consumer moves to the dead-letter queue on its
    /// own, the moment it does (delivered `max_deliveries` times to consumers that never
    /// settled them): `series` hands it its `DEAD_LETTERED` counter; settles it was
    /// asked for are counted there too.
    fn count_dead_letters(&mut self, _counter: metrics::Counter) {}
}

#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Creates the queue (and its dead-letter queue) if it does not exist.
    async fn declare(&self, queue: &str, options: &QueueOptions) -> Result<()>;

    /// Returns once the backend has taken responsibility for the message (publisher
    /// confirm, PubAck, committed transaction), saying whether it stored it or dropped it
    /// as a duplicate of an id it already had.
    async fn publish(&self, queue: &str, message: &Envelope) -> Result<Published>;

    /// Publishes `messages` in order, as [`WorkQueue::publish`] each (backends may
    /// override it to store a batch at once); on an error some may have gone, and
    /// publishing them again is safe (same ids).
    async fn publish_all(&self, queue: &str, messages: &[Envelope]) -> Result<Published> {
        let mut published = Published::default();
        for message in messages {
            published += self.publish(queue, message).await?;
        }
        Ok(published)
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn QueueConsumer>>;

    /// Dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Moves up to `limit` dead letters back onto `queue` with a fresh delivery count;
    /// returns how many moved.
    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize>;

    async fn stats(&self, queue: &str) -> Result<QueueStats>;
}
