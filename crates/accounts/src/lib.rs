//! The accounts service: users. `domain` holds the rules, `store` the service's own
//! database, `seed` the deterministic demo users; wire faces are added one module each.
#![forbid(unsafe_code)]

pub mod domain;
pub mod grpc;
pub mod rest;
pub mod seed;
pub mod store;

use idempotency::Idempotency;
use settings::{ServiceName, Settings};
use storage::Database;

pub use store::{AccountsStore, MIGRATIONS};

pub const SERVICE: ServiceName = ServiceName::Accounts;

/// Opens the accounts database, applies its migrations (and the idempotency store's),
/// binds its port, and starts purging expired idempotency keys.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let db = Database::open(
        &settings.database_url(SERVICE),
        &settings.database,
        &[&MIGRATIONS, &idempotency::MIGRATIONS],
    )
    .await
    .map_err(|e| server::StartError::database(SERVICE, e))?;
    let idempotency = Idempotency::new(db.clone(), (&settings.idempotency).into());
    let store = AccountsStore::new(db.clone());
    let grpc = grpc::routes(store.clone(), idempotency.clone());
    let grpc_names = grpc.names().to_vec();
    let faces = rest::router(std::sync::Arc::new(rest::Shared {
        store,
        idempotency: idempotency.clone(),
    }))
    .merge(server::grpc::face(grpc));
    let mut app = server::Application::build(SERVICE, settings, db, faces).await?;
    app.report_health_for(&grpc_names);
    let every = settings.idempotency.purge_every;
    app.spawn_background(move |stop| idempotency.run_purger(every, stop));
    Ok(app)
}
