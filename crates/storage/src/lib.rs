//! Each service's own database, reached through `sqlx`'s `Any` driver so one repository
//! serves both backends: a SQLite file in WAL mode by default, PostgreSQL when the URL
//! says `postgres://`. Migrations (one directory per backend) run at start-up.
#![forbid(unsafe_code)]

pub mod cache;
mod readers;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

pub use readers::{Readers, SqliteError};
pub use rusqlite;
pub use writer::{Turn, Writer};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use settings::{DatabaseUrl, PoolSettings};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

pub use sqlx;

/// Which engine a [`Database`] talks to (dialects differ in a few statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One owner's migrations (a service's tables, or a shared crate's such as the
/// idempotency store), one set per backend: the dialects differ in DDL only.
///
/// A service's database may hold several owners' tables; each owner keeps its own history
/// table (`_migrations_<owner>`), so their version numbers never collide.
#[derive(Debug)]
pub struct Migrations {
    pub owner: &'static str,
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

impl Migrations {
    /// For services that own no tables yet: `/readyz` still proves the database answers.
    pub const NONE: Migrations = Migrations {
        owner: "none",
        sqlite: Migrator::DEFAULT,
        postgres: Migrator::DEFAULT,
    };

    /// This owner's migrator for `backend`, recording its history in its own table.
    fn migrator(&self, backend: Backend) -> Migrator {
        let source = match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        };
        let mut migrator = Migrator {
            migrations: source.migrations.clone(),
            ..Migrator::DEFAULT
        };
        migrator.dangerous_set_table_name(format!("_migrations_{}", self.owner));
        migrator
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: DatabaseUrl,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create directory {path} for database {url}: {source}")]
    CreateDir {
        path: String,
        url: DatabaseUrl,
        #[source]
        source: std::io::Error,
    },
    #[error("migrating database {url} failed: {source}")]
    Migrate {
        url: DatabaseUrl,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// A pool to one service's database, cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    /// Where sqlx's writes go. On SQLite, a pool of one connection, used in the
    /// process's turn to write ([`Writer`]); on PostgreSQL, the same pool as reads: its
    /// writers lock rows, not the database.
    writer: AnyPool,
    /// SQLite files only: the process's turn to write, and the rusqlite connection of
    /// the hot writes ([`Writer`]; why not sqlx for those is in its module).
    local_writer: Option<Arc<Writer>>,
    backend: Backend,
    url: DatabaseUrl,
    /// Set once this process has applied (or verified) every migration; `/readyz` reads it.
    migrated: Arc<AtomicBool>,
    acquire_timeout: Duration,
    /// SQLite files only: the reader threads that serve a service's hot reads
    /// ([`Readers`]; why not sqlx for those is in its module).
    readers: Option<Arc<Readers>>,
}

impl Database {
    /// Connects (creating the SQLite file and its directory if needed) and applies every
    /// owner's migrations for the URL's backend, in order.
    pub async fn open(
        url: &DatabaseUrl,
        pool: &PoolSettings,
        migrations: &[&Migrations],
    ) -> Result<Database, StorageError> {
        let db = Database::connect(url, pool).await?;
        db.migrate(migrations).await?;
        Ok(db)
    }

