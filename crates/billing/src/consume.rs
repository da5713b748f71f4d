//! Billing's message face: the members of consumer group `billing` on `order-events`.
//! It only translates: an `OrderConfirmed` becomes `Billing::charge`, an
//! `OrderCancelled` `Billing::refund`; every other type (orders' other transitions,
//! billing's own outcomes) is not billing's business and is committed past. A failure
//! becomes a `HandleError` at one place ([`handle_error`]): what may pass (the provider
//! or the database unavailable) is retried by `messaging::worker::run_stream` after a
//! backoff, holding back the rest of the order's partition so per-order order holds;
//! what never will (a payload that is not the contract's, the provider refusing the
//! request itself) is logged at `error` and skipped — the stream keeps it, so once the
//! cause is fixed the group can be replayed over it (payments already recorded are not
//! charged again).

use std::time::Duration;

use messaging::worker::{HandleError, WorkerOptions};
use messaging::{Broker, Envelope, StartFrom};
use orders::events::{
    BILLING_GROUP, ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_EVENTS, OrderCancelled, OrderConfirmed,
};
use serde::de::DeserializeOwned;
use storage::StoreError;
use tokio_util::sync::CancellationToken;

use crate::app::{Billing, BillingError};
use crate::domain::{OrderId, OrderToCharge};

/// Members of group `billing` each billing process runs. Each serves its partitions one
/// event at a time, and a charge may take the provider's 5–30 s: two let one slow
/// provider call hold up only the orders of its own partitions, and share the stream's
/// partitions (4 by default) with billing processes started beside this one.
pub const MEMBERS: usize = 2;

/// The payload versions this face reads.
const SCHEMA_VERSION: u32 = 1;

/// Handles one event of `order-events`.
pub async fn handle(billing: &Billing, envelope: Envelope) -> Result<(), HandleError> {
    match envelope.kind.as_str() {
        ORDER_CONFIRMED => {
            let confirmed: OrderConfirmed = payload(&envelope)?;
            let order = OrderToCharge::parse(
                &confirmed.order_id,
                confirmed.total_minor,
                &confirmed.currency,
            )
            .map_err(|errors| {
                let fields: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.reason))
                    .collect();
                HandleError::Permanent(format!(
                    "{ORDER_CONFIRMED} cannot be charged: {}",
                    fields.join("; ")
                ))
            })?;
            billing
                .charge(envelope.id, order)
                .await
                .map_err(handle_error)?;
        }
        ORDER_CANCELLED => {
            let cancelled: OrderCancelled = payload(&envelope)?;
            let order = OrderId::parse(&cancelled.order_id)
                .map_err(|e| HandleError::Permanent(format!("{ORDER_CANCELLED}: order_id {e}")))?;
            billing
                .refund(envelope.id, &order)
                .await
                .map_err(handle_error)?;
        }
        // Not billing's business (OrderCreated, OrderRejected, billing's own outcomes).
        _ => {}
    }
    Ok(())
}

/// The payload of `envelope`, as the contract types it.
fn payload<T: DeserializeOwned>(envelope: &Envelope) -> Result<T, HandleError> {
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(HandleError::Permanent(format!(
            "{} schema version {} is not one billing reads ({SCHEMA_VERSION})",
            envelope.kind, envelope.schema_version
        )));
    }
    serde_json::from_value(envelope.payload.clone()).map_err(|e| {
        HandleError::Permanent(format!(
            "{} payload is not the contract's: {e}",
            envelope.kind
        ))
    })
}

/// The one conversion of a use case's failure into a message outcome.
fn handle_error(err: BillingError) -> HandleError {
    match err {
        BillingError::ProviderUnavailable(_) => HandleError::Transient(err.to_string()),
        // A row that breaks the rules stays broken; anything else of the database passes.
        BillingError::Store(StoreError::Corrupt(_)) => HandleError::Permanent(err.to_string()),
        BillingError::Store(_) => HandleError::Transient(err.to_string()),
        BillingError::ProviderRefused(_) | BillingError::PaymentNotFound(_) => {
            HandleError::Permanent(err.to_string())
        }
    }
}

/// One member of group `billing`: joins it (a new group starts at the stream's earliest
/// event) and serves it with `run_stream` until `stop`; if its consumer fails, joins again
/// after a backoff.
pub async fn run_member(
    broker: Broker,
    billing: Billing,
    options: WorkerOptions,
    stop: CancellationToken,
) {
    let backoff = resilience::retry::Backoff {
        base: options.retry_base,
        cap: options.retry_cap,
    };
    let mut rng = fastrand::Rng::new();
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        let served = match broker
            .streams
            .subscribe(ORDER_EVENTS, BILLING_GROUP, StartFrom::Earliest)
            .await
        {
            Ok(consumer) => {
                let joined = tokio::time::Instant::now();
                let served = messaging::worker::run_stream(
                    ORDER_EVENTS,
                    BILLING_GROUP,
                    consumer,
                    options,
                    |envelope| handle(&billing, envelope),
                    stop.clone(),
                )
                .await;
                // A member that served a while before failing starts its backoff over.
                if joined.elapsed() > options.retry_cap {
                    failures = 0;
                }
                served
            }
            Err(err) => Err(err),
        };
        let Err(err) = served else {
            // Stopped: the member has left the group.
            return;
        };
        let delay = backoff
            .delay(failures, &mut rng)
            .max(Duration::from_millis(50));
        failures = failures.saturating_add(1);
        tracing::warn!(stream = ORDER_EVENTS, group = BILLING_GROUP, error = %err, retry_in_ms = delay.as_millis() as u64, "billing's consumer failed; joining again");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
