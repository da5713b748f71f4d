//! A fresh database per test, on either backend, cleaned up when the test ends.
//!
//! PostgreSQL tests use the server at `BRIGADE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`): each test creates its own database
//! named `brigade_test_<uuid>` and drops it (with `FORCE`) when its handle drops, even if
//! the test panicked.
// Test support: a helper that cannot set up its database must fail the test loudly.
#![allow(clippy::expect_used)]

use settings::{DatabaseUrl, PoolSettings};
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::{Database, Migrations};

pub const POSTGRES_URL_VAR: &str = "BRIGADE_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL tests create their databases through.
pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub db: Database,
    /// PostgreSQL: the database, dropped after `db`.
    _pg: Option<PostgresDatabase>,
    /// SQLite: the directory holding the file.
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub fn url(&self) -> &DatabaseUrl {
        self.db.url()
    }
}

fn pool_settings() -> PoolSettings {
    PoolSettings::default()
}

/// A fresh, migrated SQLite file in a temporary directory.
pub async fn sqlite(migrations: &[&Migrations]) -> TestDatabase {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = DatabaseUrl::sqlite_file(&dir.path().join("test.db"));
    let db = Database::open(&url, &pool_settings(), migrations)
        .await
        .expect("open SQLite test database");
    TestDatabase {
        db,
        _pg: None,
        _dir: Some(dir),
    }
}

/// A fresh, migrated PostgreSQL database. Fails the test, saying how to start the
/// server, when PostgreSQL is not reachable.
pub async fn postgres(migrations: &[&Migrations]) -> TestDatabase {
    let pg = postgres_database(&fresh_name()).await;
    let db = Database::open(&pg.url, &pool_settings(), migrations)
        .await
        .expect("open PostgreSQL test database");
    TestDatabase {
        db,
        _pg: Some(pg),
        _dir: None,
    }
}

/// An empty PostgreSQL database of one test's (for tests that start whole services on
/// PostgreSQL), dropped when this handle drops — also when the test failed.
#[derive(Debug)]
pub struct PostgresDatabase {
    pub url: DatabaseUrl,
    name: String,
}

impl PostgresDatabase {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime that is shutting down; use a thread of our own.
        let handle = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_postgres_database(&name));
            }
        });
        let _ = handle.join();
    }
}

/// Creates an empty PostgreSQL database named `name`, dropped with its handle.
pub async fn postgres_database(name: &str) -> PostgresDatabase {
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({err}). Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
             or point {POSTGRES_URL_VAR} at a server."
            )
        });
    // The name is ours (`fresh_name`), never user input.
    conn.execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .expect("CREATE DATABASE");
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let url = DatabaseUrl::parse(&format!("{base}/{name}")).expect("postgres URL");
    PostgresDatabase {
        url,
        name: name.to_owned(),
    }
}

/// Drops a database made by [`postgres_database`], disconnecting whoever still uses it.
pub async fn drop_postgres_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = conn
            .execute(AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .await;
        let _ = conn.close().await;
    }
}

/// `brigade_test_<uuid>`: unique per test and per run, so runs never see each other.
pub fn fresh_name() -> String {
    format!("brigade_test_{}", uuid::Uuid::new_v4().simple())
}

/// Runs each named async test function (`async fn name(db: &Database)`) once on a fresh
/// SQLite database and once on a fresh PostgreSQL database, as `sqlite::name` and
/// `postgres::name`: one conformance suite, both backends. `$migrations` is a
/// `&[&Migrations]` expression.
#[macro_export]
macro_rules! backend_tests {
    ($migrations:expr; $($name:ident),+ $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let t = $crate::testing::sqlite($migrations).await;
                    super::$name(&t.db).await;
                }
            )+
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let t = $crate::testing::postgres($migrations).await;
                    super::$name(&t.db).await;
                }
            )+
        }
    };
}
