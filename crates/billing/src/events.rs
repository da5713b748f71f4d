//! Billing's outgoing events: what became of an order's payment, published on orders'
//! `order-events` stream (the contract, payloads and names, is `orders::events`) keyed
//! by the order id, so every consumer sees an order's payment after its confirmation and
//! before anything that follows. The store puts them in the outbox in the transaction
//! that records the payment; this module only translates a payment into its event.
//!
//! An envelope made here inside a handler carries the handled event's correlation ID and
//! trace (`Envelope::new` reads the context `messaging::worker::run_stream` sets up).

use messaging::Envelope;
use orders::events::{
    ORDER_PAID, ORDER_REFUNDED, OrderPaid, OrderRefunded, PAYMENT_FAILED, PaymentFailed,
};
use storage::StoreError;

use crate::domain::{Payment, PaymentStatus};

/// The stream billing reads and writes: orders owns it.
pub const STREAM: &str = orders::events::ORDER_EVENTS;

/// The event that tells `payment`'s status: `OrderPaid`, `PaymentFailed` or
/// `OrderRefunded`. A payment missing what its status implies (a charge id, a decline
/// code, a refund id) is a corrupt row.
pub fn of_payment(payment: &Payment) -> Result<Envelope, StoreError> {
    let order_id = payment.order_id.as_str().to_owned();
    let total = payment.amount.to_decimal();
    let missing = |what: &str| {
        StoreError::Corrupt(format!(
            "payment of order {order_id}: {} without {what}",
            payment.status.as_str()
        ))
    };
    let (kind, payload) = match payment.status {
        PaymentStatus::Succeeded => (
            ORDER_PAID,
            serde_json::to_value(OrderPaid {
                event_type: ORDER_PAID.to_owned(),
                order_id: order_id.clone(),
                total,
                total_minor: payment.amount.minor(),
                charge_id: payment
                    .charge_id
                    .clone()
                    .ok_or_else(|| missing("a charge id"))?,
            }),
        ),
        PaymentStatus::Declined => (
            PAYMENT_FAILED,
            serde_json::to_value(PaymentFailed {
                event_type: PAYMENT_FAILED.to_owned(),
                order_id: order_id.clone(),
                total,
                code: payment
                    .decline_code
                    .clone()
                    .ok_or_else(|| missing("a decline code"))?,
                reason: payment.decline_reason.clone().unwrap_or_default(),
            }),
        ),
        PaymentStatus::Refunded => (
            ORDER_REFUNDED,
            serde_json::to_value(OrderRefunded {
                event_type: ORDER_REFUNDED.to_owned(),
                order_id: order_id.clone(),
                total,
                refund_id: payment
                    .refund_id
                    .clone()
                    .ok_or_else(|| missing("a refund id"))?,
                amount_minor: payment.amount.minor(),
            }),
        ),
    };
    let payload =
        payload.map_err(|e| StoreError::Corrupt(format!("event of order {order_id}: {e}")))?;
    Ok(Envelope::new(kind, payload).with_key(order_id))
}
