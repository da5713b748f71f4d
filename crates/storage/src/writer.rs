//! Writes on a SQLite file: one turn at a time for the whole process, and a `rusqlite`
//! connection for the hot write paths, with group commit and checkpoints off the hot path.
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
//! for ~50 µs of SQLite work (BENCHMARKS.md, issue 12). [`Writer::write`] runs the work
//! synchronously on a connection of its own while holding the turn: no hand-off, no
//! await inside the lock. rusqlite links the same `libsqlite3-sys` as sqlx, so it is the
//! same SQLite.
//!
//! **Group commit.** A write is queued, then its caller waits for the turn. Whoever gets
//! the turn runs every write queued by then in one transaction, each in a savepoint of
//! its own (a write whose work fails is rolled back alone), commits once, and hands each
//! caller its result; callers whose write ran in another's batch find it done. A result
//! is handed over only after the commit: no caller hears of a write that could still be
//! lost.
//!
//! **Where it runs.** On the calling (async) thread, with no waiting for the file's lock
//! (busy timeout 0): the work is a handful of statements on pages in memory. When another
//! process holds the file's lock, the batch moves to the blocking pool and waits there, up
//! to the statement timeout.
//!
//! **Checkpoints.** The write connection never checkpoints on commit (SQLite's default
//! would copy ~1,000 pages and fsync inside the turn every few hundred creates, stalling
//! every writer; 15–20% of create throughput here). A thread of its own runs passive
//! checkpoints, which do not block writers, after every [`CHECKPOINT_EVERY`] commits and
//! once a second.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Savepoint, Transaction, TransactionBehavior};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::readers::SqliteError;

/// Commits between two nudges of the checkpoint thread.
const CHECKPOINT_EVERY: u64 = 64;

/// The write side of one SQLite file: the process's turn, the queue of writes waiting for
/// it, and the connection they run on (opened on first use).
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    /// How long a writer in another process may keep us waiting for the file's lock.
    busy_timeout: Duration,
    /// How long a writer waits for its turn in this process before it gives up (503).
    turn_timeout: Duration,
    turn: Arc<Mutex<Slot>>,
    queue: std::sync::Mutex<Vec<Queued>>,
    next_id: AtomicU64,
}

/// What the turn guards: the rusqlite write connection and its checkpoint thread, once
/// started.
#[derive(Debug, Default)]
pub struct Slot {
    conn: Option<Connection>,
    checkpoints: Option<crossbeam_channel::Sender<()>>,
    commits: u64,
}

/// This process's turn to write to the file; writing ends (the next writer goes) when it
/// is dropped.
pub type Turn = OwnedMutexGuard<Slot>;

/// A write waiting for a turn.
struct Queued {
    id: u64,
    job: Box<dyn Job>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").field("id", &self.id).finish()
    }
}

