//! Orders' message face: the seed's two channels, with the seed's payload shapes.
//!
//! - `order_processing`, a work queue: "process this order", one worker takes it
//!   (`{"order_id": "ORD-12345", "total": 1999.98}`, exactly what the seed's pika producer
//!   sends, so a producer that is not Brigade can feed it);
//! - `order-events`, a stream keyed by order id: "this happened to an order"
//!   (`{"event_type": "OrderCreated", "order_id": ..., "total": ...}`), read by billing,
//!   orders itself (the saga's replies), analytics and any other consumer group. Every
//!   event keeps the seed's three fields; what we add is additive (optional for a
//!   producer that is not ours). Orders publishes the order's own transitions; billing
//!   publishes `OrderPaid`, `PaymentFailed` and `OrderRefunded` on the same stream, keyed
//!   by the same order id, so every consumer sees one order's story in order.
//!
//! Money on these channels is the seed's decimal `total` (for interop) plus the exact
//! `total_minor` (integer cents) that our consumers use.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const ORDER_PROCESSING: &str = "order_processing";
pub const ORDER_EVENTS: &str = "order-events";

/// The one message type of `order_processing`; assumed for a message that names none.
pub const PROCESS_ORDER: &str = "ProcessOrder";
pub const ORDER_CREATED: &str = "OrderCreated";
pub const ORDER_CONFIRMED: &str = "OrderConfirmed";
pub const ORDER_REJECTED: &str = "OrderRejected";
pub const ORDER_CANCELLED: &str = "OrderCancelled";
pub const ORDER_PAID: &str = "OrderPaid";
pub const PAYMENT_FAILED: &str = "PaymentFailed";
pub const ORDER_REFUNDED: &str = "OrderRefunded";

/// The consumer groups on `order-events`.
pub const BILLING_GROUP: &str = "billing";
pub const ORDERS_GROUP: &str = "orders";
pub const ANALYTICS_GROUP: &str = "analytics";

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

/// One line of an order, priced when the order was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub product_id: i64,
    #[schema(minimum = 1)]
    pub quantity: i64,
    /// The product's price when the order was accepted, in cents.
    pub unit_price_minor: i64,
}

/// An order was accepted (`PENDING`).
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
    /// Ours, additive: absent from a producer that only knows the seed's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<OrderLine>,
}

/// Its stock is reserved (`CONFIRMED`): billing charges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmed {
    #[schema(pattern = "^OrderConfirmed$")]
    pub event_type: String,
    pub order_id: String,
    pub total: f64,
    pub total_minor: i64,
    #[schema(example = "usd")]
    pub currency: String,
    pub user_id: i64,
}

/// Its stock could not be reserved (`REJECTED`), with the refusal's problem details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRejected {
    #[schema(pattern = "^OrderRejected$")]
    pub event_type: String,
    pub order_id: String,
    pub total: f64,
    /// The problem `type` URI, e.g. `https://brigade.dev/problems/insufficient-stock`.
    pub problem_type: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
}

/// It was cancelled (`CANCELLED`): by its customer, or because payment failed. Its stock
/// is released; billing refunds it if it was charged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    #[schema(pattern = "^OrderCancelled$")]
    pub event_type: String,
    pub order_id: String,
    pub total: f64,
    /// `customer` (`POST /v1/orders/{id}/cancel`) or `payment_failed`.
    #[schema(example = "customer")]
    pub reason: String,
}

/// Billing charged it (`PAID`). Published by billing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPaid {
    #[schema(pattern = "^OrderPaid$")]
    pub event_type: String,
    pub order_id: String,
    pub total: f64,
    pub total_minor: i64,
    /// The provider's charge id.
    #[schema(example = "ch_0192f0c4a3b87c21a4f6d8e9b0c1d2e3")]
    pub charge_id: String,
}

/// The provider declined the charge: orders compensates (releases stock, cancels).
/// Published by billing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentFailed {
    #[schema(pattern = "^PaymentFailed$")]
    pub event_type: String,
    pub order_id: String,
    pub total: f64,
    /// The provider's decline code, e.g. `card_declined`.
    pub code: String,
    pub reason: String,
}

/// A cancelled order's charge was refunded. Published by billing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRefunded {
    #[schema(pattern = "^OrderRefunded$")]
    pub event_type: String,
    pub order_id: String,
    pub total: f64,
    pub refund_id: String,
    pub amount_minor: i64,
}

