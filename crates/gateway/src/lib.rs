//! The gateway: the one public door (REST forwarding, GraphQL, API keys, rate limits arrive with their issues). For now a shell that owns its database and serves
//! health and metrics; its `domain`, `store` and wire faces arrive with its issue.
#![forbid(unsafe_code)]

use settings::{ServiceName, Settings};
use storage::Migrations;

pub const SERVICE: ServiceName = ServiceName::Gateway;

/// No tables yet: `/readyz` still proves the service's own database answers.
pub static MIGRATIONS: Migrations = Migrations::NONE;

/// Declared: its own database (no tables yet: `/readyz` still proves it answers), served
/// with health and metrics.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    server::Service::new(SERVICE, &[&MIGRATIONS])
        .open(settings)
        .await?
        .serve(axum::Router::new())
        .await
}
