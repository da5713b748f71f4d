//! Work queues in the embedded store.

use crate::Published;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::envelope::Envelope;
use crate::error::{MessagingError, Result};
use crate::queue::{
    DeadLetter, Delivery, Outcome, QueueConsumer, QueueOptions, QueueStats, Settle, WorkQueue,
};

use super::writer::{answered, sql};
use super::{BACKEND, Pace, Shared, check_name, duration_ms, now_ms};

/// Most messages one claim takes (a consumer's prefetch beyond this takes several).
const MAX_CLAIM: usize = 256;

/// A message claimed for a consumer waits in its prefetch buffer while the consumer works
/// on the ones before it; its lease (`handler_timeout` + 1 s) runs from the claim. So
/// when a message is handed out after waiting longer than this, the leases of it and of
/// every message still waiting are renewed first: a handler then always has its whole
/// `handler_timeout` before another consumer may claim the message, however long it sat
/// in the buffer. (Without it, the k-th prefetched message of a slow consumer expired in
/// the buffer, another consumer claimed it, and both handled it.)
const RENEW_AFTER_MS: i64 = 500;

pub(crate) struct Queues {
    shared: Arc<Shared>,
}

impl Queues {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Stores one message unless its id was already published to `queue`.
    pub(crate) async fn insert(
        &self,
        queue: &str,
        msg_id: String,
        headers: String,
        body: Vec<u8>,
    ) -> Result<Published> {
        let q = queue.to_owned();
        let purge = self
            .shared
            .purge_due(&format!("queue:{queue}"), Duration::from_secs(60));
        let window = duration_ms(self.shared.dedup_window);
        let stored = self
            .shared
            .writer
            .call(move |conn| {
                let now = now_ms();
                if purge {
                    conn.prepare_cached(
                        "DELETE FROM queue_published WHERE queue = ?1 AND published_at < ?2",
                    )
                    .and_then(|mut s| s.execute(params![q, now.saturating_sub(window)]))
                    .map_err(sql)?;
                }
                exists(conn, &q)?;
                let fresh = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO queue_published (queue, msg_id, published_at)
                         VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![q, msg_id, now]))
                    .map_err(sql)?;
                if fresh == 0 {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "INSERT INTO queue_messages (queue, msg_id, headers, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![q, msg_id, headers, body]))
                .map_err(sql)?;
                Ok(true)
            })
            .await?;
        if stored {
            self.shared.queue_waker(queue).wake();
        }
        Ok(Published::one(!stored))
    }
}

