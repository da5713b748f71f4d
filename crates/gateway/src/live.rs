//! Live orders: the gateway reads orders' `order-events` stream (its own consumer group,
//! `gateway`, from the latest event) and rings every subscription watching the order an
//! event names; the subscription then reads the order from orders and pushes it if it
//! moved. A ring only says "look again", so a lost or duplicated event costs nothing but a
//! read, and each subscription also looks again every [`RECHECK`] on its own, in case the
//! stream is behind or another gateway's member got the event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use messaging::worker::{self, HandleError, WorkerOptions};
use messaging::{Broker, Envelope, StartFrom};
use settings::Settings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The stream orders publishes every change of an order on, and the gateway's group.
pub const ORDER_EVENTS: &str = "order-events";
pub const GROUP: &str = "gateway";

/// How often a subscription reads its order without being rung.
pub const RECHECK: Duration = Duration::from_secs(2);

/// Who watches which order.
#[derive(Debug, Default)]
pub struct OrderFeed {
    watchers: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl OrderFeed {
    /// Most orders watched before finished watches are swept out.
    const SWEEP_AT: usize = 10_000;

    /// A receiver rung each time an event names `order`.
    pub fn watch(&self, order: &str) -> watch::Receiver<u64> {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        if watchers.len() >= Self::SWEEP_AT {
            watchers.retain(|_, tx| tx.receiver_count() > 0);
        }
        watchers
            .entry(order.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Rings whoever watches `order` (and forgets the order if nobody does any more).
    pub fn ring(&self, order: &str) {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = watchers.get(order) {
            if tx.receiver_count() == 0 {
                watchers.remove(order);
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

/// Reads `order-events` as a member of group `gateway` until `stop`, ringing `feed` for
/// each event's `order_id` (events without one are skipped). Supervised: a broker not
/// reachable yet or gone away, or a stream that does not exist yet (orders not started),
/// is tried again.
pub async fn run_member(settings: Settings, feed: Arc<OrderFeed>, stop: CancellationToken) {
    let options = WorkerOptions::default();
    let broker: Arc<tokio::sync::OnceCell<Broker>> = Arc::default();
    worker::supervise("order-events/gateway", stop, move |stop| {
        let (settings, broker, feed) = (settings.clone(), Arc::clone(&broker), Arc::clone(&feed));
        async move {
            let broker = broker
                .get_or_try_init(|| async {
                    messaging::connect(&settings)
                        .await
                        .map(|b| b.for_service(crate::SERVICE.as_str()))
                })
                .await?;
            let consumer = broker
                .streams
                .subscribe(ORDER_EVENTS, GROUP, StartFrom::Latest)
                .await?;
            let handler = |envelope: Envelope| {
                let feed = Arc::clone(&feed);
                async move {
                    if let Some(order) = envelope.payload["order_id"].as_str() {
                        feed.ring(order);
                    }
                    Ok::<(), HandleError>(())
                }
            };
            worker::run_stream(ORDER_EVENTS, GROUP, consumer, options, handler, stop).await
        }
    })
    .await;
}
