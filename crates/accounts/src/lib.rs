//! The accounts service: users. `domain` holds the rules, `store` the service's own
//! database, `seed` the deterministic demo users; wire faces are added one module each.
#![forbid(unsafe_code)]

pub mod app;
pub mod domain;
pub mod graphql;
pub mod grpc;
pub mod rest;
pub mod seed;
pub mod store;

use idempotency::Idempotency;
use settings::{ServiceName, Settings};

pub use store::{AccountsStore, MIGRATIONS};

pub const SERVICE: ServiceName = ServiceName::Accounts;

/// Every table accounts' database holds: its own and the idempotency store's.
pub static ALL_MIGRATIONS: &[&storage::Migrations] = &[&MIGRATIONS, &idempotency::MIGRATIONS];

/// Opens the accounts database, applies its migrations (and the idempotency store's),
/// binds its port, and starts purging expired idempotency keys.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let parts = server::Service::new(SERVICE, ALL_MIGRATIONS)
        .open(settings)
        .await?;
    let db = parts.db.clone();
    let idempotency = Idempotency::new(db.clone(), (&settings.idempotency).into());
    let store = AccountsStore::new(db.clone());
    let accounts = app::Accounts::new(store, idempotency.clone());
    let subgraph = graphql::router(accounts.clone(), settings);
    let grpc = grpc::routes(accounts.clone());
    let grpc_names = grpc.names().to_vec();
    let faces = rest::router(std::sync::Arc::new(rest::Shared { accounts }))
        .merge(subgraph)
        .merge(server::grpc::face(grpc));
    let mut app = parts.serve(faces).await?;
    app.report_health_for(&grpc_names);
    let every = settings.idempotency.purge_every;
    app.spawn_background(move |stop| idempotency.run_purger(every, stop));
    Ok(app)
}
