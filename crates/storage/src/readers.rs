//! Reads on a SQLite file without sqlx, with cached prepared statements on `rusqlite`
//! connections.
//!
//! Why not sqlx for these: sqlx's SQLite driver runs each connection on a worker thread
//! and hands every command *and every row* across a channel to the async side, and the
//! `Any` driver then converts each row once more. For a page of 50 products that was
//! ~135 µs of a ~330 µs request (BENCHMARKS.md, issue 12). rusqlite links the same
//! `libsqlite3-sys` as sqlx, so it is the same SQLite.
//!
//! **Where a read runs.** First on the calling thread, on a connection that thread keeps
//! for this database, with no waiting for locks (busy timeout 0): a read of a page of rows
//! already in memory takes tens of microseconds, less than rendering it, and a hand-off to
//! another thread and back cost more than the read itself on a loaded core (the profile in
//! BENCHMARKS.md). A read that would have to wait for a lock (`SQLITE_BUSY`, which WAL
//! readers meet only while another connection recovers or truncates the log) is never
//! waited for on an async worker: it goes to the reader threads, which own connections of
//! their own and wait up to the database's statement timeout. What this does not cover: a
//! database larger than memory, whose reads wait for the disk, would hold up the async
//! worker for that long (such a database belongs on PostgreSQL); and under heavy
//! contention SQLite retries WAL's read lock on its own, sleeping, before it gives up with
//! SQLITE_PROTOCOL (then the read goes to the reader threads as a busy one does).
//!
//! Readers see every committed write (WAL mode: each statement reads the latest commit),
//! so a write through the sqlx pool is visible to the next read here. The connections are
//! `query_only`: nothing written here could bypass a service's write path.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

/// A read job: runs on a reader's connection.
type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The readers of one SQLite file: each calling thread's own connection, and reader
/// threads for reads that must wait. Threads start on the first read that needs them and
/// end when the `Readers` is dropped; a calling thread's connection closes when that thread
/// next reads after the `Readers` is gone, or when the thread ends.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    threads: usize,
    busy_timeout: Duration,
    /// The reader threads' job queue, once they have started. A failed start is not kept:
    /// the next read that needs them tries again.
    started: OnceLock<crossbeam_channel::Sender<Job>>,
    /// Identifies this database among the connections a thread keeps; dropped with it.
    token: Arc<()>,
}

/// A calling thread's connection to one database.
struct Local {
    owner: Weak<()>,
    conn: Connection,
}

thread_local! {
    /// The connections this thread keeps, one per database it has read (a handful).
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

/// Why a read did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The reader threads could not start, or ended.
    #[error("the database's readers are unavailable: {0}")]
    Unavailable(String),
}

impl SqliteError {
    /// The same error once more (for each caller whose write shared a failed commit).
    pub fn again(&self) -> SqliteError {
        match self {
            SqliteError::Sqlite(rusqlite::Error::SqliteFailure(e, message)) => {
                SqliteError::Sqlite(rusqlite::Error::SqliteFailure(*e, message.clone()))
            }
            other => SqliteError::Unavailable(other.to_string()),
        }
    }

    /// Another connection held a lock for longer than the busy timeout (SQLITE_BUSY), or
    /// WAL's read lock could not be had after SQLite's own retries (SQLITE_PROTOCOL, under
    /// heavy contention): the database is busy, which a retry may get past.
    pub fn is_busy(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, FileLockingProtocolFailed};
        matches!(
            self,
            SqliteError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, DatabaseBusy | DatabaseLocked | FileLockingProtocolFailed)
        )
    }

    /// The database cannot be read right now (busy, its file gone or unreadable, or the
    /// readers down): a 503 the caller may retry, never a 500.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode::{CannotOpen, SystemIoFailure};
        match self {
            SqliteError::Unavailable(_) => true,
            SqliteError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                self.is_busy() || matches!(e.code, CannotOpen | SystemIoFailure)
            }
            SqliteError::Sqlite(_) => false,
        }
    }
}