/// One caller's write, type-erased so that a batch can hold different ones.
trait Job: Send {
    /// Runs the work in a savepoint of `tx`, rolled back alone if the work fails.
    fn run(&mut self, tx: &mut Transaction<'_>);
    /// Hands the caller its result once the batch's transaction has ended.
    fn finish(self: Box<Self>, commit: Result<(), &SqliteError>);
}

struct Pending<R, E, F> {
    work: Option<F>,
    result: Option<Result<R, E>>,
    reply: oneshot::Sender<Result<R, E>>,
}

impl<R, E, F> Job for Pending<R, E, F>
where
    F: FnOnce(&mut Savepoint<'_>) -> Result<R, E> + Send,
    R: Send,
    E: From<SqliteError> + Send,
{
    fn run(&mut self, tx: &mut Transaction<'_>) {
        let Some(work) = self.work.take() else { return };
        // The caller stopped waiting (its deadline passed): do not write for nobody.
        if self.reply.is_closed() {
            return;
        }
        let mut savepoint = match tx.savepoint() {
            Ok(savepoint) => savepoint,
            Err(e) => {
                self.result = Some(Err(E::from(SqliteError::from(e))));
                return;
            }
        };
        let result = match work(&mut savepoint) {
            Ok(value) => savepoint
                .commit()
                .map(|()| value)
                .map_err(|e| E::from(SqliteError::from(e))),
            // Dropping the savepoint rolls it back.
            Err(e) => Err(e),
        };
        self.result = Some(result);
    }

    fn finish(self: Box<Self>, commit: Result<(), &SqliteError>) {
        let this = *self;
        let result = match (this.result, commit) {
            // Skipped: its caller is gone.
            (None, Ok(())) => return,
            // The batch never ran (the file's lock could not be had, no connection).
            (None, Err(e)) => Err(E::from(e.again())),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(e)) => Err(E::from(e.again())),
            (Some(Err(e)), _) => Err(e),
        };
        let _ = this.reply.send(result);
    }
}

impl Writer {
    pub(crate) fn new(path: &Path, busy_timeout: Duration, turn_timeout: Duration) -> Self {
        Writer {
            path: path.to_owned(),
            busy_timeout,
            turn_timeout,
            turn: Arc::new(Mutex::new(Slot::default())),
            queue: std::sync::Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
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

    /// Runs `work` in this process's turn, in a transaction (`BEGIN IMMEDIATE`) on the
    /// write connection, possibly together with other callers' writes (group commit, see
    /// the module doc): `Ok` is committed before it is returned, `Err` rolls back this
    /// work alone.
    ///
    /// `work` must be quick and must not block: it runs while every other writer of the
    /// process waits, usually on an async worker thread.
    pub async fn write<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: FnOnce(&mut Savepoint<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        let (reply, mut done) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.queue().push(Queued {
            id,
            job: Box::new(Pending {
                work: Some(work),
                result: None,
                reply,
            }),
        });
        loop {
            tokio::select! {
                biased;
                result = &mut done => {
                    return result.unwrap_or_else(|_| {
                        Err(E::from(SqliteError::Unavailable(
                            "the batch that held this write ended without it".into(),
                        )))
                    });
                }
                turn = self.turn() => match turn {
                    Ok(turn) => self.run_batch(turn).await,
                    Err(_) => {
                        // Still queued: take it back, so it never runs after we said it
                        // failed. Already taken: a batch is running it; wait for that.
                        let mut queue = self.queue();
                        if let Some(at) = queue.iter().position(|q| q.id == id) {
                            queue.remove(at);
                            return Err(E::from(SqliteError::Unavailable(
                                "no turn to write within the acquire timeout".into(),
                            )));
                        }
                    }
                },
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        // The queue is only pushed to and drained: a panic cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs every queued write in one transaction, in `turn`.
    async fn run_batch(&self, mut turn: Turn) {
        let jobs: Vec<Box<dyn Job>> = self.queue().drain(..).map(|q| q.job).collect();
        if jobs.is_empty() {
            return;
        }
        let jobs = match self.conn(&mut turn) {
            Ok(conn) => match attempt(conn, jobs) {
                Attempt::Done(committed) => {
                    self.committed(&mut turn, committed);
                    return;
                }
                Attempt::Busy(jobs, _) => jobs,
            },
            Err(e) => {
                finish_all(jobs, Err(&e));
                return;
            }
        };
        // Another process holds the file's lock: wait for it off the async workers.
        let busy_timeout = self.busy_timeout;
        let waited = tokio::task::spawn_blocking(move || {
            let Some(conn) = turn.conn.as_mut() else {
                return (turn, false);
            };
            let committed = match conn.busy_timeout(busy_timeout) {
                Ok(()) => match attempt(conn, jobs) {
                    Attempt::Done(committed) => committed,
                    Attempt::Busy(jobs, busy) => {
                        finish_all(jobs, Err(&busy));
                        false
                    }
                },
                Err(e) => {
                    finish_all(jobs, Err(&SqliteError::from(e)));
                    false
                }
            };
            // Back to not waiting; if this fails, the next open starts afresh.
            if conn.busy_timeout(Duration::ZERO).is_err() {
                turn.conn = None;
            }
            (turn, committed)
        })
        .await;
        // A panic in a write's work: the other callers of the batch hear that their
        // batch ended without their write (their replies were dropped).
        if let Ok((mut turn, committed)) = waited {
            self.committed(&mut turn, committed);
        }
    }

    /// After a batch: counts the commit and nudges the checkpoint thread now and then.
    fn committed(&self, turn: &mut Turn, committed: bool) {
        if committed {
            turn.commits += 1;
        }
        if committed && turn.commits.is_multiple_of(CHECKPOINT_EVERY) {
            let nudge = turn
                .checkpoints
                .get_or_insert_with(|| start_checkpoints(&self.path));
            // Full: a nudge is pending already. Disconnected: the thread is gone; start
            // another next time.
            if let Err(crossbeam_channel::TrySendError::Disconnected(())) = nudge.try_send(()) {
                turn.checkpoints = None;
            }
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

fn finish_all(jobs: Vec<Box<dyn Job>>, commit: Result<(), &SqliteError>) {
    for job in jobs {
        job.finish(commit);
    }
}

enum Attempt {
    /// The batch ran and every caller has its answer; `true` if it committed.
    Done(bool),
    /// The file's lock was held by another process; nothing ran.
    Busy(Vec<Box<dyn Job>>, SqliteError),
}

fn attempt(conn: &mut Connection, mut jobs: Vec<Box<dyn Job>>) -> Attempt {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = SqliteError::from(e);
            if e.is_busy() {
                return Attempt::Busy(jobs, e);
            }
            finish_all(jobs, Err(&e));
            return Attempt::Done(false);
        }
    };
    for job in &mut jobs {
        job.run(&mut tx);
    }
    match tx.commit() {
        Ok(()) => {
            finish_all(jobs, Ok(()));
            Attempt::Done(true)
        }
        Err(e) => {
            finish_all(jobs, Err(&SqliteError::from(e)));
            Attempt::Done(false)
        }
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The same settings as sqlx's connections (`Database::connect`), but no waiting for
    // the file's lock on an async thread (`Writer::run_batch` waits elsewhere), and no
    // checkpoints on commit (the checkpoint thread's job).
    conn.busy_timeout(Duration::ZERO)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 0;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the thread that checkpoints `path`'s WAL: on every nudge, and once a second.
/// It ends when the sender (the writer's slot) is dropped. A thread that cannot start or
/// open the file logs why; the next nudge finds the channel closed and starts another.
fn start_checkpoints(path: &Path) -> crossbeam_channel::Sender<()> {
    let (nudge, nudges) = crossbeam_channel::bounded::<()>(1);
    let path = path.to_owned();
    let started = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open the file to checkpoint it");
                    return;
                }
            };
            // Ends when the writer's slot (the sender) is gone.
            while !matches!(
                nudges.recv_timeout(Duration::from_secs(1)),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected)
            ) {
                // PASSIVE: copies what it can without waiting for readers or writers.
                let checkpoint =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                if let Err(e) = checkpoint {
                    tracing::debug!(path = %path.display(), error = %e, "a WAL checkpoint failed");
                }
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the WAL checkpoint thread");
    }
    nudge
}
