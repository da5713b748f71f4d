//! Orders' message face: the seed's two channels, with the seed's payload shapes.
//!
//! - `order_processing`, a work queue: "process this order", one worker takes it
//!   (`{"order_id": "ORD-12345", "total": 1999.98}`, exactly what the seed's pika producer
//!   sends, so a producer that is not Brigade can feed it);
//! - `order-events`, a stream keyed by order id: "this happened to an order"
//!   (`{"event_type": "OrderCreated", "order_id": ..., "total": ...}`), read by billing and
//!   any other consumer group.
//!
//! The pipeline that produces and consumes them arrives with the orders issue; the
//! contract is fixed here so the AsyncAPI document and the interop tests can use it now.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const ORDER_PROCESSING: &str = "order_processing";
pub const ORDER_EVENTS: &str = "order-events";

/// The one message type of `order_processing`; assumed for a message that names none.
pub const PROCESS_ORDER: &str = "ProcessOrder";
pub const ORDER_CREATED: &str = "OrderCreated";

/// Process this order: reserve its stock and hand it to billing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessOrder {
    #[schema(example = "ORD-12345", min_length = 1, max_length = 64)]
    pub order_id: String,
    /// Decimal amount, at most two places.
    #[schema(example = 1999.98, minimum = 0)]
    pub total: f64,
}

/// An order was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCreated {
    /// Always `OrderCreated` (the seed's payload names its own type).
    #[schema(example = "OrderCreated", pattern = "^OrderCreated$")]
    pub event_type: String,
    #[schema(example = "ORD-12345")]
    pub order_id: String,
    #[schema(example = 1999.98)]
    pub total: f64,
}

/// The two channels, for the AsyncAPI document.
pub fn channels() -> Vec<messaging::asyncapi::Channel> {
    use messaging::asyncapi::{Channel, Message, Shape};
    vec![
        Channel {
            address: ORDER_PROCESSING,
            shape: Shape::Queue,
            description: "Orders waiting to be processed; one worker takes each (prefetch 1, \
                fair dispatch). Durable, persistent messages; a message that fails \
                max_deliveries times, or cannot be read, goes to `order_processing.dlq` \
                with its reason (`brigade dlq list order_processing`).",
            key: None,
            producer: "orders",
            consumers: &["orders-worker"],
            messages: vec![Message::of::<ProcessOrder>(
                PROCESS_ORDER,
                "Process this order. The type may be omitted (the seed's pika producer sends \
                 the bare JSON body): it is the queue's only type.",
            )],
        },
        Channel {
            address: ORDER_EVENTS,
            shape: Shape::Stream,
            description: "What happened to orders, retained (7 days by default) and \
                replayable; every consumer group sees every event.",
            key: Some("the order id"),
            producer: "orders",
            consumers: &["billing"],
            messages: vec![Message::of::<OrderCreated>(
                ORDER_CREATED,
                "An order was created.",
            )],
        },
    ]
}
