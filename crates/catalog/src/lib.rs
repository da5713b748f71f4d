//! The catalog service: products (the seed's Laptop and Mouse among them), their stock
//! and their reviews. `domain` holds the rules, `store` the service's own database,
//! `seed` the deterministic demo data; wire faces are added one module each.
#![forbid(unsafe_code)]

pub mod domain;
pub mod seed;
pub mod store;

use settings::{ServiceName, Settings};
use storage::Database;

pub use store::{CatalogStore, MIGRATIONS};

pub const SERVICE: ServiceName = ServiceName::Catalog;

/// Opens the catalog's database, applies its migrations and binds its port.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let db = Database::open(
        &settings.database_url(SERVICE),
        &settings.database,
        &[&MIGRATIONS],
    )
    .await
    .map_err(|e| server::StartError::database(SERVICE, e))?;
    let router = axum::Router::new();
    server::Application::build(SERVICE, settings, db, router).await
}