/// The two channels, for the AsyncAPI document.
pub fn channels() -> Vec<messaging::asyncapi::Channel> {
    use messaging::asyncapi::{Channel, Message, Shape};
    vec![
        Channel {
            address: ORDER_PROCESSING,
            shape: Shape::Queue,
            description: "Orders waiting to be processed; one worker takes each \
                (`orders.prefetch` unsettled per worker, fair dispatch). Durable, persistent \
                messages; a message that fails max_deliveries times, or cannot be read, goes \
                to `order_processing.dlq` with its reason (`brigade dlq list \
                order_processing`).",
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
                replayable; every consumer group sees every event. Orders publishes an \
                order's transitions; billing publishes its payment outcomes (OrderPaid, \
                PaymentFailed, OrderRefunded) keyed by the same order id.",
            key: Some("the order id"),
            producer: "orders",
            consumers: &[BILLING_GROUP, ORDERS_GROUP, ANALYTICS_GROUP],
            messages: vec![
                Message::of::<OrderCreated>(ORDER_CREATED, "An order was accepted (PENDING)."),
                Message::of::<OrderConfirmed>(
                    ORDER_CONFIRMED,
                    "Its stock is reserved (CONFIRMED); billing charges it.",
                ),
                Message::of::<OrderRejected>(
                    ORDER_REJECTED,
                    "Its stock could not be reserved (REJECTED).",
                ),
                Message::of::<OrderCancelled>(
                    ORDER_CANCELLED,
                    "It was cancelled (CANCELLED); its stock is released, a charge refunded.",
                ),
                Message::of::<OrderPaid>(ORDER_PAID, "Billing charged it (PAID)."),
                Message::of::<PaymentFailed>(
                    PAYMENT_FAILED,
                    "The provider declined its charge; orders cancels it.",
                ),
                Message::of::<OrderRefunded>(
                    ORDER_REFUNDED,
                    "Its charge was refunded after a cancellation.",
                ),
            ],
        },
    ]
}

// ---- Envelopes for an order's transitions (the domain → the wire) ----

use crate::domain::Order;
use messaging::Envelope;

fn decimal(minor: i64) -> f64 {
    money::Money::from_minor(minor).map_or(0.0, money::Money::to_decimal)
}

fn envelope(kind: &str, order_id: &str, payload: impl Serialize) -> Envelope {
    // The payload types always serialize.
    let json = serde_json::to_value(payload).unwrap_or_default();
    Envelope::new(kind, json).with_key(order_id)
}

/// `ProcessOrder` on `order_processing`: the seed's shape, the order id is the key.
pub fn process_order(order: &Order) -> Envelope {
    envelope(
        PROCESS_ORDER,
        order.id.as_str(),
        ProcessOrder {
            order_id: order.id.to_string(),
            total: decimal(order.total_minor),
        },
    )
}

pub fn created(order: &Order) -> Envelope {
    envelope(
        ORDER_CREATED,
        order.id.as_str(),
        OrderCreated {
            event_type: ORDER_CREATED.to_owned(),
            order_id: order.id.to_string(),
            total: decimal(order.total_minor),
            total_minor: Some(order.total_minor),
            currency: Some(order.currency.clone()),
            user_id: Some(order.user_id.0),
            items: order
                .lines
                .iter()
                .map(|l| OrderLine {
                    product_id: l.product_id.0,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
        },
    )
}

pub fn confirmed(order: &Order) -> Envelope {
    envelope(
        ORDER_CONFIRMED,
        order.id.as_str(),
        OrderConfirmed {
            event_type: ORDER_CONFIRMED.to_owned(),
            order_id: order.id.to_string(),
            total: decimal(order.total_minor),
            total_minor: order.total_minor,
            currency: order.currency.clone(),
            user_id: order.user_id.0,
        },
    )
}

/// `OrderRejected` with the refusal's problem details (the insufficient-stock members
/// `sku`, `requested`, `available` when catalog gave them).
pub fn rejected(order: &Order, problem: &problem::Problem) -> Envelope {
    let int = |name: &str| problem.extension(name).and_then(serde_json::Value::as_i64);
    envelope(
        ORDER_REJECTED,
        order.id.as_str(),
        OrderRejected {
            event_type: ORDER_REJECTED.to_owned(),
            order_id: order.id.to_string(),
            total: decimal(order.total_minor),
            problem_type: problem.kind().type_uri(),
            detail: problem
                .public_detail()
                .map_or_else(|| problem.kind().title().to_owned(), |d| d.into_owned()),
            sku: problem
                .extension("sku")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            requested: int("requested"),
            available: int("available"),
        },
    )
}

pub fn cancelled(order: &Order, reason: &str) -> Envelope {
    envelope(
        ORDER_CANCELLED,
        order.id.as_str(),
        OrderCancelled {
            event_type: ORDER_CANCELLED.to_owned(),
            order_id: order.id.to_string(),
            total: decimal(order.total_minor),
            reason: reason.to_owned(),
        },
    )
}
