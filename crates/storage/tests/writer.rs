//! The SQLite writer (`storage::Writer`): one transaction per call, committed on `Ok` and
//! rolled back on `Err`; in-process writers (sqlx's and rusqlite's) take turns instead of
//! meeting on the file's lock; a writer in another process is waited for off the async
//! workers, up to the statement timeout, and then it is a 503, not a 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use settings::{DatabaseUrl, PoolSettings};
use sqlx::Executor;
use storage::rusqlite::{self, params};
use storage::{Database, SqliteError, StoreError};

async fn open(url: &DatabaseUrl, statement: Duration, acquire: Duration) -> Database {
    let settings = PoolSettings {
        statement_timeout: statement,
        acquire_timeout: acquire,
        ..PoolSettings::default()
    };
    Database::connect(url, &settings).await.unwrap()
}

async fn count(db: &Database) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

fn insert(tx: &mut rusqlite::Savepoint<'_>, x: i64) -> Result<i64, SqliteError> {
    tx.execute("INSERT INTO t (x) VALUES (?1)", params![x])?;
    Ok(tx.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
}

fn is_unavailable(err: SqliteError) -> bool {
    let problem = problem::Problem::from(StoreError::from(err));
    problem.kind() == problem::Kind::Unavailable
}

async fn with_table(url: &DatabaseUrl) -> Database {
    let db = open(url, Duration::from_secs(5), Duration::from_secs(5)).await;
    db.pool()
        .execute("CREATE TABLE t (x INTEGER NOT NULL)")
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn a_write_commits_on_ok_and_rolls_back_on_err() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&DatabaseUrl::sqlite_file(&dir.path().join("w.db"))).await;
    let writer = db.local_writer().expect("a SQLite file has a local writer");

    let seen = writer.write(|tx| insert(tx, 1)).await.unwrap();
    assert_eq!(seen, 1);
    assert_eq!(
        count(&db).await,
        1,
        "committed, and visible to sqlx's reads"
    );

    let failed: Result<(), SqliteError> = writer
        .write(|tx| {
            insert(tx, 2)?;
            Err(SqliteError::Unavailable("the work refused".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(
        count(&db).await,
        1,
        "the refused work's insert was rolled back"
    );

    // A failing statement is the work's error, and nothing of it stays.
    let broken: Result<usize, SqliteError> = writer
        .write(|tx| Ok(tx.execute("INSERT INTO t (x) VALUES (NULL)", [])?))
        .await;
    assert!(broken.is_err());
    assert_eq!(count(&db).await, 1);
}

/// A sqlx transaction holds the process's turn: the rusqlite writer waits for it, so it
/// never sleeps on the file's lock. Here the turn is never given back, so the wait ends
/// at the acquire timeout (short) and not at the busy timeout (long): a 503.
#[tokio::test]
async fn in_process_writers_take_turns_and_a_held_turn_ends_in_503() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("w.db"));
    drop(with_table(&url).await);
    let db = open(&url, Duration::from_secs(30), Duration::from_millis(300)).await;
    let writer = db.local_writer().unwrap();

    let mut tx = db.begin_write().await.unwrap();
    sqlx::query("INSERT INTO t (x) VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    let err = writer.write(|tx| insert(tx, 2)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "waited for the turn, not the 30 s busy timeout: {waited:?}"
    );
    assert!(is_unavailable(err));

    // A sqlx write in the same turn-holding task waits the same way (no deadlock).
    let err = db.write_conn().await.unwrap_err();
    assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err:?}");

    tx.commit().await.unwrap();
    // The turn is free: the next write runs after the commit and sees its row.
    assert_eq!(writer.write(|tx| insert(tx, 2)).await.unwrap(), 2);
}

/// Writers in other processes meet ours on the file's lock: the rusqlite writer waits for
/// them on the blocking pool up to the statement timeout, then answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_s_lock_is_waited_for_up_to_the_statement_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("w.db"));
    let other = with_table(&url).await;
    let db = open(&url, Duration::from_millis(200), Duration::from_secs(5)).await;
    let writer = db.local_writer().unwrap();

    let held = other.begin_write().await.unwrap();
    let started = Instant::now();
    let err = writer.write(|tx| insert(tx, 1)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_busy(), "{err:?}");
    assert!(
        waited >= Duration::from_millis(150),
        "gave up after {waited:?}, before the statement timeout"
    );
    assert!(is_unavailable(err));

    held.commit().await.unwrap();
    assert_eq!(writer.write(|tx| insert(tx, 1)).await.unwrap(), 1);
}

/// Other databases have no local writer: their writes go through sqlx.
#[tokio::test]
async fn in_memory_and_postgres_have_no_local_writer() {
    let memory = open(
        &DatabaseUrl::parse("sqlite::memory:").unwrap(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .await;
    assert!(memory.local_writer().is_none());
    let pg = storage::testing::postgres(&[]).await;
    assert!(pg.db.local_writer().is_none());
}

/// Group commit: writes queued while another holds the turn run together, each in its
/// own savepoint: one that fails is rolled back alone, every other is committed, and each
/// caller gets its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_together_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&DatabaseUrl::sqlite_file(&dir.path().join("w.db"))).await;
    // Hold the turn so that the writes pile up in one queue, then let them go.
    let held = db.begin_write().await.unwrap();
    let tasks: Vec<_> = (0..40_i64)
        .map(|x| {
            let db = db.clone();
            tokio::spawn(async move {
                db.local_writer()
                    .unwrap()
                    .write(move |tx| {
                        tx.execute("INSERT INTO t (x) VALUES (?1)", params![x])?;
                        if x % 5 == 0 {
                            return Err(SqliteError::Unavailable(format!("refused {x}")));
                        }
                        Ok(x)
                    })
                    .await
            })
        })
        .collect();
    held.commit().await.unwrap();
    for (x, task) in (0..40_i64).zip(tasks) {
        match task.await.unwrap() {
            Ok(got) => assert_eq!(got, x),
            Err(e) => {
                assert_eq!(x % 5, 0, "{x} failed: {e}");
                assert!(e.to_string().contains(&format!("refused {x}")), "{e}");
            }
        }
    }
    let stored: Vec<i64> = sqlx::query_scalar("SELECT x FROM t ORDER BY x")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let expected: Vec<i64> = (0..40).filter(|x| x % 5 != 0).collect();
    assert_eq!(stored, expected);
}

/// A caller that stopped waiting before its write ran (its deadline passed) is skipped:
/// nothing is written for nobody.
#[tokio::test]
async fn a_write_whose_caller_is_gone_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(&DatabaseUrl::sqlite_file(&dir.path().join("w.db"))).await;
    let writer = db.local_writer().unwrap();
    let held = db.begin_write().await.unwrap();
    {
        let abandoned = writer.write(|tx| insert(tx, 1));
        tokio::pin!(abandoned);
        // Polled once (queued, waiting for the turn), then dropped.
        tokio::select! {
            biased;
            _ = &mut abandoned => panic!("the turn is held: the write cannot be done"),
            () = std::future::ready(()) => {}
        }
    }
    held.commit().await.unwrap();
    assert_eq!(writer.write(|tx| insert(tx, 2)).await.unwrap(), 1);
}
