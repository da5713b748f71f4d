//! The one thread that talks to the SQLite file, with group commit.
//!
//! Every operation of a [`super::Embedded`] store is a job sent to this thread. The thread
//! takes the first job, then every job already waiting (up to [`MAX_BATCH`]), runs them
//! all in one `BEGIN IMMEDIATE` transaction (each inside its own savepoint, so one job's
//! error undoes only that job), commits, and only then answers each caller. So a publish
//! returns after its transaction committed, and a thousand concurrent publishes cost one
//! commit, not a thousand.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use crate::error::{MessagingError, Result};

use super::BACKEND;

/// Most jobs committed in one transaction (bounds the time any one caller waits).
const MAX_BATCH: usize = 512;

/// What a job hands back once it ran: called with the commit's outcome.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One operation: runs against the connection (`None`: the transaction could not begin).
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// The sending side; cloning it is cheap. The thread ends when every clone is gone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Opens `path` (creating it and the schema) and starts the thread.
    pub(crate) async fn open(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let path = path.to_owned();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("messaging-embedded".into())
            .spawn(move || match connect(&path, busy_timeout) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    run(&conn, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| MessagingError::unavailable(BACKEND, e))?;
        answered(ready_rx.await)?;
        Ok(Self { tx })
    }

    /// Runs `f` in the next transaction; returns its result once the transaction
    /// committed (or the error that stopped it).
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(f, move |result| {
            let _ = tx.send(result);
        })?;
        rx.await
            .map_err(|_| MessagingError::unavailable(BACKEND, "the store's thread ended"))?
    }

    /// Like [`Writer::call`], but hands back the receiver: a caller that may be cancelled
    /// keeps it and awaits it again, so a result (a claim) is never lost.
    pub(crate) fn start<R, F>(&self, f: F) -> Result<oneshot::Receiver<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(f, move |result| {
            let _ = tx.send(result);
        })?;
        Ok(rx)
    }

    /// Runs `f` in the next transaction without waiting for it (used from `Drop`, where
    /// nobody can wait): a failure is logged.
    pub(crate) fn fire<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&Connection) -> Result<()> + Send + 'static,
    {
        let sent = self.submit(f, move |result: Result<()>| {
            if let Err(error) = result {
                tracing::warn!(backend = BACKEND, what, error = %error, "background store write failed");
            }
        });
        if sent.is_err() {
            tracing::debug!(backend = BACKEND, what, "store closed; write dropped");
        }
    }

    fn submit<R, F, D>(&self, f: F, done: D) -> Result<()>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        D: FnOnce(Result<R>) + Send + 'static,
    {
        let job: Job = Box::new(move |conn: Option<&Connection>| -> Reply {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(MessagingError::unavailable(
                    BACKEND,
                    "the transaction could not begin",
                )),
            };
            Box::new(move |commit: Result<(), String>| {
                done(match commit {
                    Ok(()) => result,
                    Err(reason) => Err(MessagingError::NotConfirmed {
                        backend: BACKEND,
                        reason,
                    }),
                });
            })
        });
        self.tx
            .send(job)
            .map_err(|_| MessagingError::unavailable(BACKEND, "the store's thread ended"))
    }
}

fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(busy_timeout).map_err(sql)?;
    // WAL: readers never block the writer, and a commit is one append to the log.
    // synchronous=NORMAL: in WAL mode a commit is durable against a crash of the
    // process (kill -9: the log is in the OS's page cache) but the last commits may be
    // lost if the machine loses power; FULL would fsync every commit (a few hundred
    // commits a second on this disk). See the module docs.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(sql)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let created = conn.execute_batch(super::schema::SCHEMA).map_err(sql);
    match created {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql)?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

fn run(conn: &Connection, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let began = exec(conn, "BEGIN IMMEDIATE");
        if let Err(e) = &began {
            tracing::warn!(backend = BACKEND, error = %e, "could not begin a transaction");
        }
        let ok = began.is_ok();
        for job in jobs.drain(..) {
            replies.push(job(ok.then_some(conn)));
        }
        let committed = if ok {
            exec(conn, "COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            })
        } else {
            Err("the transaction could not begin".to_owned())
        };
        metrics::histogram!(crate::series::EMBEDDED_BATCH_SIZE, "backend" => BACKEND)
            .record(replies.len() as f64);
        for reply in replies.drain(..) {
            reply(committed.clone());
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    exec(conn, "SAVEPOINT job").map_err(sql)?;
    match f(conn) {
        Ok(r) => {
            exec(conn, "RELEASE job").map_err(sql)?;
            Ok(r)
        }
        Err(e) => {
            let _ = exec(conn, "ROLLBACK TO job");
            let _ = exec(conn, "RELEASE job");
            Err(e)
        }
    }
}

/// A SQLite error as a messaging error: a busy or locked file is worth retrying.
pub(crate) fn sql(e: rusqlite::Error) -> MessagingError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            MessagingError::unavailable(BACKEND, e)
        }
        _ => MessagingError::backend(BACKEND, e),
    }
}

/// The result of a job sent to the store's thread, from its answer channel: the job's own
/// error, or Unavailable if the thread ended before answering.
pub(crate) fn answered<T>(
    answer: std::result::Result<Result<T>, tokio::sync::oneshot::error::RecvError>,
) -> Result<T> {
    answer.map_err(|_| MessagingError::unavailable(BACKEND, "the store's thread ended"))?
}
