//! The payments sandbox (`payments-sandbox`): a Stripe-shaped payment provider that
//! billing charges through, its own HTTP server, so timeouts, declines and outages of an
//! external SaaS are exercised for real.
#![forbid(unsafe_code)]

use settings::{ServiceName, Settings};
use storage::Migrations;

pub const SERVICE: ServiceName = ServiceName::PaymentsSandbox;

pub static MIGRATIONS: Migrations = Migrations::NONE;

pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    server::Service::new(SERVICE, &[&MIGRATIONS])
        .open(settings)
        .await?
        .serve(axum::Router::new())
        .await
}
