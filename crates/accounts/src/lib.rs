//! The accounts service: users. `domain` holds the rules, `store` the service's own
//! database, `seed` the deterministic demo users; wire faces are added one module each.
#![forbid(unsafe_code)]

pub mod domain;
pub mod seed;
pub mod store;

use settings::{ServiceName, Settings};
use storage::Database;

pub use store::{AccountsStore, MIGRATIONS};

pub const SERVICE: ServiceName = ServiceName::Accounts;

/// Opens the accounts database, applies its migrations and binds its port.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let db = Database::open(
        &settings.database_url(SERVICE),
        &settings.database,
        &[&MIGRATIONS],
    )
    .await
    .map_err(|e| server::StartError::database(SERVICE, e))?;
    server::Application::build(SERVICE, settings, db, axum::Router::new()).await
}
