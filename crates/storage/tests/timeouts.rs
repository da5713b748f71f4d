//! `database.statement_timeout`, the seed's "database: 1–10 s" row, on both backends: a
//! statement past it fails, and the caller sees 503 Unavailable with Retry-After, not 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use settings::{DatabaseUrl, PoolSettings};
use sqlx::Executor;
use storage::{Database, StoreError};

fn pool(timeout: Duration) -> PoolSettings {
    PoolSettings {
        statement_timeout: timeout,
        ..PoolSettings::default()
    }
}

fn check_unavailable(err: sqlx::Error) {
    assert!(storage::is_statement_timeout(&err), "{err:?}");
    let problem = problem::Problem::from(StoreError::from(err));
    assert_eq!(problem.kind(), problem::Kind::Unavailable);
}

#[tokio::test]
async fn postgres_cancels_a_statement_past_the_timeout() {
    let name = storage::testing::fresh_name();
    let (url, name) = storage::testing::postgres_database(&name).await;
    let db = Database::connect(&url, &pool(Duration::from_millis(200)))
        .await
        .unwrap();
    let started = Instant::now();
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cancelled at the timeout"
    );
    check_unavailable(err);
    db.close().await;
    storage::testing::drop_postgres_database(&name).await;
}

#[tokio::test]
async fn sqlite_waits_for_a_writers_lock_no_longer_than_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("t.db"));
    let holder = Database::connect(&url, &pool(Duration::from_secs(5)))
        .await
        .unwrap();
    let waiter = Database::connect(&url, &pool(Duration::from_millis(200)))
        .await
        .unwrap();
    holder
        .pool()
        .execute("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    // One process holds the write lock...
    let tx = holder.begin_write().await.unwrap();
    // ...another waits for it only as long as its statement timeout.
    let started = Instant::now();
    let err = waiter.begin_write().await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "gave up after {waited:?}");
    check_unavailable(err);
    drop(tx);
}
