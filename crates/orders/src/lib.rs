//! The orders service: accepts orders and hands them to the `order_processing` queue (its pipeline arrives with the orders issue). For now a shell that owns its database and serves
//! health and metrics; its `domain`, `store` and wire faces arrive with its issue.
#![forbid(unsafe_code)]

pub mod events;

use settings::{ServiceName, Settings};
use storage::Migrations;

pub const SERVICE: ServiceName = ServiceName::Orders;

/// No tables yet: `/readyz` still proves the service's own database answers.
pub static MIGRATIONS: Migrations = Migrations::NONE;

/// Declared: its own database and the seed's two channels, which it owns (declaring them
/// at start lets a producer that is not Brigade, the seed's pika script, feed
/// `order_processing` already, and `brigade dlq list order_processing` answer); their
/// depth and lag are watched for `/metrics`.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let mut parts = server::Service::new(SERVICE, &[&MIGRATIONS])
        .owning(events::channels())
        .open(settings)
        .await?;
    let broker = parts.broker.take();
    let mut app = parts.serve(axum::Router::new()).await?;
    if let Some(broker) = broker {
        let watch = messaging::observe::Watch {
            service: SERVICE.as_str(),
            queues: vec![events::ORDER_PROCESSING],
            // Billing's group, once billing consumes (the orders issue): its lag shows here.
            groups: vec![(events::ORDER_EVENTS, "billing")],
        };
        app.spawn_background(move |stop| {
            messaging::observe::run(broker, watch, std::time::Duration::from_secs(5), stop)
        });
    }
    Ok(app)
}
