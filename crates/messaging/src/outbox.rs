//! The transactional outbox: a service writes its state change and the messages it
//! implies in one database transaction ([`enqueue`]); a relay ([`Outbox::run_relay`])
//! publishes them in the order they were written and stamps them sent.
//!
//! A crash between a publish and its stamp publishes that message again after the
//! restart: a message may go twice, never zero times. Its envelope id is the same both
//! times, so backends that de-duplicate (embedded, NATS) drop the copy and every consumer's
//! inbox ([`crate::inbox`]) ignores it.
//!
//! The relay publishes in `seq` order (a run of messages for one destination at once:
//! one commit on the embedded broker), and stops at the first
//! failure (retrying it with full-jitter backoff), so events of one key are published in
//! the order their writes committed. Several processes sharing one database each run a
//! relay; they may publish a message twice between them, which the same ids absorb.

use std::sync::Arc;
use std::time::Duration;

use problem::Problem;
use resilience::downstream::{Downstream, Policy};
use sqlx::AnyConnection;
use storage::{Database, Migrations, StoreError, now_millis};
use tokio::sync::Notify;

use crate::{Broker, Envelope};

/// The `outbox` and `inbox` tables, in the database of the service that uses them.
pub static MIGRATIONS: Migrations = Migrations {
    owner: "outbox",
    sqlite: sqlx::migrate!("migrations/outbox/sqlite"),
    postgres: sqlx::migrate!("migrations/outbox/postgres"),
};

/// Where an outbox message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    Queue(&'a str),
    Stream(&'a str),
}

impl Destination<'_> {
    fn shape(&self) -> &'static str {
        match self {
            Destination::Queue(_) => "queue",
            Destination::Stream(_) => "stream",
        }
    }

    fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Stream(n) => n,
        }
    }
}

/// Stores `envelope` for the relay, on `conn`: call it inside the transaction of the
/// write the message describes, so both commit or neither does.
pub async fn enqueue(
    conn: &mut AnyConnection,
    to: Destination<'_>,
    envelope: &Envelope,
) -> Result<(), StoreError> {
    let json = envelope_json(envelope)?;
    sqlx::query(ENQUEUE)
        .bind(envelope.id.to_string())
        .bind(to.shape())
        .bind(to.name().to_owned())
        .bind(json)
        .bind(now_millis())
        .execute(conn)
        .await?;
    Ok(())
}

/// [`enqueue`] on a SQLite file's rusqlite writer ([`storage::Writer::write`]), inside
/// the transaction of the write the message describes.
pub fn enqueue_local(
    conn: &storage::rusqlite::Connection,
    to: Destination<'_>,
    envelope: &Envelope,
) -> Result<(), StoreError> {
    let json = envelope_json(envelope)?;
    conn.prepare_cached(ENQUEUE)
        .and_then(|mut statement| {
            statement.execute(storage::rusqlite::params![
                envelope.id.to_string(),
                to.shape(),
                to.name(),
                json,
                now_millis(),
            ])
        })
        .map_err(|e| StoreError::from(storage::SqliteError::from(e)))?;
    Ok(())
}

/// The statement of [`enqueue`] and [`enqueue_local`] (parameters in order).
const ENQUEUE: &str = "INSERT INTO outbox (message_id, shape, destination, envelope, created_at) \
     VALUES ($1, $2, $3, $4, $5)";

fn envelope_json(envelope: &Envelope) -> Result<String, StoreError> {
    serde_json::to_string(envelope)
        .map_err(|e| StoreError::Corrupt(format!("envelope {}: {e}", envelope.id)))
}

/// A service's outbox: its relay, and the bell its writers ring after they commit.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Database,
    wake: Arc<Notify>,
    /// The service name, for metrics and logs.
    service: &'static str,
    /// Every publish goes through the resilience policy like any outbound call: a
    /// deadline (the publish timeout), a budgeted retry (a re-publish keeps the envelope
    /// id, so it is safe) and a breaker named `broker`, so a broken broker shows in
    /// `/metrics` and is not hammered.
    broker: Downstream,
}

