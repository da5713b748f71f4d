//! Orders' message faces: the `order_processing` worker and the `orders` group on
//! `order-events` (billing's answers). Each parses a message into the use case's terms
//! and calls it; `messaging::worker` settles from the outcome (and runs each handler in
//! the message's request context, so the order's correlation ID is on every line).

use messaging::Envelope;
use messaging::worker::HandleError as Settle;

use crate::app::{HandleError, Orders};
use crate::domain::OrderId;
use crate::events::{self, OrderCancelled, OrderPaid, PaymentFailed, ProcessOrder};

fn settle(err: HandleError) -> Settle {
    match err {
        HandleError::Permanent(reason) => Settle::Permanent(reason),
        HandleError::Transient(reason) => Settle::Transient(reason),
        HandleError::TransientFor(reason, after) => Settle::TransientFor(reason, after),
    }
}

fn payload<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, Settle> {
    serde_json::from_value(envelope.payload.clone()).map_err(|e| {
        Settle::Permanent(format!(
            "a {} payload that does not parse: {e}",
            envelope.kind
        ))
    })
}

fn order_id(raw: &str) -> Result<OrderId, Settle> {
    OrderId::parse(raw).map_err(|e| Settle::Permanent(format!("order id {raw:?} {e}")))
}

/// One `order_processing` message: reserve the order's stock.
pub async fn process(orders: &Orders, envelope: Envelope) -> Result<(), Settle> {
    if envelope.kind != events::PROCESS_ORDER {
        return Err(Settle::Permanent(format!(
            "{} is not a message order_processing carries",
            envelope.kind
        )));
    }
    let message: ProcessOrder = payload(&envelope)?;
    let id = order_id(&message.order_id)?;
    tracing::debug!(order_id = %id, "processing order");
    orders.process(&id).await.map_err(settle)
}

/// One `order-events` event, as the `orders` group sees it: billing's outcomes move the
/// order; a cancellation gives its stock back; its other transitions need nothing more.
pub async fn billing_outcome(orders: &Orders, envelope: Envelope) -> Result<(), Settle> {
    match envelope.kind.as_str() {
        events::ORDER_PAID => {
            let paid: OrderPaid = payload(&envelope)?;
            let id = order_id(&paid.order_id)?;
            tracing::debug!(order_id = %id, charge_id = %paid.charge_id, "order paid");
            orders.paid(&id).await.map_err(settle)
        }
        events::PAYMENT_FAILED => {
            let failed: PaymentFailed = payload(&envelope)?;
            let id = order_id(&failed.order_id)?;
            tracing::info!(order_id = %id, code = %failed.code, "payment failed; cancelling the order");
            orders
                .payment_failed(&id, &failed.code)
                .await
                .map_err(settle)
        }
        events::ORDER_CANCELLED => {
            let cancelled: OrderCancelled = payload(&envelope)?;
            let id = order_id(&cancelled.order_id)?;
            tracing::debug!(order_id = %id, reason = %cancelled.reason, "releasing a cancelled order's stock");
            orders.released(&id).await.map_err(settle)
        }
        _ => Ok(()),
    }
}
