//! The inbox: a consumer records each message id it handles in the same transaction as
//! the handling's effect, so a redelivered or re-published message (at-least-once
//! delivery, an outbox relay that published twice) has no second effect.
//!
//! ```text
//! let mut tx = db.begin_write().await?;
//! if inbox::first_time(&mut tx, "billing", envelope.id).await? {
//!     charge(&mut tx, ...).await?;        // the effect
//! }
//! tx.commit().await?;                      // both, or neither
//! delivery.ack().await?;                   // only after the commit
//! ```
//!
//! The table lives with the outbox ([`crate::outbox::MIGRATIONS`]).

use std::time::Duration;

use sqlx::AnyConnection;
use storage::{Database, StoreError, now_millis};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records that `consumer` handles `message_id`, on `conn` (inside the effect's
/// transaction). `true` the first time; `false` when it was already handled, in which
/// case the caller skips the effect (and still acks the delivery).
pub async fn first_time(
    conn: &mut AnyConnection,
    consumer: &str,
    message_id: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO inbox (consumer, message_id, handled_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer.to_owned())
    .bind(message_id.to_string())
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets ids handled longer ago than `keep` (keep them longer than any redelivery or
/// re-publish can come: the stream's retention, at least).
pub async fn purge(conn: &mut AnyConnection, keep: Duration) -> Result<u64, StoreError> {
    let cutoff = now_millis().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let done = sqlx::query("DELETE FROM inbox WHERE handled_at < $1")
        .bind(cutoff)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Purges the inbox of `db` every `every` (at once, then on each tick) of ids handled
/// longer ago than `keep`, until `stop`; a failed purge is logged and tried again on the
/// next tick. A service whose database holds the inbox runs it beside its relay.
pub async fn run_purger(db: Database, keep: Duration, every: Duration, stop: CancellationToken) {
    // `interval` panics on zero, and a configured zero would hammer the database.
    let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {
                let purged = match db.write_conn().await {
                    Ok(mut conn) => purge(&mut conn, keep).await,
                    Err(err) => Err(StoreError::from(err)),
                };
                match purged {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged handled ids from the inbox"),
                    Err(err) => tracing::warn!(error = %err, "purging the inbox failed"),
                }
            }
        }
    }
}