/// How the relay paces itself.
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    /// How often to look for unsent messages when no writer rang (another process's
    /// writes, or a ring missed across a restart).
    pub poll: Duration,
    /// Most messages published per pass.
    pub batch: u32,
    /// Backoff between failed passes (full jitter).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Sent messages are kept this long (an audit trail), then purged.
    pub keep_sent: Duration,
    /// How often the relay purges sent messages older than `keep_sent`.
    pub purge_every: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(200),
            batch: 256,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            keep_sent: Duration::from_secs(24 * 60 * 60),
            purge_every: Duration::from_secs(60),
        }
    }
}

/// Why a relay pass stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing outbox message {seq} ({message_id}) failed: {reason}")]
    Publish {
        seq: i64,
        message_id: String,
        reason: String,
    },
}

impl Outbox {
    /// An outbox whose relay publishes under the default outbound policy.
    pub fn new(db: Database, service: &'static str) -> Self {
        Self::with_policy(db, service, Policy::default())
    }

    /// An outbox whose relay publishes under `policy`; its `timeout` is the publish
    /// timeout (`messaging.publish_timeout`).
    pub fn with_policy(db: Database, service: &'static str, policy: Policy) -> Self {
        Self {
            db,
            wake: Arc::new(Notify::new()),
            service,
            broker: Downstream::of_service(service, "broker", policy),
        }
    }