    pub async fn connect(url: &DatabaseUrl, pool: &PoolSettings) -> Result<Database, StorageError> {
        install_default_drivers();
        let backend = if url.is_postgres() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        if backend == Backend::Sqlite {
            ensure_sqlite_dir(url)?;
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(pool.max_connections)
            .acquire_timeout(pool.acquire_timeout);
        // The database's named timeout (`database.statement_timeout`), in milliseconds.
        let statement_ms = pool.statement_timeout.as_millis().max(1);
        if backend == Backend::Sqlite {
            // A SQLite "connection" is a file handle in this process: it cannot go stale
            // the way a socket to a server can, so pinging it before every checkout is a
            // wasted round trip to sqlx's worker thread (10-15% of a cached-miss read).
            options = options
                .test_before_acquire(false)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        // WAL lets readers run beside the writer; busy_timeout makes writers
                        // from several processes wait for each other (up to the statement
                        // timeout) instead of failing; NORMAL sync is durable across
                        // process crashes in WAL mode.
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = {statement_ms}; PRAGMA foreign_keys = ON;"
                        )))
                        .await?;
                        Ok(())
                    })
                });
        } else {
            options = options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // The server cancels a statement that runs past the timeout.
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "SET statement_timeout = {statement_ms}"
                    )))
                    .await?;
                    Ok(())
                })
            });
        }
        // A file only: every connection to `:memory:` is a database of its own.
        let writer_options = sqlite_path(url).map(|_| options.clone().max_connections(1));
        let pool_handle = connect_within(options, url, pool.connect_timeout).await?;
        let writer = match writer_options {
            Some(options) => connect_within(options, url, pool.connect_timeout).await?,
            None => pool_handle.clone(),
        };
        // As many readers as cores (more cannot run at once), within the pool's size.
        let readers = sqlite_path(url).map(|path| {
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            let threads = cores.min(pool.max_connections.max(1) as usize);
            Arc::new(Readers::new(&path, threads, pool.statement_timeout))
        });
        let local_writer = sqlite_path(url).map(|path| {
            Arc::new(Writer::new(
                &path,
                pool.statement_timeout,
                pool.acquire_timeout,
            ))
        });
        Ok(Database {
            pool: pool_handle,
            writer,
            local_writer,
            backend,
            url: url.clone(),
            migrated: Arc::new(AtomicBool::new(false)),
            acquire_timeout: pool.acquire_timeout,
            readers,
        })
    }

    pub async fn migrate(&self, migrations: &[&Migrations]) -> Result<(), StorageError> {
        for set in migrations {
            set.migrator(self.backend)
                .run(&self.pool)
                .await
                .map_err(|source| StorageError::Migrate {
                    url: self.url.clone(),
                    source,
                })?;
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Readiness: migrations applied and the database answers within the acquire timeout.
    pub async fn ping(&self) -> Result<(), StorageError> {
        if !self.migrated.load(Ordering::Acquire) {
            return Err(StorageError::Query(sqlx::Error::Protocol(
                "migrations not applied yet".into(),
            )));
        }
        match tokio::time::timeout(self.acquire_timeout, self.pool.execute("SELECT 1")).await {
            Ok(result) => result.map(|_| ()).map_err(StorageError::from),
            Err(_) => Err(StorageError::Timeout(self.acquire_timeout)),
        }
    }

    /// Begins a transaction that will write. On SQLite it waits for the process's turn
    /// to write ([`Writer::turn`]) and holds it until the transaction ends, and takes the
    /// file's lock up front (`BEGIN IMMEDIATE`), so a writer in another process makes it
    /// wait on the busy timeout instead of failing with SQLITE_BUSY when a read lock
    /// cannot be upgraded.
    ///
    /// On SQLite do not write in any other way (another transaction,
    /// [`Database::write_conn`], [`Writer::write`]) while holding it: that waits for the
    /// turn this transaction holds, and gives up after the acquire timeout (503).
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.turn().await?;
        let tx = match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        };
        Ok(InTurn {
            conn: tx,
            _turn: turn,
            after_commit: AfterCommit::default(),
        })
    }

    /// A connection for writes outside [`Database::begin_write`] (a single statement is
    /// its own transaction), in the process's turn to write on SQLite.
    pub async fn write_conn(&self) -> Result<WriteConn, sqlx::Error> {
        let turn = self.turn().await?;
        let conn = self.writer.acquire().await?;
        Ok(InTurn {
            conn,
            _turn: turn,
            after_commit: AfterCommit::default(),
        })
    }

    async fn turn(&self) -> Result<Option<Turn>, sqlx::Error> {
        match &self.local_writer {
            Some(writer) => writer.turn().await.map(Some),
            None => Ok(None),
        }
    }

    /// For reads (and migrations). Writes go through [`Database::begin_write`],
    /// [`Database::write_conn`] or [`Database::local_writer`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The rusqlite writer of a SQLite file; `None` on PostgreSQL (and in-memory SQLite),
    /// where writes go through sqlx.
    pub fn local_writer(&self) -> Option<&Writer> {
        self.local_writer.as_deref()
    }

    /// The reader threads of a SQLite file; `None` on PostgreSQL (and in-memory SQLite),
    /// where reads go through [`Database::pool`].
    pub fn readers(&self) -> Option<&Readers> {
        self.readers.as_deref()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// A write transaction (sqlx's), holding the process's turn to write on SQLite until it
/// ends. Dereferences to the transaction's connection, so repository functions taking
/// `&mut AnyConnection` run inside it.
pub type WriteTx = InTurn<sqlx::Transaction<'static, sqlx::Any>>;

/// A connection for autocommit writes, holding the process's turn to write on SQLite
/// until it is dropped.
pub type WriteConn = InTurn<sqlx::pool::PoolConnection<sqlx::Any>>;

/// A sqlx connection (or transaction) used in the process's turn to write ([`Writer`]);
/// dereferences to the connection.
#[derive(Debug)]
pub struct InTurn<C> {
    // Declared first, so it ends (a transaction rolls back if not committed) before the
    // turn passes on.
    conn: C,
    _turn: Option<Turn>,
    after_commit: AfterCommit,
}

/// What a write transaction runs once it has committed (see [`WriteTx::after_commit`]).
#[derive(Default)]
struct AfterCommit(Vec<Box<dyn FnOnce() + Send>>);

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AfterCommit({} effects)", self.0.len())
    }
}

