//! The gateway: the one public door (REST forwarding, GraphQL, API keys, rate limits arrive with their issues). For now a shell that owns its database and serves
//! health and metrics; its `domain`, `store` and wire faces arrive with its issue.
#![forbid(unsafe_code)]

use settings::{ServiceName, Settings};
use storage::{Database, Migrations};

pub const SERVICE: ServiceName = ServiceName::Gateway;

/// No tables yet: `/readyz` still proves the service's own database answers.
pub static MIGRATIONS: Migrations = Migrations::NONE;

/// Opens the service's database and binds its port.
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
