//! Event streams in the embedded store: one log, consumer groups with per-partition
//! cursors, partitions leased to one live member at a time.

use crate::Published;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::envelope::Envelope;
use crate::error::{MessagingError, Result};
use crate::stream::{
    Commit, EventStream, GroupLag, StartFrom, StreamConsumer, StreamEvent, StreamOptions,
};

use super::writer::sql;
use super::{BACKEND, Pace, Shared, check_name, duration_ms, millis, now_ms};

/// Most events read ahead from one partition in one fetch.
const FETCH_BATCH: i64 = 256;
/// Most expired events purged in one go (the next publish purges more).
const PURGE_BATCH: i64 = 10_000;

pub(crate) struct Streams {
    shared: Arc<Shared>,
}

impl Streams {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

struct StreamRow {
    partitions: u16,
    retention_ms: i64,
    last_position: i64,
}

fn stream_row(conn: &Connection, stream: &str) -> Result<StreamRow> {
    conn.prepare_cached(
        "SELECT partitions, retention_ms, last_position FROM streams WHERE name = ?1",
    )
    .and_then(|mut s| {
        s.query_row(params![stream], |r| {
            Ok(StreamRow {
                partitions: r.get(0)?,
                retention_ms: r.get(1)?,
                last_position: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(sql)?
    .ok_or_else(|| MessagingError::NotFound(format!("stream {stream:?} is not declared")))
}

/// The cursor (last position counted as done) that `start` means.
fn start_cursor(conn: &Connection, stream: &str, row: &StreamRow, start: StartFrom) -> Result<i64> {
    Ok(match start {
        StartFrom::Earliest => 0,
        StartFrom::Latest => row.last_position,
        StartFrom::Position(p) => i64::try_from(p)
            .unwrap_or(i64::MAX)
            .saturating_sub(1)
            .max(0),
        StartFrom::Time(t) => {
            let first: Option<i64> = conn
                .query_row(
                    "SELECT min(position) FROM stream_events WHERE stream = ?1 AND published_at >= ?2",
                    params![stream, millis(t)],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            first.map_or(row.last_position, |p| p - 1)
        }
    })
}

fn purge(conn: &Connection, stream: &str, retention_ms: i64) -> Result<usize> {
    let cutoff = now_ms().saturating_sub(retention_ms);
    let oldest: Option<i64> = conn
        .prepare_cached(
            "SELECT published_at FROM stream_events WHERE stream = ?1 ORDER BY position LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![stream], |r| r.get(0)).optional())
        .map_err(sql)?;
    if oldest.is_none_or(|t| t >= cutoff) {
        return Ok(0);
    }
    conn.prepare_cached(
        "DELETE FROM stream_events WHERE stream = ?1 AND published_at < ?2 AND position IN
           (SELECT position FROM stream_events WHERE stream = ?1 ORDER BY position LIMIT ?3)",
    )
    .and_then(|mut s| s.execute(params![stream, cutoff, PURGE_BATCH]))
    .map_err(sql)
}

#[async_trait]
impl EventStream for Streams {
    async fn declare(&self, stream: &str, options: &StreamOptions) -> Result<()> {
        check_name("stream name", stream)?;
        let s = stream.to_owned();
        let partitions = options.partitions.max(1);
        let retention = duration_ms(options.retention);
        self.shared
            .writer
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO streams (name, partitions, retention_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET retention_ms = excluded.retention_ms",
                    params![s, partitions, retention],
                )
                .map_err(sql)?;
                let row = stream_row(conn, &s)?;
                if row.partitions != partitions {
                    return Err(MessagingError::Invalid {
                        what: "stream options",
                        reason: format!(
                            "stream {s:?} has {} partitions, not {partitions}; partitions cannot change",
                            row.partitions
                        ),
                    });
                }
                Ok(())
            })
            .await
    }

    async fn publish(&self, stream: &str, event: &Envelope) -> Result<Published> {
        self.publish_all(stream, std::slice::from_ref(event)).await
    }

    /// All of `events` in one transaction of the broker's writer: one commit for a batch.
    async fn publish_all(&self, stream: &str, events: &[Envelope]) -> Result<Published> {
        if events.is_empty() {
            return Ok(Published::default());
        }
        let s = stream.to_owned();
        let rows: Vec<(String, String, String, Vec<u8>)> = events
            .iter()
            .map(|event| {
                let id = event.id.to_string();
                let key = event.key.clone().unwrap_or_else(|| id.clone());
                (id, key, super::envelope_headers(event), event.body())
            })
            .collect();
        let purge_now = self
            .shared
            .purge_due(&format!("stream:{stream}"), Duration::from_secs(1));
        let (stored, purged) = self
            .shared
            .writer
            .call(move |conn| {
                let row = stream_row(conn, &s)?;
                let purged = if purge_now {
                    purge(conn, &s, row.retention_ms)?
                } else {
                    0
                };
                let mut position = row.last_position;
                let mut stored = 0_u64;
                for (id, key, headers, body) in rows {
                    let partition = crate::partition_of(&key, row.partitions);
                    let inserted = conn
                        .prepare_cached(
                            "INSERT OR IGNORE INTO stream_events
                                (stream, position, partition, msg_id, headers, body, published_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )
                        .and_then(|mut st| {
                            st.execute(params![
                                s,
                                position + 1,
                                partition,
                                id,
                                headers,
                                body,
                                now_ms()
                            ])
                        })
                        .map_err(sql)?;
                    if inserted > 0 {
                        position += 1;
                        stored += 1;
                    }
                }
                if stored > 0 {
                    conn.prepare_cached("UPDATE streams SET last_position = ?2 WHERE name = ?1")
                        .and_then(|mut st| st.execute(params![s, position]))
                        .map_err(sql)?;
                }
                Ok((stored, purged))
            })
            .await?;
        if purged > 0 {
            tracing::debug!(backend = BACKEND, stream, purged, "expired events purged");
        }
        if stored > 0 {
            self.shared.stream_waker(stream).wake();
        }
        Ok(Published {
            stored,
            duplicates: events.len() as u64 - stored,
        })
    }

    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn StreamConsumer>> {
        check_name("group name", group)?;
        let (s, g) = (stream.to_owned(), group.to_owned());
        self.shared
            .writer
            .call(move |conn| {
                let row = stream_row(conn, &s)?;
                let existing: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM group_partitions WHERE stream = ?1 AND grp = ?2",
                        params![s, g],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                if existing == 0 {
                    let cursor = start_cursor(conn, &s, &row, start)?;
                    for partition in 0..row.partitions {
                        conn.execute(
                            "INSERT INTO group_partitions (stream, grp, partition, cursor, delivered_to)
                             VALUES (?1, ?2, ?3, ?4, ?4)",
                            params![s, g, partition, cursor],
                        )
                        .map_err(sql)?;
                    }
                }
                Ok(())
            })
            .await?;
        let member: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
        let heartbeat = tokio::spawn(heartbeat(
            self.shared.clone(),
            Arc::from(stream),
            Arc::from(group),
            member.clone(),
        ));
        let resets = self.shared.reset_counter(stream, group);
        let seen_reset = resets.load(Ordering::Acquire);
        tracing::debug!(backend = BACKEND, stream, group, member = %member, "joined group");
        Ok(Box::new(Consumer {
            shared: self.shared.clone(),
            stream: Arc::from(stream),
            group: Arc::from(group),
            member,
            parts: HashMap::new(),
            seen: HashMap::new(),
            progress: Arc::default(),
            buffer: VecDeque::new(),
            resets,
            seen_reset,
            heartbeat,
            left: false,
            pace: Pace::default(),
        }))
    }

    async fn reset(&self, stream: &str, group: &str, to: StartFrom) -> Result<()> {
        let (s, g) = (stream.to_owned(), group.to_owned());
        let cursor = self
            .shared
            .writer
            .call(move |conn| {
                let row = stream_row(conn, &s)?;
                let cursor = start_cursor(conn, &s, &row, to)?;
                let changed = conn
                    .execute(
                        "UPDATE group_partitions
                         SET cursor = ?3, delivered_to = ?3, epoch = epoch + 1, head_attempt = 1,
                             not_before = 0
                         WHERE stream = ?1 AND grp = ?2",
                        params![s, g, cursor],
                    )
                    .map_err(sql)?;
                if changed == 0 {
                    // A group that never subscribed: create it at `to`.
                    for partition in 0..row.partitions {
                        conn.execute(
                            "INSERT INTO group_partitions (stream, grp, partition, cursor, delivered_to)
                             VALUES (?1, ?2, ?3, ?4, ?4)",
                            params![s, g, partition, cursor],
                        )
                        .map_err(sql)?;
                    }
                }
                Ok(cursor)
            })
            .await?;
        self.shared
            .reset_counter(stream, group)
            .fetch_add(1, Ordering::AcqRel);
        self.shared.stream_waker(stream).wake();
        tracing::info!(backend = BACKEND, stream, group, to = ?to, cursor, "group reset");
        Ok(())
    }

    async fn lag(&self, stream: &str, group: &str) -> Result<GroupLag> {
        let (s, g) = (stream.to_owned(), group.to_owned());
        self.shared
            .writer
            .call(move |conn| {
                stream_row(conn, &s)?;
                let parts: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM group_partitions WHERE stream = ?1 AND grp = ?2",
                        params![s, g],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                if parts == 0 {
                    return Err(MessagingError::NotFound(format!(
                        "group {g:?} of stream {s:?} does not exist"
                    )));
                }
                let lag: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM group_partitions g
                         JOIN stream_events e ON e.stream = g.stream AND e.partition = g.partition
                                              AND e.position > g.cursor
                         WHERE g.stream = ?1 AND g.grp = ?2",
                        params![s, g],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                Ok(GroupLag {
                    lag: u64::try_from(lag).unwrap_or(0),
                })
            })
            .await
    }
}

/// Keeps a member alive and its partitions leased while its consumer exists.
async fn heartbeat(shared: Arc<Shared>, stream: Arc<str>, group: Arc<str>, member: Arc<str>) {
    let every = (shared.lease / 3).max(Duration::from_millis(20));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let lease = duration_ms(shared.lease);
        let (s, g, m) = (stream.clone(), group.clone(), member.clone());
        let renewed = shared
            .writer
            .call(move |conn| {
                let until = now_ms() + lease;
                conn.prepare_cached(
                    "INSERT INTO group_members (stream, grp, member, alive_until) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (stream, grp, member) DO UPDATE SET alive_until = excluded.alive_until",
                )
                .and_then(|mut st| st.execute(params![&*s, &*g, &*m, until]))
                .map_err(sql)?;
                conn.prepare_cached(
                    "UPDATE group_partitions SET lease_until = ?4
                     WHERE stream = ?1 AND grp = ?2 AND owner = ?3",
                )
                .and_then(|mut st| st.execute(params![&*s, &*g, &*m, until]))
                .map_err(sql)?;
                Ok(())
            })
            .await;
        if let Err(error) = renewed {
            tracing::warn!(backend = BACKEND, stream = %stream, group = %group, error = %error, "group heartbeat failed");
        }
    }
}

/// What this member knows of a partition it owns.
#[derive(Debug, Clone, Copy)]
struct Part {
    epoch: i64,
    /// The group's cursor when this member took the partition (or saw it reset).
    start: i64,
    /// The furthest position read into the buffer.
    fetched_to: i64,
    /// The furthest position handed to the application.
    handed_to: i64,
}

/// What settles report back to their consumer.
#[derive(Default)]
struct Progress {
    /// (epoch, position) of the last commit per partition.
    committed: HashMap<u16, (i64, i64)>,
    /// Partitions to read again from their cursor (a retry, or an event dropped unsettled).
    reread: HashSet<u16>,
}

/// What this member knows of a partition it holds, kept across re-reads (a retry, an
/// event dropped unsettled) so a re-read can tell events it handed out from events it
/// only read ahead: the group's `delivered_to` counts both, and an event read ahead and
/// never handed out is still on its first delivery.
#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: i64,
    /// The group's `delivered_to` when this member took the partition: what earlier
    /// members may have handed out, which this member cannot tell apart.
    inherited: i64,
    /// The furthest position this member handed out.
    handed: i64,
}

impl Seen {
    /// Up to where events of the partition count as delivered before.
    fn delivered(&self) -> i64 {
        self.inherited.max(self.handed)
    }
}

struct Fetched {
    partition: u16,
    position: i64,
    epoch: i64,
    attempt: u32,
    msg_id: String,
    headers: String,
    body: Vec<u8>,
}

struct Owned {
    partition: u16,
    epoch: i64,
    cursor: i64,
    /// The group's `delivered_to` as this fetch found it (before reading further).
    delivered_to: i64,
}

struct Consumer {
    shared: Arc<Shared>,
    stream: Arc<str>,
    group: Arc<str>,
    member: Arc<str>,
    parts: HashMap<u16, Part>,
    /// Per partition held: what a re-read counts as delivered before ([`Seen`]).
    seen: HashMap<u16, Seen>,
    progress: Arc<Mutex<Progress>>,
    buffer: VecDeque<Fetched>,
    resets: Arc<AtomicU64>,
    seen_reset: u64,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Set once `close` has left the group, so `drop` does not leave it again.
    left: bool,
    /// How often to look for other processes' events while there is nothing to read.
    pace: Pace,
}

/// The writer job that takes `member` out of its group and frees its partitions.
fn leave_group(
    stream: Arc<str>,
    group: Arc<str>,
    member: Arc<str>,
    waker: impl FnOnce() + Send + 'static,
) -> impl FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static {
    move |conn| {
        conn.execute(
            "DELETE FROM group_members WHERE stream = ?1 AND grp = ?2 AND member = ?3",
            params![&*stream, &*group, &*member],
        )
        .map_err(sql)?;
        conn.execute(
            "UPDATE group_partitions SET owner = NULL, lease_until = 0
             WHERE stream = ?1 AND grp = ?2 AND owner = ?3",
            params![&*stream, &*group, &*member],
        )
        .map_err(sql)?;
        waker();
        Ok(())
    }
}

#[async_trait]
impl StreamConsumer for Consumer {
    async fn close(mut self: Box<Self>) -> Result<()> {
        self.heartbeat.abort();
        self.left = true;
        let job = self.leave_job();
        self.shared.writer.call(job).await
    }

    async fn next(&mut self) -> Result<StreamEvent> {
        loop {
            let resets = self.resets.load(Ordering::Acquire);
            if resets != self.seen_reset {
                // Reset in this process: drop what was read ahead.
                self.seen_reset = resets;
                self.buffer.clear();
                self.parts.clear();
            }
            let reread: Vec<u16> = {
                let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                progress.reread.drain().collect()
            };
            for partition in reread {
                self.buffer.retain(|e| e.partition != partition);
                self.parts.remove(&partition);
            }
            if let Some(event) = self.buffer.pop_front() {
                if let Some(part) = self.parts.get_mut(&event.partition) {
                    part.handed_to = part.handed_to.max(event.position);
                }
                if let Some(seen) = self.seen.get_mut(&event.partition)
                    && seen.epoch == event.epoch
                {
                    seen.handed = seen.handed.max(event.position);
                }
                return Ok(self.hand_out(event));
            }
            let waker = self.shared.stream_waker(&self.stream);
            let seen = waker.generation();
            if self.fetch().await? {
                self.pace.busy();
            } else {
                waker.wait(seen, &mut self.pace).await;
            }
        }
    }
}

impl Consumer {
    fn hand_out(&self, e: Fetched) -> StreamEvent {
        let message = super::decode(&e.msg_id, &e.headers, e.body, None);
        StreamEvent::new(
            message,
            e.partition,
            u64::try_from(e.position).unwrap_or(0),
            e.attempt,
            Box::new(Settlement {
                shared: self.shared.clone(),
                stream: self.stream.clone(),
                group: self.group.clone(),
                member: self.member.clone(),
                partition: e.partition,
                position: e.position,
                epoch: e.epoch,
                progress: self.progress.clone(),
                settled: false,
            }),
        )
    }

    /// Heartbeats, rebalances and reads ahead; whether anything was read.
    async fn fetch(&mut self) -> Result<bool> {
        let (s, g, m) = (self.stream.clone(), self.group.clone(), self.member.clone());
        let lease = duration_ms(self.shared.lease);
        let local: HashMap<u16, Part> = self.parts.clone();
        let seen = self.seen.clone();
        let busy: HashSet<u16> = {
            let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            self.parts
                .iter()
                .filter(|(p, part)| {
                    let committed = progress
                        .committed
                        .get(p)
                        .filter(|(epoch, _)| *epoch == part.epoch)
                        .map_or(part.start, |(_, pos)| *pos);
                    part.handed_to > committed
                })
                .map(|(p, _)| *p)
                .chain(self.buffer.iter().map(|e| e.partition))
                .collect()
        };
        let (owned, events) = self
            .shared
            .writer
            .call(move |conn| {
                let known = Known {
                    parts: local,
                    seen,
                    busy,
                };
                fetch(conn, &s, &g, &m, lease, &known)
            })
            .await?;
        let owned_now: HashSet<u16> = owned.iter().map(|o| o.partition).collect();
        self.parts.retain(|p, _| owned_now.contains(p));
        self.seen.retain(|p, _| owned_now.contains(p));
        for o in &owned {
            let taken = self
                .seen
                .get(&o.partition)
                .is_none_or(|s| s.epoch != o.epoch);
            if taken {
                let seen = Seen {
                    epoch: o.epoch,
                    inherited: o.delivered_to,
                    handed: o.cursor,
                };
                self.seen.insert(o.partition, seen);
            }
        }
        for o in &owned {
            let fresh = self
                .parts
                .get(&o.partition)
                .is_none_or(|p| p.epoch != o.epoch);
            if fresh {
                self.parts.insert(
                    o.partition,
                    Part {
                        epoch: o.epoch,
                        start: o.cursor,
                        fetched_to: o.cursor,
                        handed_to: o.cursor,
                    },
                );
            }
        }
        self.buffer.retain(|e| {
            owned
                .iter()
                .any(|o| o.partition == e.partition && o.epoch == e.epoch)
        });
        let got = !events.is_empty();
        for e in &events {
            if let Some(part) = self.parts.get_mut(&e.partition) {
                part.fetched_to = part.fetched_to.max(e.position);
            }
        }
        self.buffer.extend(events);
        self.buffer.make_contiguous().sort_by_key(|e| e.position);
        Ok(got)
    }
}

/// What a member's turn knows of its partitions.
struct Known {
    parts: HashMap<u16, Part>,
    seen: HashMap<u16, Seen>,
    /// Partitions with events handed out and not committed, or still buffered.
    busy: HashSet<u16>,
}

/// One member's turn: stay alive, take or give up partitions, read ahead.
fn fetch(
    conn: &Connection,
    stream: &str,
    group: &str,
    member: &str,
    lease: i64,
    known: &Known,
) -> Result<(Vec<Owned>, Vec<Fetched>)> {
    let (local, seen, busy) = (&known.parts, &known.seen, &known.busy);
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO group_members (stream, grp, member, alive_until) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream, grp, member) DO UPDATE SET alive_until = excluded.alive_until",
    )
    .and_then(|mut st| st.execute(params![stream, group, member, now + lease]))
    .map_err(sql)?;
    conn.prepare_cached(
        "DELETE FROM group_members WHERE stream = ?1 AND grp = ?2 AND alive_until < ?3",
    )
    .and_then(|mut st| st.execute(params![stream, group, now]))
    .map_err(sql)?;
    let members: i64 = conn
        .prepare_cached("SELECT count(*) FROM group_members WHERE stream = ?1 AND grp = ?2")
        .and_then(|mut st| st.query_row(params![stream, group], |r| r.get(0)))
        .map_err(sql)?;

    struct Row {
        partition: u16,
        cursor: i64,
        epoch: i64,
        owner: Option<String>,
        lease_until: i64,
        not_before: i64,
        head_attempt: u32,
        delivered_to: i64,
    }
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT partition, cursor, epoch, owner, lease_until, not_before, head_attempt, delivered_to
             FROM group_partitions WHERE stream = ?1 AND grp = ?2 ORDER BY partition",
        )
        .and_then(|mut st| {
            st.query_map(params![stream, group], |r| {
                Ok(Row {
                    partition: r.get(0)?,
                    cursor: r.get(1)?,
                    epoch: r.get(2)?,
                    owner: r.get(3)?,
                    lease_until: r.get(4)?,
                    not_before: r.get(5)?,
                    head_attempt: r.get(6)?,
                    delivered_to: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql)?;
    if rows.is_empty() {
        return Err(MessagingError::NotFound(format!(
            "group {group:?} of stream {stream:?} does not exist"
        )));
    }
    let total = i64::try_from(rows.len()).unwrap_or(1);
    let share = usize::try_from((total + members.max(1) - 1) / members.max(1)).unwrap_or(1);
    let mut mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r.owner.as_deref() == Some(member) && r.lease_until >= now)
        .collect();
    let mut release: Vec<u16> = Vec::new();
    if mine.len() > share {
        // Give up partitions with nothing outstanding, highest first.
        let mut extra = mine.len() - share;
        for r in mine.iter().rev() {
            if extra == 0 {
                break;
            }
            if !busy.contains(&r.partition) {
                release.push(r.partition);
                extra -= 1;
            }
        }
        mine.retain(|r| !release.contains(&r.partition));
    } else if mine.len() < share {
        let wanted = share - mine.len();
        let free: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                r.owner.as_deref() != Some(member) && (r.owner.is_none() || r.lease_until < now)
            })
            .take(wanted)
            .collect();
        mine.extend(free);
        mine.sort_by_key(|r| r.partition);
    }
    for partition in &release {
        conn.prepare_cached(
            "UPDATE group_partitions SET owner = NULL, lease_until = 0
             WHERE stream = ?1 AND grp = ?2 AND partition = ?3 AND owner = ?4",
        )
        .and_then(|mut st| st.execute(params![stream, group, partition, member]))
        .map_err(sql)?;
    }
    let mut owned = Vec::with_capacity(mine.len());
    let mut events = Vec::new();
    for r in mine {
        conn.prepare_cached(
            "UPDATE group_partitions SET owner = ?4, lease_until = ?5
             WHERE stream = ?1 AND grp = ?2 AND partition = ?3",
        )
        .and_then(|mut st| st.execute(params![stream, group, r.partition, member, now + lease]))
        .map_err(sql)?;
        owned.push(Owned {
            partition: r.partition,
            epoch: r.epoch,
            cursor: r.cursor,
            delivered_to: r.delivered_to,
        });
        if r.not_before > now {
            continue;
        }
        let from = match local.get(&r.partition) {
            Some(part) if part.epoch == r.epoch => part.fetched_to.max(r.cursor),
            _ => r.cursor,
        };
        // Events up to here were handed out before: a re-read delivers them again. What
        // this member only read ahead (beyond what it handed out and what it inherited)
        // is still on its first delivery.
        let delivered = seen
            .get(&r.partition)
            .filter(|s| s.epoch == r.epoch)
            .map_or(r.delivered_to, |s| r.delivered_to.min(s.delivered()));
        let reread = from < delivered;
        let head_attempt = if reread {
            r.head_attempt + 1
        } else {
            r.head_attempt
        };
        let batch: Vec<Fetched> = conn
            .prepare_cached(
                "SELECT position, msg_id, headers, body FROM stream_events
                 WHERE stream = ?1 AND partition = ?2 AND position > ?3
                 ORDER BY position LIMIT ?4",
            )
            .and_then(|mut st| {
                st.query_map(params![stream, r.partition, from, FETCH_BATCH], |row| {
                    let position: i64 = row.get(0)?;
                    Ok(Fetched {
                        partition: r.partition,
                        position,
                        epoch: r.epoch,
                        attempt: if position <= delivered {
                            head_attempt
                        } else {
                            1
                        },
                        msg_id: row.get(1)?,
                        headers: row.get(2)?,
                        body: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql)?;
        if let Some(last) = batch.last() {
            conn.prepare_cached(
                "UPDATE group_partitions SET delivered_to = max(delivered_to, ?4), head_attempt = ?5
                 WHERE stream = ?1 AND grp = ?2 AND partition = ?3",
            )
            .and_then(|mut st| {
                st.execute(params![stream, group, r.partition, last.position, head_attempt])
            })
            .map_err(sql)?;
        }
        events.extend(batch);
    }
    Ok((owned, events))
}

impl Consumer {
    /// The writer job that takes this member out of its group and wakes the others.
    fn leave_job(&self) -> impl FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static {
        let waker = self.shared.stream_waker(&self.stream);
        leave_group(
            self.stream.clone(),
            self.group.clone(),
            self.member.clone(),
            move || waker.wake(),
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.left {
            return;
        }
        // Leave the group now so the others take over at once, rather than after the lease.
        let job = self.leave_job();
        self.shared.writer.fire("leave group", job);
    }
}

struct Settlement {
    shared: Arc<Shared>,
    stream: Arc<str>,
    group: Arc<str>,
    member: Arc<str>,
    partition: u16,
    position: i64,
    epoch: i64,
    progress: Arc<Mutex<Progress>>,
    settled: bool,
}

#[async_trait]
impl Commit for Settlement {
    async fn settle(mut self: Box<Self>, retry_after: Option<Duration>) -> Result<()> {
        self.settled = true;
        let (s, g, m) = (self.stream.clone(), self.group.clone(), self.member.clone());
        let (partition, position, epoch) = (self.partition, self.position, self.epoch);
        match retry_after {
            None => {
                let moved = self
                    .shared
                    .writer
                    .call(move |conn| {
                        conn.prepare_cached(
                            "UPDATE group_partitions SET cursor = ?4, head_attempt = 1
                             WHERE stream = ?1 AND grp = ?2 AND partition = ?3
                               AND epoch = ?5 AND owner = ?6 AND cursor < ?4",
                        )
                        .and_then(|mut st| {
                            st.execute(params![&*s, &*g, partition, position, epoch, &*m])
                        })
                        .map_err(sql)
                    })
                    .await?;
                let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                let entry = progress.committed.entry(partition).or_insert((epoch, 0));
                if entry.0 != epoch || entry.1 < position {
                    *entry = (epoch, position);
                }
                drop(progress);
                if moved == 0 {
                    tracing::debug!(backend = BACKEND, stream = %self.stream, group = %self.group, partition, position,
                        "commit ignored: the group was reset or the partition changed hands");
                }
            }
            Some(delay) => {
                let not_before = now_ms().saturating_add(duration_ms(delay));
                self.shared
                    .writer
                    .call(move |conn| {
                        conn.prepare_cached(
                            "UPDATE group_partitions SET not_before = ?4
                             WHERE stream = ?1 AND grp = ?2 AND partition = ?3
                               AND epoch = ?5 AND owner = ?6",
                        )
                        .and_then(|mut st| {
                            st.execute(params![&*s, &*g, partition, not_before, epoch, &*m])
                        })
                        .map_err(sql)
                    })
                    .await?;
                self.progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reread
                    .insert(partition);
            }
        }
        Ok(())
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: its partition is read again from the group's cursor.
            self.progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reread
                .insert(self.partition);
        }
    }
}