impl WriteTx {
    /// Commits, then (once the turn to write has passed on) runs the effects registered
    /// with [`after_commit`](Self::after_commit); none of them run if the commit fails.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let InTurn {
            conn,
            _turn,
            after_commit,
        } = self;
        conn.commit().await?;
        drop(_turn);
        for effect in after_commit.0 {
            effect();
        }
        Ok(())
    }

    /// Registers `effect` to run once this transaction has committed, and only then (a
    /// rollback, or a drop, forgets it): what a write owes the rest of the process after
    /// its commit (forgetting cached rows, waking the outbox relay), registered by the
    /// write itself so no caller can forget it.
    pub fn after_commit(&mut self, effect: impl FnOnce() + Send + 'static) {
        self.after_commit.0.push(Box::new(effect));
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.conn.rollback().await
    }
}

impl<C: std::ops::Deref<Target = sqlx::AnyConnection>> std::ops::Deref for InTurn<C> {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<C: std::ops::DerefMut<Target = sqlx::AnyConnection>> std::ops::DerefMut for InTurn<C> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

async fn connect_within(
    options: AnyPoolOptions,
    url: &DatabaseUrl,
    within: Duration,
) -> Result<AnyPool, StorageError> {
    match tokio::time::timeout(within, options.connect(url.expose())).await {
        Ok(Ok(pool)) => Ok(pool),
        Ok(Err(source)) => Err(StorageError::Connect {
            url: url.clone(),
            source,
        }),
        Err(_) => Err(StorageError::Connect {
            url: url.clone(),
            source: sqlx::Error::PoolTimedOut,
        }),
    }
}

/// The file a SQLite URL names; `None` for PostgreSQL and in-memory databases.
fn sqlite_path(url: &DatabaseUrl) -> Option<std::path::PathBuf> {
    if url.is_postgres() {
        return None;
    }
    let raw = url.expose();
    let path = raw
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| std::path::PathBuf::from(path))
}

fn ensure_sqlite_dir(url: &DatabaseUrl) -> Result<(), StorageError> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StorageError::CreateDir {
            path: parent.display().to_string(),
            url: url.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A batched lookup's answer in the order it was asked: what was found (once per time
/// its id was asked) and the ids that were not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<T, Id> {
    pub found: Vec<T>,
    pub missing: Vec<Id>,
}

