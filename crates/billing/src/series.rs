//! Billing's metrics: one constant per series name, said once what each means. Every
//! series carries `service="billing"` (so `brigade up`'s one recorder still gives each
//! service its own `/metrics`) and follows the house's names (`brigade_` prefix,
//! `_total` counters, `_seconds` histograms, which get telemetry's latency buckets).

/// Requests to the payment provider, by `operation` (`charge`, `refund`) and `outcome`:
/// `succeeded`, `declined` (a charge the provider refused for the card), `transient`
/// (an outage, a timeout, a key still in flight, rate limited: retried later) or
/// `rejected` (the provider refused the request itself: a bug to look at). One per HTTP
/// attempt; calls a breaker refused never reach the provider and are not counted here
/// (the breaker's own series count them).
pub const PROVIDER_REQUESTS: &str = "brigade_billing_provider_requests_total";
/// How long each provider request took, by `operation`, timeouts included.
pub const PROVIDER_DURATION: &str = "brigade_billing_provider_duration_seconds";
/// Payments recorded, by `outcome`: the status they took (`succeeded`, `declined`,
/// `refunded`). Counted once each, after the commit, however often an event came.
pub const PAYMENTS: &str = "brigade_billing_payments_total";

/// Says once what every series means.
pub fn describe() {
    metrics::describe_counter!(
        PROVIDER_REQUESTS,
        "Requests to the payment provider, by operation (charge, refund) and outcome (succeeded, declined, transient, rejected)."
    );
    metrics::describe_histogram!(
        PROVIDER_DURATION,
        metrics::Unit::Seconds,
        "Payment provider request latency, by operation, timeouts included."
    );
    metrics::describe_counter!(
        PAYMENTS,
        "Payments recorded, by outcome (succeeded, declined, refunded)."
    );
}
