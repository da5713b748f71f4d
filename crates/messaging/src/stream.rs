//! The event-stream shape: one message, many consumer groups, retained and replayable,
//! ordered per key (Kafka, Redpanda).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::Published;
use crate::envelope::{Envelope, Malformed};
use crate::error::Result;

/// How a stream behaves; given when it is declared (declaring is idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// Events older than this are dropped.
    pub retention: Duration,
    /// Keys are spread over this many partitions; inside a group each partition is read
    /// by one consumer at a time, in order. More partitions, more consumers can share a
    /// group's work.
    pub partitions: u16,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            partitions: 4,
        }
    }
}

/// Where a group starts (when it is new, or when it is replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest event still retained.
    Earliest,
    /// Only events published from now on.
    Latest,
    /// The first event at or after this stream position (positions are the stream's
    /// sequence numbers: one counter per stream, across partitions).
    Position(u64),
    /// The first event at or after this time.
    Time(SystemTime),
}

/// One event as a group's consumer receives it.
pub struct StreamEvent {
    pub message: std::result::Result<Envelope, Malformed>,
    /// The partition the key maps to, and the event's position: the stream's sequence
    /// number, which only grows.
    pub partition: u16,
    pub position: u64,
    /// 1 for the first delivery of this event to this group, more after a nack or a
    /// consumer that died before committing.
    pub attempt: u32,
    settle: Box<dyn Commit>,
}

impl std::fmt::Debug for StreamEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEvent")
            .field("message", &self.message)
            .field("partition", &self.partition)
            .field("position", &self.position)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// How a backend commits or redelivers one event. Backends implement it.
#[async_trait]
pub trait Commit: Send {
    /// `None`: commit (the group moves past it). `Some(delay)`: deliver it again after
    /// `delay`, holding back the rest of its partition so order holds.
    async fn settle(self: Box<Self>, retry_after: Option<Duration>) -> Result<()>;
}

impl StreamEvent {
    pub fn new(
        message: std::result::Result<Envelope, Malformed>,
        partition: u16,
        position: u64,
        attempt: u32,
        settle: Box<dyn Commit>,
    ) -> Self {
        Self {
            message,
            partition,
            position,
            attempt,
            settle,
        }
    }

    /// The same event settled through `wrap(its commit)`: how `series` counts settles.
    pub(crate) fn map_settle(
        mut self,
        wrap: impl FnOnce(Box<dyn Commit>) -> Box<dyn Commit>,
    ) -> Self {
        self.settle = wrap(self.settle);
        self
    }

    /// Done: the group's position moves past this event.
    pub async fn commit(self) -> Result<()> {
        self.settle.settle(None).await
    }

    /// Not done: deliver it again after `delay` (its partition waits: order per key holds).
    pub async fn retry_after(self, delay: Duration) -> Result<()> {
        self.settle.settle(Some(delay)).await
    }
}

/// Reads a stream as one member of a group.
#[async_trait]
pub trait StreamConsumer: Send {
    async fn next(&mut self) -> Result<StreamEvent>;

    /// Leaves the group now, so the other members (or the next process in this group)
    /// take over this one's partitions at once rather than when its lease runs out.
    /// Dropping a consumer leaves too, but without waiting for the backend: a process
    /// about to exit should close instead.
    async fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// A group's progress, for `/metrics` and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupLag {
    /// Events published and not yet committed by the group, over all partitions.
    pub lag: u64,
}

#[async_trait]
pub trait EventStream: Send + Sync {
    async fn declare(&self, stream: &str, options: &StreamOptions) -> Result<()>;

    /// Appends an event; all events with the same `key` stay in publish order. Returns
    /// once the backend has stored it.
    async fn publish(&self, stream: &str, event: &Envelope) -> Result<Published>;

    /// Appends `events` in order, as [`EventStream::publish`] each. Backends that can
    /// store a batch at once (the embedded one: one commit) override it; on an error some
    /// of the events may be stored, and publishing them again is safe (same ids).
    async fn publish_all(&self, stream: &str, events: &[Envelope]) -> Result<Published> {
        let mut published = Published::default();
        for event in events {
            published += self.publish(stream, event).await?;
        }
        Ok(published)
    }

    /// Joins `group` (creating it at `start` if it is new; an existing group resumes
    /// where it committed).
    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn StreamConsumer>>;

    /// Moves `group` back (or forward) to `to`: replay. Its consumers see the change on
    /// their next read.
    async fn reset(&self, stream: &str, group: &str, to: StartFrom) -> Result<()>;

    async fn lag(&self, stream: &str, group: &str) -> Result<GroupLag>;
}