impl<T: Clone, Id: Copy + Ord> Found<T, Id> {
    /// `rows` (in any order) sorted out against `asked`.
    pub fn in_order(asked: &[Id], mut rows: Vec<T>, id_of: impl Fn(&T) -> Id) -> Self {
        rows.sort_unstable_by_key(&id_of);
        let mut found = Vec::with_capacity(asked.len());
        let mut missing = Vec::new();
        for id in asked {
            match rows.binary_search_by_key(id, &id_of) {
                Ok(at) => found.push(rows[at].clone()),
                Err(_) => missing.push(*id),
            }
        }
        Found { found, missing }
    }
}

/// The rows of `SELECT {columns} FROM {table} WHERE id IN (ids) ORDER BY id`: a batched
/// lookup (unknown ids are simply absent). One placeholder per id, since `= ANY($1)` is
/// PostgreSQL-only and a placeholder list works on both backends.
pub async fn rows_by_id<R>(
    conn: &mut sqlx::AnyConnection,
    columns: &str,
    table: &str,
    ids: &[i64],
) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE id IN ({}) ORDER BY id",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(*id);
    }
    query.fetch_all(conn).await
}

/// Whether an error is a unique/primary-key violation (a conflict, never a 500).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Whether a statement ran past `database.statement_timeout`: PostgreSQL cancelled it
/// (SQLSTATE 57014), or SQLite gave up waiting for another writer's lock (SQLITE_BUSY).
pub fn is_statement_timeout(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                Some("57014") | Some("5") | Some("517")
            )
        }
        _ => false,
    }
}

/// Whether an error is a foreign-key violation (a missing referenced row).
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// Timestamps are stored as integer milliseconds since the Unix epoch: the `Any`
/// driver has no portable timestamp type, and integers sort and compare the same way on
/// both backends.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a repository call can fail with, for any service. Converted to a [`problem::Problem`]
/// at one point (below), so a constraint violation is a 409 and never a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// An optimistic-concurrency check failed: the row changed since the caller read it.
    #[error("version {expected} is stale; the current version is {current}")]
    Stale { expected: i64, current: i64 },
    /// A row in the database breaks the domain's rules: corrupt data, never the caller's fault.
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A read or write through rusqlite ([`Readers`], [`Writer`]) failed.
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
}

impl From<StoreError> for problem::Problem {
    fn from(err: StoreError) -> Self {
        use problem::{Kind, Problem};
        match err {
            StoreError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            StoreError::Conflict(detail) => Problem::conflict(detail),
            StoreError::Stale { .. } => Problem::new(Kind::PreconditionFailed)
                .with_detail("the resource changed since you read it; fetch it again"),
            StoreError::Database(ref e) if is_unique_violation(e) => {
                Problem::conflict("a resource with these unique values already exists")
                    .with_source(err)
            }
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                Problem::unavailable("the database is busy; retry shortly")
                    .with_retry_after(Duration::from_secs(1))
                    .with_source(err)
            }
            StoreError::Database(ref e) if is_statement_timeout(e) => {
                Problem::unavailable("the database did not answer in time; retry shortly")
                    .with_retry_after(Duration::from_secs(1))
                    .with_source(err)
            }
            StoreError::Sqlite(ref e) if e.is_unavailable() => {
                Problem::unavailable("the database did not answer in time; retry shortly")
                    .with_retry_after(Duration::from_secs(1))
                    .with_source(err)
            }
            other => Problem::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Found;

    #[test]
    fn found_answers_in_the_order_asked_repeats_included() {
        let rows = vec![(7, "g"), (2, "b"), (5, "e")];
        let found = Found::in_order(&[5, 3, 2, 5, 9], rows, |r| r.0);
        assert_eq!(found.found, vec![(5, "e"), (2, "b"), (5, "e")]);
        assert_eq!(found.missing, vec![3, 9]);
    }
}