impl Readers {
    /// Readers for the file at `path`, `threads` of them, each waiting up to
    /// `busy_timeout` for a lock (the database's statement timeout).
    pub fn new(path: &Path, threads: usize, busy_timeout: Duration) -> Self {
        Readers {
            path: path.to_owned(),
            threads: threads.max(1),
            busy_timeout,
            started: OnceLock::new(),
            token: Arc::new(()),
        }
    }

    /// Runs `f` on a connection to the database and returns its result: on this thread's
    /// own connection when no lock stands in the way, otherwise on a reader thread (see
    /// the module doc). If the caller stops waiting (its deadline passed) before a reader
    /// thread takes the job, the job is skipped.
    pub async fn read<R, F>(&self, f: F) -> Result<R, SqliteError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, SqliteError> + Send + 'static,
    {
        match self.read_here(&f) {
            Some(Err(e)) if e.is_busy() => self.read_on_thread(f).await,
            Some(done) => done,
            None => self.read_on_thread(f).await,
        }
    }

    /// `f` on this thread's connection, opened on first use; `None` when this thread
    /// cannot have one (it is already inside a read, or is shutting down).
    fn read_here<R>(
        &self,
        f: &impl Fn(&Connection) -> Result<R, SqliteError>,
    ) -> Option<Result<R, SqliteError>> {
        LOCAL
            .try_with(|local| {
                let mut local = local.try_borrow_mut().ok()?;
                let at = match local
                    .iter()
                    .position(|l| std::ptr::eq(l.owner.as_ptr(), Arc::as_ptr(&self.token)))
                {
                    Some(at) => at,
                    None => {
                        // Connections of databases that are gone are closed here.
                        local.retain(|l| l.owner.strong_count() > 0);
                        let conn = match connect(&self.path, Duration::ZERO) {
                            Ok(conn) => conn,
                            Err(e) => return Some(Err(SqliteError::from(e))),
                        };
                        local.push(Local {
                            owner: Arc::downgrade(&self.token),
                            conn,
                        });
                        local.len() - 1
                    }
                };
                Some(f(&local[at].conn))
            })
            .ok()
            .flatten()
    }

    /// `f` on one of the reader threads, which wait for locks up to the busy timeout.
    async fn read_on_thread<R, F>(&self, f: F) -> Result<R, SqliteError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, SqliteError> + Send + 'static,
    {
        let jobs = self.jobs()?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            if !tx.is_closed() {
                let _ = tx.send(f(conn));
            }
        });
        jobs.send(job)
            .map_err(|_| SqliteError::Unavailable("the reader threads ended".into()))?;
        rx.await
            .map_err(|_| SqliteError::Unavailable("a reader thread ended mid-read".into()))?
    }

    /// The job queue, starting the threads on first use. Two first uses at once may both
    /// start threads; the loser's queue is dropped at once, and its threads end with it.
    fn jobs(&self) -> Result<&crossbeam_channel::Sender<Job>, SqliteError> {
        if let Some(jobs) = self.started.get() {
            return Ok(jobs);
        }
        let jobs = self.start().map_err(SqliteError::Unavailable)?;
        Ok(self.started.get_or_init(|| jobs))
    }

    fn start(&self) -> Result<crossbeam_channel::Sender<Job>, String> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..self.threads {
            // Opened here, so that a file that cannot be opened is reported to the first
            // read instead of killing a thread silently.
            let conn = connect(&self.path, self.busy_timeout)
                .map_err(|e| format!("opening {} for reading: {e}", self.path.display()))?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || {
                    // Ends when every sender is gone (the `Readers` was dropped).
                    while let Ok(job) = rx.recv() {
                        job(&conn);
                    }
                })
                .map_err(|e| format!("starting a reader thread: {e}"))?;
        }
        Ok(tx)
    }
}

fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    // Read-write open (WAL's shared memory needs it) but refusing every write.
    conn.pragma_update(None, "query_only", true)?;
    // The statements of every read a service makes, prepared once per connection.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