/// The queue's options, or `NotFound`.
fn exists(conn: &Connection, queue: &str) -> Result<(u32, Option<String>)> {
    conn.prepare_cached("SELECT max_deliveries, default_kind FROM queues WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row(params![queue], |r| Ok((r.get::<_, u32>(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql)?
        .ok_or_else(|| MessagingError::NotFound(format!("queue {queue:?} is not declared")))
}

#[async_trait]
impl WorkQueue for Queues {
    async fn declare(&self, queue: &str, options: &QueueOptions) -> Result<()> {
        check_name("queue name", queue)?;
        let q = queue.to_owned();
        let options = options.clone();
        self.shared
            .writer
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO queues (name, max_deliveries, default_kind) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET max_deliveries = excluded.max_deliveries,
                                                      default_kind = excluded.default_kind",
                    params![q, options.max_deliveries.max(1), options.default_kind],
                )
                .map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn publish(&self, queue: &str, message: &Envelope) -> Result<Published> {
        self.insert(
            queue,
            message.id.to_string(),
            super::envelope_headers(message),
            message.body(),
        )
        .await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn QueueConsumer>> {
        let q = queue.to_owned();
        let (max_deliveries, default_kind) = self
            .shared
            .writer
            .call(move |conn| exists(conn, &q))
            .await?;
        let prefetch = usize::from(prefetch.max(1));
        Ok(Box::new(Consumer {
            shared: self.shared.clone(),
            queue: Arc::from(queue),
            max_deliveries,
            default_kind,
            permits: Arc::new(Semaphore::new(prefetch)),
            buffer: VecDeque::new(),
            pending: None,
            seen: 0,
            pace: Pace::default(),
            renewing: None,
            dead_lettered: metrics::Counter::noop(),
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let q = queue.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.shared
            .writer
            .call(move |conn| {
                let mut s = conn
                    .prepare_cached(
                        "SELECT msg_id, kind, reason, attempts, dead_at, body FROM dead_letters
                         WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                    )
                    .map_err(sql)?;
                let rows = s
                    .query_map(params![q, limit], |r| {
                        Ok(DeadLetter {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            reason: r.get(2)?,
                            attempts: r.get(3)?,
                            dead_at: crate::envelope::system_time_from_millis(r.get(4)?),
                            body: r.get(5)?,
                        })
                    })
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
            })
            .await
    }

    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize> {
        let q = queue.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let moved = self
            .shared
            .writer
            .call(move |conn| {
                exists(conn, &q)?;
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS redriving (seq INTEGER PRIMARY KEY)",
                    [],
                )
                .map_err(sql)?;
                conn.execute("DELETE FROM temp.redriving", [])
                    .map_err(sql)?;
                conn.execute(
                    "INSERT INTO temp.redriving (seq)
                     SELECT seq FROM dead_letters WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                    params![q, limit],
                )
                .map_err(sql)?;
                let moved = conn
                    .execute(
                        "INSERT INTO queue_messages (queue, msg_id, headers, body)
                         SELECT queue, msg_id, headers, body FROM dead_letters
                         WHERE seq IN (SELECT seq FROM temp.redriving) ORDER BY seq",
                        [],
                    )
                    .map_err(sql)?;
                conn.execute(
                    "DELETE FROM dead_letters WHERE seq IN (SELECT seq FROM temp.redriving)",
                    [],
                )
                .map_err(sql)?;
                Ok(moved)
            })
            .await?;
        if moved > 0 {
            self.shared.queue_waker(queue).wake();
            tracing::info!(backend = BACKEND, queue, moved, "dead letters re-driven");
        }
        Ok(moved)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let q = queue.to_owned();
        self.shared
            .writer
            .call(move |conn| {
                exists(conn, &q)?;
                let now = now_ms();
                let (ready, in_flight): (i64, i64) = conn
                    .query_row(
                        "SELECT
                            coalesce(sum(lease IS NULL OR visible_at <= ?2), 0),
                            coalesce(sum(lease IS NOT NULL AND visible_at > ?2), 0)
                         FROM queue_messages WHERE queue = ?1",
                        params![q, now],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(sql)?;
                let dead: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM dead_letters WHERE queue = ?1",
                        params![q],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                let n = |v: i64| u64::try_from(v).unwrap_or(0);
                Ok(QueueStats {
                    ready: n(ready),
                    in_flight: n(in_flight),
                    dead: n(dead),
                })
            })
            .await
    }
}

/// A claimed row.
struct Claimed {
    seq: i64,
    lease: i64,
    /// When its lease runs out (unix ms), unless renewed.
    leased_until: i64,
    attempts: u32,
    msg_id: String,
    headers: String,
    body: Vec<u8>,
}

struct Consumer {
    shared: Arc<Shared>,
    queue: Arc<str>,
    max_deliveries: u32,
    default_kind: Option<String>,
    /// One permit per unsettled delivery (claimed, buffered or handed out): prefetch.
    permits: Arc<Semaphore>,
    buffer: VecDeque<(Claimed, OwnedSemaphorePermit)>,
    /// A claim sent to the store and not yet answered. Kept here, not in `next()`'s
    /// future, so `next()` is cancel-safe (e.g. in a `select!`): a claim whose caller
    /// went away is still buffered.
    pending: Option<Pending>,
    /// The queue's wake generation when the pending claim began.
    seen: u64,
    /// How often to look for other processes' messages while a claim finds none.
    pace: Pace,
    /// A renewal of the buffered rows' leases sent to the store and not yet answered
    /// (kept here for cancel safety, as `pending`): whether each row is still ours, and
    /// until when.
    renewing: Option<Renewal>,
    /// Counts the messages past `max_deliveries` this consumer dead-letters on its own
    /// (given by [`QueueConsumer::count_dead_letters`]; counts nothing until then).
    dead_lettered: metrics::Counter,
}

type Pending = tokio::sync::oneshot::Receiver<Result<(Vec<Claimed>, u64)>>;
type Renewal = tokio::sync::oneshot::Receiver<Result<(Vec<bool>, i64)>>;

#[async_trait]
impl QueueConsumer for Consumer {
    fn count_dead_letters(&mut self, counter: metrics::Counter) {
        self.dead_lettered = counter;
    }

    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if let Some(renewal) = self.renewing.as_mut() {
                let answer = renewal.await;
                self.renewing = None;
                let (held, until) = answered(answer)?;
                self.renewed(&held, until);
                continue;
            }
            if let Some((row, _)) = self.buffer.front() {
                let lease_ms = duration_ms(self.shared.lease);
                if now_ms() > row.leased_until - lease_ms + RENEW_AFTER_MS {
                    self.renewing = Some(self.renew()?);
                    continue;
                }
            }
            if let Some((row, permit)) = self.buffer.pop_front() {
                return Ok(self.deliver(row, permit));
            }
            let waker = self.shared.queue_waker(&self.queue);
            if let Some(pending) = self.pending.as_mut() {
                let answer = pending.await;
                self.pending = None;
                let (rows, dead) = answered(answer)?;
                self.count_dead(dead);
                self.dead_lettered.increment(dead);
                let empty = rows.is_empty();
                for row in rows {
                    match self.permits.clone().try_acquire_owned() {
                        Ok(permit) => self.buffer.push_back((row, permit)),
                        Err(_) => release(&self.shared, &self.queue, row.seq, row.lease, true),
                    }
                }
                if empty && dead == 0 {
                    // Wait for a publish made since the claim began, or the poll.
                    waker.wait(self.seen, &mut self.pace).await;
                } else {
                    // Work, or rows dead-lettered for their delivery count: more may be
                    // waiting behind them, so claim again at once.
                    self.pace.busy();
                }
                continue;
            }
            let free = self.permits.available_permits();
            if free == 0 {
                // Everything this consumer may hold is unsettled: wait for a settle.
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| MessagingError::Closed)?;
                drop(permit);
                continue;
            }
            self.seen = waker.generation();
            self.pending = Some(self.claim(free.min(MAX_CLAIM))?);
        }
    }
}

impl Consumer {
    /// Renews the lease of every buffered row (see [`RENEW_AFTER_MS`]).
    fn renew(&self) -> Result<Renewal> {
        let rows: Vec<(i64, i64)> = self.buffer.iter().map(|(r, _)| (r.seq, r.lease)).collect();
        let lease_ms = duration_ms(self.shared.lease);
        self.shared.writer.start(move |conn| {
            let until = now_ms() + lease_ms;
            let mut s = conn
                .prepare_cached(
                    "UPDATE queue_messages SET visible_at = ?3 WHERE seq = ?1 AND lease = ?2",
                )
                .map_err(sql)?;
            let held = rows
                .iter()
                .map(|(seq, lease)| s.execute(params![seq, lease, until]).map(|n| n == 1))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            Ok((held, until))
        })
    }

    /// Applies a renewal: rows whose lease another consumer took since (it ran out before
    /// the renewal) are that consumer's now, and leave the buffer unhandled.
    fn renewed(&mut self, held: &[bool], until: i64) {
        let mut still = held.iter();
        self.buffer.retain_mut(|(row, _)| {
            let ours = still.next().copied().unwrap_or(false);
            row.leased_until = until;
            if !ours {
                tracing::info!(backend = BACKEND, queue = %self.queue, seq = row.seq, "a prefetched message's lease ran out before it was handed out; another consumer has it");
            }
            ours
        });
    }

    /// Claims up to `n` visible messages; dead-letters those past `max_deliveries`.
    fn claim(&self, n: usize) -> Result<Pending> {
        let queue = self.queue.clone();
        let lease_ms = duration_ms(self.shared.lease);
        let max = self.max_deliveries;
        let n = i64::try_from(n).unwrap_or(1);
        self.shared.writer.start(move |conn| {
                let now = now_ms();
                // A fresh token per claim: settles made under an older claim match nothing.
                let lease = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
                let mut s = conn
                    .prepare_cached(
                        "UPDATE queue_messages
                         SET attempts = attempts + 1, visible_at = ?3, lease = ?4
                         WHERE seq IN (SELECT seq FROM queue_messages
                                       WHERE queue = ?1 AND visible_at <= ?2
                                       ORDER BY visible_at, seq LIMIT ?5)
                         RETURNING seq, attempts, msg_id, headers, body",
                    )
                    .map_err(sql)?;
                let mut rows = s
                    .query_map(params![&*queue, now, now + lease_ms, lease, n], |r| {
                        Ok(Claimed {
                            seq: r.get(0)?,
                            lease,
                            leased_until: now + lease_ms,
                            attempts: r.get(1)?,
                            msg_id: r.get(2)?,
                            headers: r.get(3)?,
                            body: r.get(4)?,
                        })
                    })
                    .map_err(sql)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql)?;
                rows.sort_by_key(|r| r.seq);
                let mut dead = 0_u64;
                let mut live = Vec::with_capacity(rows.len());
                for row in rows {
                    if row.attempts > max {
                        let reason = format!(
                            "delivered {} times without being settled (max_deliveries {max}): its consumers went away",
                            row.attempts - 1
                        );
                        dead_letter(conn, row.seq, row.lease, &reason, row.attempts - 1)?;
                        dead += 1;
                    } else {
                        live.push(row);
                    }
                }
                Ok((live, dead))
        })
    }

    fn count_dead(&self, dead: u64) {
        if dead > 0 {
            tracing::warn!(backend = BACKEND, queue = %self.queue, count = dead, "messages past max_deliveries dead-lettered");
        }
    }

    fn deliver(&self, row: Claimed, permit: OwnedSemaphorePermit) -> Delivery {
        let message = super::decode(
            &row.msg_id,
            &row.headers,
            row.body,
            self.default_kind.as_deref(),
        );
        Delivery::new(
            message,
            row.attempts,
            self.max_deliveries,
            Box::new(Settlement {
                shared: self.shared.clone(),
                queue: self.queue.clone(),
                seq: row.seq,
                lease: row.lease,
                attempts: row.attempts,
                permit: Some(permit),
                settled: false,
            }),
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Claimed but never handed out: back to the queue as if never delivered.
        for (row, _permit) in self.buffer.drain(..) {
            release(&self.shared, &self.queue, row.seq, row.lease, true);
        }
        // A claim still on its way (the consumer was dropped while `next()` waited).
        if let Some(pending) = self.pending.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (shared, queue) = (self.shared.clone(), self.queue.clone());
            runtime.spawn(async move {
                if let Ok(Ok((rows, _))) = pending.await {
                    for row in rows {
                        release(&shared, &queue, row.seq, row.lease, true);
                    }
                }
            });
        }
    }
}

/// Gives a claimed message back (now visible); `undeliver` also takes back the attempt.
fn release(shared: &Arc<Shared>, queue: &Arc<str>, seq: i64, lease: i64, undeliver: bool) {
    let back = i64::from(undeliver);
    let waker = shared.queue_waker(queue);
    shared.writer.fire("release", move |conn| {
        conn.prepare_cached(
            "UPDATE queue_messages SET visible_at = 0, lease = NULL, attempts = attempts - ?3
             WHERE seq = ?1 AND lease = ?2",
        )
        .and_then(|mut s| s.execute(params![seq, lease, back]))
        .map_err(sql)?;
        waker.wake();
        Ok(())
    });
}

fn dead_letter(
    conn: &Connection,
    seq: i64,
    lease: i64,
    reason: &str,
    attempts: u32,
) -> Result<bool> {
    let moved = conn
        .prepare_cached(
            "INSERT INTO dead_letters (queue, msg_id, kind, reason, attempts, dead_at, headers, body)
             SELECT queue, msg_id, json_extract(headers, '$.\"brigade-type\"'), ?3, ?4, ?5, headers, body
             FROM queue_messages WHERE seq = ?1 AND lease = ?2",
        )
        .and_then(|mut s| s.execute(params![seq, lease, reason, attempts, now_ms()]))
        .map_err(sql)?;
    conn.prepare_cached("DELETE FROM queue_messages WHERE seq = ?1 AND lease = ?2")
        .and_then(|mut s| s.execute(params![seq, lease]))
        .map_err(sql)?;
    Ok(moved > 0)
}

struct Settlement {
    shared: Arc<Shared>,
    queue: Arc<str>,
    seq: i64,
    lease: i64,
    attempts: u32,
    /// Held until settled: frees a prefetch slot of the consumer.
    permit: Option<OwnedSemaphorePermit>,
    settled: bool,
}

#[async_trait]
impl Settle for Settlement {
    async fn settle(mut self: Box<Self>, outcome: Outcome) -> Result<()> {
        self.settled = true;
        let (seq, lease, attempts) = (self.seq, self.lease, self.attempts);
        let label = match &outcome {
            Outcome::Ack => "ack",
            Outcome::Requeue => "requeue",
            Outcome::RetryAfter(_) => "retry",
            Outcome::Defer(_) => "defer",
            Outcome::Reject(_) => "reject",
        };
        let reason = match &outcome {
            Outcome::Reject(reason) => Some(reason.clone()),
            _ => None,
        };
        let held = self
            .shared
            .writer
            .call(move |conn| {
                let changed = match outcome {
                    Outcome::Ack => conn
                        .prepare_cached("DELETE FROM queue_messages WHERE seq = ?1 AND lease = ?2")
                        .and_then(|mut s| s.execute(params![seq, lease]))
                        .map_err(sql)?,
                    Outcome::Requeue | Outcome::RetryAfter(_) | Outcome::Defer(_) => {
                        let (visible_at, uncounted) = match outcome {
                            Outcome::RetryAfter(d) => (now_ms().saturating_add(duration_ms(d)), 0),
                            // The claim counted this delivery; a deferral takes it back.
                            Outcome::Defer(d) => (now_ms().saturating_add(duration_ms(d)), 1),
                            _ => (0, 0),
                        };
                        conn.prepare_cached(
                            "UPDATE queue_messages SET visible_at = ?3, lease = NULL,
                                    attempts = attempts - ?4
                             WHERE seq = ?1 AND lease = ?2",
                        )
                        .and_then(|mut s| s.execute(params![seq, lease, visible_at, uncounted]))
                        .map_err(sql)?
                    }
                    Outcome::Reject(reason) => {
                        usize::from(dead_letter(conn, seq, lease, &reason, attempts)?)
                    }
                };
                Ok(changed > 0)
            })
            .await;
        // The prefetch slot frees whatever happened.
        self.permit.take();
        let held = held?;
        if !held {
            return Err(MessagingError::Timeout {
                what: format!(
                    "settling a message of {:?} ({label}): its lease ran out and it was redelivered",
                    &*self.queue
                ),
                after: self.shared.lease,
            });
        }
        match label {
            "ack" => {}
            "reject" => {
                tracing::warn!(backend = BACKEND, queue = %self.queue, reason = reason.as_deref().unwrap_or(""), attempts, "message dead-lettered");
            }
            _ => self.shared.queue_waker(&self.queue).wake(),
        }
        Ok(())
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped without a decision: it was delivered; deliver it again now.
            release(&self.shared, &self.queue, self.seq, self.lease, false);
        }
    }
}
