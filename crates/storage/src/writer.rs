//! Writes on a SQLite file: one turn at a time for the whole process, and a `rusqlite`
//! connection for the hot write paths.
//!
//! **One turn.** A SQLite file has one write lock. Writers of this process take turns on
//! an async lock ([`Writer::turn`]) before they touch it, in arrival order, so they never
//! meet on the file's lock and sleep in SQLite's busy handler (its sleeps of 1–100 ms were
//! the p99 of a create under concurrency). Every write takes the turn: sqlx's
//! ([`Database::begin_write`](crate::Database::begin_write),
//! [`Database::write_conn`](crate::Database::write_conn)) and this module's. Writers in
//! other processes still meet ours on the file's lock, and wait up to the busy timeout.
//!
//! **Why not sqlx for the hot writes.** sqlx runs a SQLite connection on a worker thread
//! and every statement is a round trip to it: an idempotent create was six (begin, claim,
//! insert, outbox, record, commit), and the task holding the write lock waited behind
//! every other task on the runtime between them, so the lock was held ~500 µs per create
//! for ~50 µs of SQLite work (BENCHMARKS.md, issue 12). [`Writer::write`] runs the whole
//! transaction at once on the calling thread, on a connection of its own, while holding
//! the turn: no hand-off, no await inside the lock. rusqlite links the same
//! `libsqlite3-sys` as sqlx, so it is the same SQLite.
//!
//! **Where it runs.** On the calling (async) thread, with no waiting for the file's lock
//! (busy timeout 0): the work is a handful of statements on pages in memory, less than
//! rendering the response. When another process holds the file's lock, the transaction
//! moves to the blocking pool and waits there, up to the statement timeout. A commit that
//! triggers WAL's automatic checkpoint does that work inline (every ~1,000 pages written).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::readers::SqliteError;

/// The write side of one SQLite file: the process's turn, and the connection
/// [`Writer::write`] runs on (opened on first use).
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    /// How long a writer in another process may keep us waiting for the file's lock.
    busy_timeout: Duration,
    /// How long a writer waits for its turn in this process before it gives up (503).
    turn_timeout: Duration,
    turn: Arc<Mutex<Slot>>,
}

/// What the turn guards: the rusqlite write connection, once opened.
#[derive(Debug, Default)]
pub struct Slot {
    conn: Option<Connection>,
}

/// This process's turn to write to the file; writing ends (the next writer goes) when it
/// is dropped.
pub type Turn = OwnedMutexGuard<Slot>;

impl Writer {
    pub(crate) fn new(path: &Path, busy_timeout: Duration, turn_timeout: Duration) -> Self {
        Writer {
            path: path.to_owned(),
            busy_timeout,
            turn_timeout,
            turn: Arc::new(Mutex::new(Slot::default())),
        }
    }

    /// Waits (in arrival order) for this process's turn to write, up to the pool's acquire
    /// timeout: a writer that holds the turn and asks for it again gets `PoolTimedOut`, a
    /// 503, never a hang.
    pub async fn turn(&self) -> Result<Turn, sqlx::Error> {
        if let Ok(turn) = Arc::clone(&self.turn).try_lock_owned() {
            return Ok(turn);
        }
        tokio::time::timeout(self.turn_timeout, Arc::clone(&self.turn).lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)
    }

    /// Runs `work` in one transaction (`BEGIN IMMEDIATE`) on the write connection, in this
    /// process's turn: `Ok` commits, `Err` rolls back. See the module doc for where it runs.
    ///
    /// `work` must be quick and must not block: it runs while every other writer of the
    /// process waits, usually on an async worker thread.
    pub async fn write<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        let turn = self
            .turn()
            .await
            .map_err(|_| E::from(SqliteError::Unavailable("no turn to write in time".into())))?;
        self.write_in(turn, work).await
    }

    /// [`Writer::write`] in a turn the caller already holds.
    pub async fn write_in<R, E, F>(&self, mut turn: Turn, work: F) -> Result<R, E>
    where
        F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        let conn = self.conn(&mut turn).map_err(E::from)?;
        let work = match attempt(conn, work) {
            Attempt::Done(result) => return result,
            Attempt::Busy(work, _) => work,
        };
        // Another process holds the file's lock: wait for it off the async workers.
        let busy_timeout = self.busy_timeout;
        let path = self.path.clone();
        let waited = tokio::task::spawn_blocking(move || {
            let conn = turn
                .conn
                .as_mut()
                .ok_or_else(|| SqliteError::Unavailable(format!("{} closed", path.display())))?;
            conn.busy_timeout(busy_timeout)?;
            let result = match attempt(conn, work) {
                Attempt::Done(result) => result,
                Attempt::Busy(_, busy) => Err(E::from(busy)),
            };
            conn.busy_timeout(Duration::ZERO)?;
            Ok::<_, SqliteError>(result)
        })
        .await;
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(E::from(e)),
            Err(e) => Err(E::from(SqliteError::Unavailable(format!(
                "a write on the blocking pool ended: {e}"
            )))),
        }
    }

    /// The write connection, opened on first use.
    fn conn<'t>(&self, turn: &'t mut Turn) -> Result<&'t mut Connection, SqliteError> {
        if turn.conn.is_none() {
            turn.conn = Some(connect(&self.path)?);
        }
        turn.conn
            .as_mut()
            .ok_or_else(|| SqliteError::Unavailable("the write connection did not open".into()))
    }
}

enum Attempt<R, E, F> {
    Done(Result<R, E>),
    /// The file's lock was held by another process; `work` did not run.
    Busy(F, SqliteError),
}

fn attempt<R, E, F>(conn: &mut Connection, work: F) -> Attempt<R, E, F>
where
    F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<R, E>,
    E: From<SqliteError>,
{
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = SqliteError::from(e);
            if e.is_busy() {
                return Attempt::Busy(work, e);
            }
            return Attempt::Done(Err(E::from(e)));
        }
    };
    let result = match work(&mut tx) {
        // Dropping `tx` rolls it back.
        Err(e) => Err(e),
        Ok(value) => tx
            .commit()
            .map(|()| value)
            .map_err(|e| E::from(SqliteError::from(e))),
    };
    Attempt::Done(result)
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The same settings as sqlx's connections (`Database::connect`), but no waiting for
    // the file's lock on an async thread: `Writer::write_in` waits elsewhere.
    conn.busy_timeout(Duration::ZERO)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