    /// Wakes the relay: call after committing a transaction that enqueued messages.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Messages written and not yet published.
    pub async fn backlog(&self) -> Result<i64, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&mut *conn)
            .await?;
        Ok(n)
    }

    /// Publishes up to `batch` unsent messages in write order, then stamps those that went
    /// as sent, in one statement. Returns how many went; stops at the first failure,
    /// leaving it (and everything after it) for the next pass.
    ///
    /// One stamp per pass, not per message: on SQLite each stamp is a write transaction
    /// that takes the file's one write lock from the service's own writers. A crash before
    /// the stamp publishes the pass's messages again, with the same envelope ids.
    pub async fn relay_once(
        &self,
        broker: &Broker,
        options: &RelayOptions,
    ) -> Result<usize, RelayError> {
        let rows: Vec<(i64, String, String, String, String)> = {
            let mut conn = self.db.pool().acquire().await.map_err(StoreError::from)?;
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT seq, message_id, shape, destination, envelope FROM outbox \
                 WHERE sent_at IS NULL ORDER BY seq LIMIT {}",
                options.batch
            )))
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::from)?
        };
        let mut sent = Vec::with_capacity(rows.len());
        let mut failed = None;
        // Runs of messages for the same destination go in one publish (one commit on the
        // embedded broker), in seq order; the first failure stops the pass.
        let fail = |(seq, message_id, ..): &(i64, String, String, String, String), reason| {
            RelayError::Publish {
                seq: *seq,
                message_id: message_id.clone(),
                reason,
            }
        };
        for run in rows.chunk_by(|a, b| a.2 == b.2 && a.3 == b.3) {
            let (shape, destination) = (&run[0].2, &run[0].3);
            let mut envelopes = Vec::with_capacity(run.len());
            for row in run {
                match serde_json::from_str::<Envelope>(&row.4) {
                    Ok(envelope) => envelopes.push(envelope),
                    Err(e) => {
                        // Written by this crate's own `enqueue`: only a hand-edited row
                        // gets here. Skipping it would break the order promise: publish
                        // what comes before it, then stop and say so.
                        failed = Some(fail(
                            row,
                            format!("the stored envelope is not readable: {e}"),
                        ));
                        break;
                    }
                }
            }
            if !envelopes.is_empty() {
                // Idempotent: a re-publish carries the same envelope ids.
                let outcome = self
                    .broker
                    .call(true, |_attempt| async {
                        let published = match shape.as_str() {
                            "queue" => broker.queues.publish_all(destination, &envelopes).await,
                            _ => broker.streams.publish_all(destination, &envelopes).await,
                        };
                        published.map_err(publish_problem)
                    })
                    .await;
                if let Err(problem) = outcome {
                    failed = Some(fail(&run[0], problem.to_string()));
                    break;
                }
                sent.extend(run[..envelopes.len()].iter().map(|row| row.0));
            }
            if failed.is_some() {
                break;
            }
        }
        self.stamp_sent(&sent).await?;
        metrics::counter!(crate::series::OUTBOX_PUBLISHED, "service" => self.service)
            .increment(sent.len() as u64);
        if let Some(err) = failed {
            if let RelayError::Publish { seq, .. } = &err {
                self.record_failure(*seq, &err).await;
            }
            return Err(err);
        }
        Ok(sent.len())
    }

    /// Stamps `seqs` sent. Listed one by one, not as a range: on PostgreSQL a sequence
    /// number can become visible after a higher one, so a range could stamp a message the
    /// pass never saw.
    async fn stamp_sent(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut list = String::with_capacity(seqs.len() * 8);
        for (i, seq) in seqs.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            list.push_str(&seq.to_string());
        }
        // Integers read from the table itself: nothing a client wrote reaches this text.
        let sql = format!(
            "UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE seq IN ({list})"
        );
        let now = now_millis();
        if let Some(writer) = self.db.local_writer() {
            // A SQLite file: in one synchronous call, so the relay holds the process's
            // turn to write only for the statement (through sqlx, for its round trips:
            // the service's creates waited behind every pass's stamp).
            return writer
                .write(move |tx| {
                    // Not cached: a new text every pass.
                    tx.execute(&sql, storage::rusqlite::params![now])
                        .map_err(storage::SqliteError::from)
                })
                .await
                .map(|_| ())
                .map_err(StoreError::from);
        }
        let mut conn = self.db.write_conn().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false) // a new text every pass: not worth a slot in the statement cache
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn record_failure(&self, seq: i64, err: &RelayError) {
        metrics::counter!(crate::series::OUTBOX_PUBLISH_FAILURES, "service" => self.service)
            .increment(1);
        let Ok(mut conn) = self.db.write_conn().await else {
            return;
        };
        let reason: String = err.to_string().chars().take(1000).collect();
        if let Err(e) =
            sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE seq = $2")
                .bind(reason)
                .bind(seq)
                .execute(&mut *conn)
                .await
        {
            tracing::debug!(error = %e, seq, "could not record an outbox failure");
        }
    }

    /// Deletes messages sent longer ago than `keep`.
    pub async fn purge_sent(&self, keep: Duration) -> Result<u64, StoreError> {
        let cutoff =
            now_millis().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let mut conn = self.db.write_conn().await?;
        let done = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(cutoff)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }

    /// Relays until `stop` fires: a pass whenever a writer rings or `poll` passes, passes
    /// back to back while there is a backlog, full-jitter backoff after a failure.
    pub async fn run_relay(
        self,
        broker: Broker,
        options: RelayOptions,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut failures: u32 = 0;
        let mut rng = fastrand::Rng::new();
        let mut last_purge = tokio::time::Instant::now();
        loop {
            let pause = match self.relay_once(&broker, &options).await {
                Ok(sent) => {
                    failures = 0;
                    if sent >= usize::try_from(options.batch).unwrap_or(usize::MAX) {
                        Duration::ZERO
                    } else {
                        options.poll
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(options, failures, &mut rng);
                    tracing::warn!(service = self.service, error = %err, retry_in_ms = delay.as_millis() as u64, "outbox relay pass failed");
                    delay
                }
            };
            if let Ok(n) = self.backlog().await {
                metrics::gauge!(crate::series::OUTBOX_BACKLOG, "service" => self.service)
                    .set(n as f64);
            }
            if last_purge.elapsed() >= options.purge_every {
                last_purge = tokio::time::Instant::now();
                if let Err(e) = self.purge_sent(options.keep_sent).await {
                    tracing::debug!(error = %e, "outbox purge failed");
                }
            }
            if pause.is_zero() {
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified(), if failures == 0 => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// A failed publish as the error table sees it: transient failures (the broker is down,
/// did not confirm, timed out) are retried and count against the breaker; the rest (an
/// undeclared destination, a refused name) are not retried.
fn publish_problem(err: crate::MessagingError) -> Problem {
    if err.is_transient() {
        Problem::unavailable(err.to_string())
    } else {
        Problem::new(problem::Kind::InvalidRequest).with_detail(err.to_string())
    }
}

/// Full jitter from the one implementation (`resilience::Backoff`): uniform in
/// [0, min(cap, base · 2^(failures-1))).
fn backoff(options: RelayOptions, failures: u32, rng: &mut fastrand::Rng) -> Duration {
    resilience::retry::Backoff {
        base: options.backoff_base,
        cap: options.backoff_cap,
    }
    .delay(failures.saturating_sub(1), rng)
}
