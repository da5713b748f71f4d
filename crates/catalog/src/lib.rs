//! The catalog service: products (the seed's Laptop and Mouse among them), their stock
//! and their reviews. `domain` holds the rules, `store` the service's own database,
//! `seed` the deterministic demo data; wire faces are added one module each.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod app;
pub mod domain;
pub mod events;
pub mod graphql;
pub mod grpc;
pub mod rest;
pub mod seed;
pub mod store;

use idempotency::Idempotency;
use settings::{ServiceName, Settings};

pub use store::{CatalogStore, MIGRATIONS};

pub const SERVICE: ServiceName = ServiceName::Catalog;

/// Every table catalog's database holds: its own, the idempotency store's, and the
/// outbox's (every product write puts its event there in the same transaction).
pub static ALL_MIGRATIONS: &[&storage::Migrations] = &[
    &MIGRATIONS,
    &idempotency::MIGRATIONS,
    &messaging::outbox::MIGRATIONS,
];

/// Opens the catalog's database, applies its migrations (and the idempotency store's),
/// binds its port, and starts purging expired idempotency keys.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let mut parts = server::Service::new(SERVICE, ALL_MIGRATIONS)
        .owning(events::channels())
        .open(settings)
        .await?;
    let db = parts.db.clone();
    let idempotency = Idempotency::new(db.clone(), (&settings.idempotency).into());
    let accounts = accounts::Accounts::new(settings).map_err(|e| server::StartError::Bind {
        service: SERVICE,
        addr: settings.services.catalog.addr(),
        reason: e.to_string(),
    })?;
    // The relay's publishes are outbound calls like any other, with the seed's broker
    // timeout (`messaging.publish_timeout`) in place of the internal-call one.
    let publish_policy = resilience::downstream::Policy {
        timeout: settings.messaging.publish_timeout,
        ..resilience::downstream::Policy::from_outbound(&settings.outbound)
    };
    let store = CatalogStore::with_read_cache(
        db.clone(),
        settings.catalog.read_cache_ttl,
        settings.catalog.read_cache_capacity,
    )
    .with_outbox(messaging::outbox::Outbox::with_policy(
        db.clone(),
        "catalog",
        publish_policy,
    ));
    let catalog = app::Catalog::new(store.clone(), idempotency.clone(), accounts);
    let subgraph = graphql::router(catalog.clone(), settings);
    let grpc = grpc::routes(std::sync::Arc::new(catalog.clone()));
    let grpc_names = grpc.names().to_vec();
    let faces = rest::router(std::sync::Arc::new(rest::Shared {
        catalog,
        rendered: rest::Rendered::new(settings.catalog.read_cache_capacity),
    }))
    .merge(subgraph)
    .merge(server::grpc::face(grpc));
    let outbox = store.outbox().clone();
    let broker = parts.broker.take();
    let mut app = parts.serve(faces).await?;
    app.report_health_for(&grpc_names);
    let every = settings.idempotency.purge_every;
    app.spawn_background(move |stop| idempotency.run_purger(every, stop));
    let relay = messaging::outbox::RelayOptions {
        poll: settings.messaging.relay_poll,
        ..messaging::outbox::RelayOptions::default()
    };
    if let Some(broker) = broker {
        app.spawn_background(move |stop| outbox.run_relay(broker, relay, stop));
    }
    // The inbox beside the outbox keeps handled ids as long as a redelivery or re-publish
    // can come (the streams' retention), purged on the idempotency keys' cadence.
    let (inbox_db, keep) = (app.database().clone(), settings.messaging.retention);
    app.spawn_background(move |stop| messaging::inbox::run_purger(inbox_db, keep, every, stop));
    Ok(app)
}
