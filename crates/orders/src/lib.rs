//! The orders service: accepts orders and hands them to the `order_processing` queue (its pipeline arrives with the orders issue). For now a shell that owns its database and serves
//! health and metrics; its `domain`, `store` and wire faces arrive with its issue.
#![forbid(unsafe_code)]

pub mod events;

use settings::{ServiceName, Settings};
use storage::{Database, Migrations};

pub const SERVICE: ServiceName = ServiceName::Orders;

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
    // Orders owns the seed's two channels: declaring them now lets a producer that is
    // not Brigade (the seed's pika script) feed `order_processing` already, and
    // `brigade dlq list order_processing` answer.
    let messaging_error = |e: messaging::MessagingError| server::StartError::Messaging {
        service: SERVICE,
        reason: e.to_string(),
    };
    let broker = messaging::connect(settings)
        .await
        .map_err(messaging_error)?;
    messaging::declare(&broker, &events::channels(), &settings.messaging)
        .await
        .map_err(messaging_error)?;
    let mut app = server::Application::build(SERVICE, settings, db, axum::Router::new()).await?;
    let watch = messaging::observe::Watch {
        queues: vec![events::ORDER_PROCESSING],
        // Billing's group, once billing consumes (the orders issue): its lag shows here.
        groups: vec![(events::ORDER_EVENTS, "billing")],
    };
    app.spawn_background(move |stop| {
        messaging::observe::run(broker, watch, std::time::Duration::from_secs(5), stop)
    });
    Ok(app)
}
