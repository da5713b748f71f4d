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
    let pg = storage::testing::postgres_database(&storage::testing::fresh_name()).await;
    let db = Database::connect(&pg.url, &pool(Duration::from_millis(200)))
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

/// The SQLite readers (`storage::Readers`): a read on the calling thread never waits for a
/// lock; one that meets a lock goes to the reader threads, which wait up to the statement
/// timeout and then answer 503 (not 500); once the lock is gone, reads succeed again.
///
/// WAL readers are not blocked by a writer, so the file here is in rollback-journal mode,
/// where a writer's exclusive lock keeps readers out, as WAL recovery does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_wait_for_a_lock_no_longer_than_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let holder = storage::rusqlite::Connection::open(&path).unwrap();
    holder
        .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
        .unwrap();
    let readers = storage::Readers::new(&path, 1, Duration::from_millis(200));
    let count = |conn: &storage::rusqlite::Connection| {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .map_err(storage::SqliteError::from)
    };
    assert_eq!(readers.read(count).await.unwrap(), 1);

    holder
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (8);")
        .unwrap();
    let started = Instant::now();
    let err = readers.read(count).await.unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_busy(), "{err:?}");
    assert!(
        waited >= Duration::from_millis(150),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "gave up after {waited:?}");
    let problem = problem::Problem::from(StoreError::from(err));
    assert_eq!(problem.kind(), problem::Kind::Unavailable);

    holder.execute_batch("COMMIT").unwrap();
    assert_eq!(readers.read(count).await.unwrap(), 2);
}

/// A database file that cannot be opened for reading is 503 Unavailable, not 500; once
/// it can be, reads succeed (a failed open is not kept).
#[tokio::test]
async fn a_sqlite_file_that_is_gone_reads_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("gone.db");
    let readers = storage::Readers::new(&path, 1, Duration::from_millis(100));
    let one = |conn: &storage::rusqlite::Connection| {
        conn.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0))
            .map_err(storage::SqliteError::from)
    };
    let err = readers.read(one).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let problem = problem::Problem::from(StoreError::from(err));
    assert_eq!(problem.kind(), problem::Kind::Unavailable);

    std::fs::create_dir(path.parent().unwrap()).unwrap();
    storage::rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    assert_eq!(readers.read(one).await.unwrap(), 1);
}
