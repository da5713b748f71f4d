//! The billing service: charges each confirmed order exactly once through a payment
//! provider and refunds it if the order is cancelled, as consumer group `billing` on
//! orders' `order-events` stream, publishing `OrderPaid`, `PaymentFailed` and
//! `OrderRefunded` back on it through its outbox. `domain` holds the rules, `store` its
//! own database (`payments`), `provider` the provider's client, `app` the use cases;
//! `consume` (the group's members), `events` (what it publishes) and `rest` (an order's
//! payment) are its faces. `analytics` is a module apart: consumer group `analytics` on the
//! same stream, keeping its own projection (orders and revenue per product) in its own
//! tables, rebuilt from the stream by `brigade replay analytics`.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod app;
pub mod consume;
pub mod domain;
pub mod events;
pub mod provider;
pub mod rest;
pub mod series;
pub mod store;

use server::StartError;
use settings::{ServiceName, Settings};

pub use store::{BillingStore, MIGRATIONS};

pub const SERVICE: ServiceName = ServiceName::Billing;

/// Every table billing's database holds: its own and the outbox's and inbox's (a payment,
/// its event and the handled event's id commit together).
pub static ALL_MIGRATIONS: &[&storage::Migrations] = &[&MIGRATIONS, &messaging::outbox::MIGRATIONS];

/// Opens billing's database (migrated), connects to the messaging backend, binds its
/// port, and starts its background work: the group's members, the outbox relay, the
/// inbox purger and the member of group `analytics`.
pub async fn build(settings: &Settings) -> Result<server::Application, StartError> {
    let parts = server::Service::new(SERVICE, ALL_MIGRATIONS)
        .open(settings)
        .await?;
    let db = parts.db.clone();
    let messaging = |e: messaging::MessagingError| StartError::Messaging {
        service: SERVICE,
        reason: e.to_string(),
    };
    // Billing owns no channel: it reads and writes orders' `order-events`. Declaring it
    // again (idempotent) lets billing start first, or alone, and still join its group.
    let broker = messaging::connect(settings)
        .await
        .map_err(messaging)?
        .for_service(SERVICE.as_str());
    let order_events: Vec<_> = orders::events::channels()
        .into_iter()
        .filter(|c| c.address == events::STREAM)
        .collect();
    messaging::declare(&broker, &order_events, &settings.messaging)
        .await
        .map_err(messaging)?;
    let provider = provider::Provider::new(settings).map_err(|reason| StartError::Bind {
        service: SERVICE,
        addr: settings.services.billing.addr(),
        reason: format!("the payment provider's client: {reason}"),
    })?;
    // The relay's publishes are outbound calls like any other, with the seed's broker
    // timeout (`messaging.publish_timeout`) in place of the internal-call one.
    let publish_policy = resilience::downstream::Policy {
        timeout: settings.messaging.publish_timeout,
        ..resilience::downstream::Policy::from_outbound(&settings.outbound)
    };
    let outbox =
        messaging::outbox::Outbox::with_policy(db.clone(), SERVICE.as_str(), publish_policy);
    let billing = app::Billing::new(BillingStore::new(db.clone(), outbox.clone()), provider);
    let analytics = analytics::projection(db.clone());
    let faces = rest::router(std::sync::Arc::new(rest::Shared {
        billing: billing.clone(),
        analytics: analytics.clone(),
    }));
    let mut app = parts.serve(faces).await?;
    // Once the process's recorder is installed (serving installs it).
    series::describe();

    let relay = messaging::outbox::RelayOptions {
        poll: settings.messaging.relay_poll,
        ..messaging::outbox::RelayOptions::default()
    };
    let relay_broker = broker.clone();
    app.spawn_background(move |stop| outbox.run_relay(relay_broker, relay, stop));
    // The inbox keeps handled ids as long as a redelivery or re-publish can come (the
    // stream's retention), purged on the idempotency keys' cadence.
    let (inbox_db, keep, every) = (
        db,
        settings.messaging.retention,
        settings.idempotency.purge_every,
    );
    app.spawn_background(move |stop| messaging::inbox::run_purger(inbox_db, keep, every, stop));
    let options = messaging::worker::WorkerOptions::from_settings(&settings.messaging);
    for _ in 0..consume::MEMBERS {
        let (broker, billing) = (broker.clone(), billing.clone());
        app.spawn_background(move |stop| consume::run_member(broker, billing, options, stop));
    }
    // Group `analytics` (a new group starts at the earliest event): one member, whose
    // writes are small; several billing processes share the stream's partitions.
    app.spawn_background(move |stop| analytics::run_member(broker, analytics, options, stop));
    Ok(app)
}
