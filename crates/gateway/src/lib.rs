//! The gateway: the one public door. It serves the tutorial's GraphQL schema over
//! catalog, accounts and orders (`graphql`, over the use cases in `app`) and forwards
//! `/v1/*` to the service that owns it (`forward`), after checking the caller's API key
//! (`keys`, `edge`). It keeps no copy of the services' data.
#![forbid(unsafe_code)]

pub mod admit;
pub mod app;
pub mod dashboard;
pub mod edge;
pub mod forward;
pub mod graphql;
pub mod keys;
pub mod live;
pub mod public_api;
pub mod web;

use std::sync::Arc;

use settings::{ServiceName, Settings};
use storage::Migrations;

pub const SERVICE: ServiceName = ServiceName::Gateway;

/// Its one table: the API keys.
pub static MIGRATIONS: &Migrations = &keys::MIGRATIONS;

/// Declared: its own database (the API keys), served with health, metrics,
/// `POST /graphql` and `/v1/*`.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let parts = server::Service::new(SERVICE, &[MIGRATIONS])
        .open(settings)
        .await?;
    let keys = keys::Keys::new(keys::KeyStore::new(parts.db.clone()));
    keys.reload().await.map_err(|e| server::StartError::Bind {
        service: SERVICE,
        addr: settings.services.gateway.addr(),
        reason: format!("the API keys could not be loaded: {e}"),
    })?;
    let signer =
        server::identity::Signer::for_settings(settings).map_err(|e| server::StartError::Bind {
            service: SERVICE,
            addr: settings.services.gateway.addr(),
            reason: format!("the internal identity key could not be read or made: {e}"),
        })?;
    let admission = admit::Admission::new(&settings.gateway.limits, settings.max_in_flight)
        .map_err(|reason| server::StartError::Bind {
            service: SERVICE,
            addr: settings.services.gateway.addr(),
            reason,
        })?;
    let admission = Arc::new(admission);
    let graphql = &settings.gateway.graphql;
    let buckets = Arc::new(graphql::limits::Buckets::new(
        graphql.bucket_size,
        graphql.restore_rate,
    ));
    let answers = Arc::new(graphql::answers::Answers::new(
        graphql,
        Arc::clone(&buckets),
    ));
    let edge = edge::Edge::new(keys.clone(), signer, Arc::clone(&admission), answers);
    let gateway = app::Gateway::new(settings).map_err(|e| server::StartError::Bind {
        service: SERVICE,
        addr: settings.services.gateway.addr(),
        reason: e.to_string(),
    })?;
    let gateway = Arc::new(gateway);
    let feed = Arc::new(live::OrderFeed::default());
    let schema = graphql::schema(
        Arc::clone(&gateway),
        Arc::clone(&feed),
        graphql,
        settings.profile,
        buckets,
    );
    let rest = forward::router(settings, edge.clone(), gateway.downstreams());
    let dashboard = dashboard::router(settings, edge.clone(), Arc::clone(&gateway));
    // The whole public REST API's document and its docs page.
    let docs = match serde_json::from_value(public_api::openapi()) {
        Ok(api) => server::rest::docs(api),
        Err(err) => {
            tracing::error!(%err, "the public API document is not valid OpenAPI; no /docs");
            axum::Router::new()
        }
    };
    let mut app = parts
        .serve(
            web::router(
                gateway,
                edge,
                schema,
                graphql,
                graphql.graphiql(settings.profile),
            )
            .merge(rest)
            .merge(docs)
            .merge(
                dashboard
                    .as_ref()
                    .map(|(routes, _)| routes.clone())
                    .unwrap_or_default(),
            ),
        )
        .await?
        .with_client_addresses();
    if let Some((_, collector)) = dashboard {
        app.spawn_background(collector);
    }
    let refresh = settings.gateway.keys.refresh;
    app.spawn_background(move |stop| keys.run_refresh(refresh, stop));
    app.spawn_background(move |stop| {
        admission.run_sweeper(std::time::Duration::from_secs(60), stop)
    });
    // Live orders read orders' `order-events`; the broker is reached in the background
    // (and again when it goes away), so queries and mutations never wait on it.
    let settings = settings.clone();
    app.spawn_background(move |stop| live::run_member(settings, feed, stop));
    Ok(app)
}
