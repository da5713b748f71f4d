//! Queue depth and consumer lag as Prometheus gauges ([`series::QUEUE_DEPTH`],
//! [`series::CONSUMER_LAG`]), sampled in the background by the services that own the
//! queues and groups. Deliveries, settles and dead letters are counted where they happen
//! (the broker's `series` decorator); the outbox backlog by its relay.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Broker, series};

/// What one service reports.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// The service that owns them (the `service` label).
    pub service: &'static str,
    /// Work queues whose depth (ready, in flight, dead) to report.
    pub queues: Vec<&'static str>,
    /// (stream, group) pairs whose lag to report.
    pub groups: Vec<(&'static str, &'static str)>,
}

/// Samples once.
pub async fn sample(broker: &Broker, watch: &Watch) {
    let (service, backend) = (watch.service, broker.backend);
    for queue in &watch.queues {
        match broker.queues.stats(queue).await {
            Ok(stats) => {
                for (state, n) in [
                    ("ready", stats.ready),
                    ("in_flight", stats.in_flight),
                    ("dead", stats.dead),
                ] {
                    metrics::gauge!(series::QUEUE_DEPTH,
                        "service" => service, "backend" => backend, "queue" => *queue, "state" => state)
                    .set(n as f64);
                }
            }
            Err(err) => tracing::debug!(queue, error = %err, "queue depth unavailable"),
        }
    }
    for (stream, group) in &watch.groups {
        match broker.streams.lag(stream, group).await {
            Ok(lag) => {
                metrics::gauge!(series::CONSUMER_LAG,
                    "service" => service, "backend" => backend, "stream" => *stream, "group" => *group)
                .set(lag.lag as f64);
            }
            // A group that has not subscribed yet has no lag to report.
            Err(err) => tracing::debug!(stream, group, error = %err, "consumer lag unavailable"),
        }
    }
}

/// Samples every `every` until `stop` fires.
pub async fn run(broker: Broker, watch: Watch, every: Duration, stop: CancellationToken) {
    series::describe();
    loop {
        sample(&broker, &watch).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
