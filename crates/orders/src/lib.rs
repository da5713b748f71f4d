//! The orders service: accepts orders synchronously (202 and a tracking id) and does
//! the heavy work behind the answer — its `order_processing` worker reserves stock in
//! catalog, billing charges, and its `orders` group on `order-events` follows billing's
//! outcome (paid, or the saga's compensation). `domain` holds the rules, `store` its own
//! database, `app` the use cases; `rest`, `grpc` and `consume` are its faces.
#![forbid(unsafe_code)]

pub mod app;
pub mod clients;
pub mod consume;
pub mod domain;
pub mod events;
pub mod graphql;
pub mod grpc;
pub mod rest;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use idempotency::Idempotency;
use messaging::StartFrom;
use messaging::worker::{self, WorkerOptions};
use settings::{ServiceName, Settings};

pub use store::{MIGRATIONS, OrdersStore};

pub const SERVICE: ServiceName = ServiceName::Orders;

/// Every table orders' database holds: its own, the idempotency store's, the outbox's.
pub static ALL_MIGRATIONS: &[&storage::Migrations] = &[
    &MIGRATIONS,
    &idempotency::MIGRATIONS,
    &messaging::outbox::MIGRATIONS,
];

/// How often orders by status are counted for `/metrics`.
const STATUS_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Declared: its own database and the seed's two channels, which it owns (declaring them
/// at start lets a producer that is not Brigade, the seed's pika script, feed
/// `order_processing` at once). Serves REST and gRPC, runs its outbox relay,
/// `orders.workers` workers on `order_processing` and one member of group `orders` on
/// `order-events`, and watches depth and lag for `/metrics`.
pub async fn build(settings: &Settings) -> Result<server::Application, server::StartError> {
    let mut parts = server::Service::new(SERVICE, ALL_MIGRATIONS)
        .owning(events::channels())
        .open(settings)
        .await?;
    let db = parts.db.clone();
    let idempotency = Idempotency::new(db.clone(), (&settings.idempotency).into());
    let clients = clients::Clients::new(settings).map_err(|e| server::StartError::Bind {
        service: SERVICE,
        addr: settings.services.orders.addr(),
        reason: e.to_string(),
    })?;
    // The relay's publishes are outbound calls like any other, with the seed's broker
    // timeout in place of the internal-call one.
    let publish_policy = resilience::downstream::Policy {
        timeout: settings.messaging.publish_timeout,
        ..resilience::downstream::Policy::from_outbound(&settings.outbound)
    };
    let outbox = messaging::outbox::Outbox::with_policy(db.clone(), "orders", publish_policy);
    let store = OrdersStore::with_outbox(db, outbox.clone());
    let broker = parts.broker.take();
    let orders = Arc::new(
        app::Orders::new(store.clone(), idempotency.clone(), clients).with_broker(broker.clone()),
    );
    let subgraph = graphql::router(orders.clone(), settings);
    let grpc = grpc::routes(orders.clone());
    let grpc_names = grpc.names().to_vec();
    let faces = rest::router(orders.clone())
        .merge(subgraph)
        .merge(server::grpc::face(grpc));
    let mut app = parts.serve(faces).await?;
    app.report_health_for(&grpc_names);
    let every = settings.idempotency.purge_every;
    app.spawn_background(move |stop| idempotency.run_purger(every, stop));
    app.spawn_background(move |stop| sample_statuses(store, stop));
    let Some(broker) = broker else {
        return Ok(app);
    };
    let relay = messaging::outbox::RelayOptions {
        poll: settings.messaging.relay_poll,
        ..messaging::outbox::RelayOptions::default()
    };
    let relay_broker = broker.clone();
    app.spawn_background(move |stop| outbox.run_relay(relay_broker, relay, stop));
    let options = WorkerOptions::from_settings(&settings.messaging);
    let prefetch = settings.orders.prefetch;
    for _ in 0..settings.orders.workers {
        let (broker, orders) = (broker.clone(), orders.clone());
        app.spawn_background(move |stop| {
            worker::supervise("order_processing", stop, move |stop| {
                let (broker, orders) = (broker.clone(), orders.clone());
                async move {
                    let consumer = broker
                        .queues
                        .consume(events::ORDER_PROCESSING, prefetch)
                        .await?;
                    let handler = |envelope| {
                        let orders = orders.clone();
                        async move { consume::process(&orders, envelope).await }
                    };
                    worker::run(events::ORDER_PROCESSING, consumer, options, handler, stop).await
                }
            })
        });
    }
    let (saga_broker, saga_orders) = (broker.clone(), orders);
    app.spawn_background(move |stop| {
        worker::supervise("order-events/orders", stop, move |stop| {
            let (broker, orders) = (saga_broker.clone(), saga_orders.clone());
            async move {
                let consumer = broker
                    .streams
                    .subscribe(
                        events::ORDER_EVENTS,
                        events::ORDERS_GROUP,
                        StartFrom::Earliest,
                    )
                    .await?;
                let handler = |envelope| {
                    let orders = orders.clone();
                    async move { consume::billing_outcome(&orders, envelope).await }
                };
                worker::run_stream(
                    events::ORDER_EVENTS,
                    events::ORDERS_GROUP,
                    consumer,
                    options,
                    handler,
                    stop,
                )
                .await
            }
        })
    });
    let watch = messaging::observe::Watch {
        service: SERVICE.as_str(),
        queues: vec![events::ORDER_PROCESSING],
        groups: vec![
            (events::ORDER_EVENTS, events::BILLING_GROUP),
            (events::ORDER_EVENTS, events::ORDERS_GROUP),
            (events::ORDER_EVENTS, events::ANALYTICS_GROUP),
        ],
    };
    app.spawn_background(move |stop| {
        messaging::observe::run(broker, watch, Duration::from_secs(5), stop)
    });
    Ok(app)
}

/// Orders by status as a gauge (`brigade_orders_by_status{status}`), every few seconds.
async fn sample_statuses(store: OrdersStore, stop: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(STATUS_SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.count_by_status().await {
            Ok(counts) => {
                for status in domain::Status::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| *s == status)
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!(app::series::BY_STATUS, "service" => SERVICE.as_str(), "status" => status.as_str())
                        .set(n as f64);
                }
            }
            Err(err) => tracing::debug!(error = %err, "could not count orders by status"),
        }
    }
}
