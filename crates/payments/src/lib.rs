//! The payments sandbox (`payments-sandbox`): a Stripe-shaped payment provider that
//! billing charges through, its own HTTP server, so timeouts, declines and outages of an
//! external SaaS are exercised for real. `domain` holds the rules, `store` the ledger
//! (its own database), `app` the use cases and the behaviour set at run time, `rest` the
//! HTTP face.
#![forbid(unsafe_code)]

pub mod app;
pub mod domain;
pub mod rest;
pub mod store;

use idempotency::{Idempotency, IdempotencySettings};
use settings::{ServiceName, Settings};

pub use store::{MIGRATIONS, PaymentsStore};

pub const SERVICE: ServiceName = ServiceName::PaymentsSandbox;

/// Every table the sandbox's database holds: its own and the idempotency store's.
pub static ALL_MIGRATIONS: &[&storage::Migrations] = &[&MIGRATIONS, &idempotency::MIGRATIONS];

/// Opens the sandbox's database, applies its migrations (and the idempotency store's),
/// binds its port, and starts purging expired idempotency keys.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let parts = server::Service::new(SERVICE, ALL_MIGRATIONS)
        .open(settings)
        .await?;
    let db = parts.db.clone();
    let idempotency = Idempotency::new(db.clone(), keys(settings));
    let payments = app::Payments::new(PaymentsStore::new(db), idempotency.clone());
    let faces = rest::router(std::sync::Arc::new(rest::Shared { payments }));
    let mut app = parts.serve(faces).await?;
    let every = settings.idempotency.purge_every;
    app.spawn_background(move |stop| idempotency.run_purger(every, stop));
    Ok(app)
}

/// The configured key settings, with the lock held longer by the longest wait a
/// behaviour can set: a charge holds its key while it waits, and a retry meanwhile must
/// hear "in use", not take the key over and charge again.
fn keys(settings: &Settings) -> IdempotencySettings {
    let mut keys = IdempotencySettings::from(&settings.idempotency);
    keys.lock_timeout += domain::Behaviour::MAX_WAIT;
    keys
}
