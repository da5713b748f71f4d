//! The payments sandbox's integration tests: one binary, a module per concern. Tests that
//! touch the database run on SQLite and on PostgreSQL (`on_both_backends!`, and
//! `storage::backend_tests!` for the store).
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Runs each named `async fn name(backend: Backend)` once against a sandbox on a fresh
/// SQLite file and once on a fresh PostgreSQL database, as `sqlite::name` and
/// `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Postgres).await;
                }
            )+
        }
    };
}

mod charges;
mod contract;
mod helpers;
mod refunds;
mod sandbox;
mod store;
