//! The gateway: the one public door. Today it serves the tutorial's GraphQL schema over
//! catalog and accounts (`graphql`, over the use cases in `app`); REST forwarding, API
//! keys and rate limits arrive with their issue. It keeps no copy of the services' data.
#![forbid(unsafe_code)]

pub mod app;
pub mod graphql;
pub mod live;
pub mod web;

use std::sync::Arc;

use settings::{ServiceName, Settings};
use storage::Migrations;

pub const SERVICE: ServiceName = ServiceName::Gateway;

/// No tables yet: `/readyz` still proves the service's own database answers.
pub static MIGRATIONS: Migrations = Migrations::NONE;

/// Declared: its own database (no tables yet: `/readyz` still proves it answers), served
/// with health, metrics and `POST /graphql`.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let parts = server::Service::new(SERVICE, &[&MIGRATIONS])
        .open(settings)
        .await?;
    let gateway = app::Gateway::new(settings).map_err(|e| server::StartError::Bind {
        service: SERVICE,
        addr: settings.services.gateway.addr(),
        reason: format!("the catalog or accounts address is not a valid URL: {e}"),
    })?;
    let gateway = Arc::new(gateway);
    let feed = Arc::new(live::OrderFeed::default());
    let graphql = &settings.gateway.graphql;
    let schema = graphql::schema(
        Arc::clone(&gateway),
        Arc::clone(&feed),
        graphql,
        settings.profile,
    );
    let mut app = parts
        .serve(web::router(
            gateway,
            schema,
            graphql,
            graphql.graphiql(settings.profile),
        ))
        .await?
        .with_client_addresses();
    // Live orders read orders' `order-events`; the broker is reached in the background
    // (and again when it goes away), so queries and mutations never wait on it.
    let settings = settings.clone();
    app.spawn_background(move |stop| live::run_member(settings, feed, stop));
    Ok(app)
}
