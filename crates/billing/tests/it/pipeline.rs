//! The pipeline, end to end: orders' events on `order-events` in, the provider's ledger
//! and billing's outcomes on `order-events` out. Each test owns its billing, sandbox and
//! broker (a data directory of its own).

use std::time::Duration;

use orders::events::{
    ORDER_PAID, ORDER_REFUNDED, OrderPaid, OrderRefunded, PAYMENT_FAILED, PaymentFailed,
};
use serde_json::json;

use crate::helpers::{PATIENCE, cancelled, confirmed, order_id, spawn_world};
use telemetry::metrics::series_value;

const REQUESTS: &str = "brigade_billing_provider_requests_total";

#[tokio::test]
async fn a_confirmed_order_is_charged_once_and_paid() {
    let mut world = spawn_world(|_| {}).await;
    let order = order_id();
    let event = confirmed(&order, 199_998);
    world.publish(&event).await;

    let outcomes = world.await_outcomes(&order, 1).await;
    let paid = &outcomes[0];
    assert_eq!(paid.kind, ORDER_PAID);
    assert_eq!(paid.key.as_deref(), Some(order.as_str()));
    // The chain the confirmation started goes on in its outcome.
    assert_eq!(paid.correlation_id, event.correlation_id);
    let body: OrderPaid = serde_json::from_value(paid.payload.clone()).unwrap();
    assert_eq!(body.event_type, ORDER_PAID);
    assert_eq!(
        (body.order_id.as_str(), body.total_minor),
        (order.as_str(), 199_998)
    );
    assert!((body.total - 1999.98).abs() < f64::EPSILON);

    let ledger = world.ledger(&order).await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["id"], body.charge_id.as_str());
    assert_eq!(ledger[0]["status"], "succeeded");
    assert_eq!(ledger[0]["amount"], 199_998);
    assert_eq!(ledger[0]["currency"], "usd");

    let (status, payment) = world.payment(&order).await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["charge_id"], body.charge_id.as_str());
    assert_eq!(payment["amount_minor"], 199_998);

    // The same event again (a redelivery), and the confirmation published again under a
    // new id: no second charge, no second OrderPaid.
    world.publish(&event).await;
    world.publish(&confirmed(&order, 199_998)).await;
    world.settle().await;
    assert_eq!(
        world.outcomes(&order).len(),
        1,
        "{:?}",
        world.outcomes(&order)
    );
    assert_eq!(world.ledger(&order).await.len(), 1);
}

#[tokio::test]
async fn a_declined_charge_is_a_payment_failed_with_its_code() {
    let mut world = spawn_world(|_| {}).await;
    world.behave(json!({"decline_rate": 1.0})).await;
    let order = order_id();
    world.publish(&confirmed(&order, 2_500)).await;

    let outcomes = world.await_outcomes(&order, 1).await;
    assert_eq!(outcomes[0].kind, PAYMENT_FAILED);
    let failed: PaymentFailed = serde_json::from_value(outcomes[0].payload.clone()).unwrap();
    assert_eq!(failed.order_id, order);
    // The sandbox's one decline: the issuer said no without saying why.
    assert_eq!(failed.code, "generic_decline");
    assert!(!failed.reason.is_empty());

    let ledger = world.ledger(&order).await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["status"], "failed");
    let (status, payment) = world.payment(&order).await;
    assert_eq!(status, 200);
    assert_eq!(payment["status"], "declined");
    assert_eq!(payment["decline_code"], "generic_decline");
    assert_eq!(payment["charge_id"], ledger[0]["id"]);

    // Declined is an answer: the confirmation again is not charged again, even once the
    // card would pass.
    world.behave(json!({"decline_rate": 0.0})).await;
    world.publish(&confirmed(&order, 2_500)).await;
    world.settle().await;
    assert_eq!(world.outcomes(&order).len(), 1);
    assert_eq!(world.ledger(&order).await.len(), 1);
}

/// During an outage nothing is recorded and nothing is published; once it ends, the
/// event's retry charges the order exactly once.
#[tokio::test]
async fn an_outage_holds_the_charge_until_it_ends() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let mut world = spawn_world(|_| {}).await;
    world.behave(json!({"error_rate": 1.0})).await;
    let order = order_id();
    world.publish(&confirmed(&order, 1_000)).await;

    // Billing has met the outage (every attempt of the event's first try).
    let transient = [("operation", "charge"), ("outcome", "transient")];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while series_value(&metrics.render(), REQUESTS, &transient) < 3.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(world.outcomes(&order).is_empty());
    assert_eq!(world.payment(&order).await.0, 404);
    assert!(world.ledger(&order).await.is_empty());

    world.behave(json!({"error_rate": 0.0})).await;
    let outcomes = world.await_outcomes(&order, 1).await;
    assert_eq!(outcomes[0].kind, ORDER_PAID);
    world.settle().await;
    assert_eq!(world.outcomes(&order).len(), 1);
    let ledger = world.ledger(&order).await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["status"], "succeeded");
    let rendered = metrics.render();
    assert_eq!(
        series_value(&rendered, REQUESTS, &[("outcome", "succeeded")]),
        1.0,
        "{rendered}"
    );
    assert_eq!(
        series_value(
            &rendered,
            "brigade_billing_payments_total",
            &[("service", "billing"), ("outcome", "succeeded")]
        ),
        1.0
    );
}

/// The provider answers after billing has given up on the call: the charge it made is
/// found again under the same key (409 while it runs, then its answer), never made twice.
#[tokio::test]
async fn a_provider_slower_than_the_timeout_still_charges_once() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let mut world = spawn_world(|s| s.billing.provider_timeout = Duration::from_millis(300)).await;
    world.behave(json!({"latency_ms": 1000})).await;
    let order = order_id();
    let event = confirmed(&order, 4_200);
    world.publish(&event).await;

    let outcomes = world.await_outcomes(&order, 1).await;
    assert_eq!(outcomes[0].kind, ORDER_PAID);
    assert_eq!(outcomes[0].correlation_id, event.correlation_id);
    world.settle().await;
    assert_eq!(world.outcomes(&order).len(), 1);
    let ledger = world.ledger(&order).await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let paid: OrderPaid = serde_json::from_value(outcomes[0].payload.clone()).unwrap();
    assert_eq!(ledger[0]["id"], paid.charge_id.as_str());
    let rendered = metrics.render();
    assert!(
        series_value(
            &rendered,
            REQUESTS,
            &[("operation", "charge"), ("outcome", "transient")]
        ) >= 1.0,
        "the first attempt timed out: {rendered}"
    );
    assert!(rendered.contains("brigade_billing_provider_duration_seconds_bucket"));
}

#[tokio::test]
async fn a_cancelled_order_is_refunded_once() {
    let mut world = spawn_world(|_| {}).await;
    let order = order_id();
    world.publish(&confirmed(&order, 7_700)).await;
    let paid: OrderPaid =
        serde_json::from_value(world.await_outcomes(&order, 1).await[0].payload.clone()).unwrap();

    let cancel = cancelled(&order, 7_700);
    world.publish(&cancel).await;
    let outcomes = world.await_outcomes(&order, 2).await;
    let refunded_event = &outcomes[1];
    assert_eq!(refunded_event.kind, ORDER_REFUNDED);
    assert_eq!(refunded_event.correlation_id, cancel.correlation_id);
    let refunded: OrderRefunded = serde_json::from_value(refunded_event.payload.clone()).unwrap();
    assert_eq!(
        (refunded.order_id.as_str(), refunded.amount_minor),
        (order.as_str(), 7_700)
    );

    let refunds = world.refunds(&paid.charge_id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["id"], refunded.refund_id.as_str());
    assert_eq!(refunds[0]["amount"], 7_700);
    let (_, payment) = world.payment(&order).await;
    assert_eq!(payment["status"], "refunded");
    assert_eq!(payment["refund_id"], refunded.refund_id.as_str());

    // The cancellation again, and under a new id: nothing more is refunded.
    world.publish(&cancel).await;
    world.publish(&cancelled(&order, 7_700)).await;
    world.settle().await;
    assert_eq!(world.outcomes(&order).len(), 2);
    assert_eq!(world.refunds(&paid.charge_id).await.len(), 1);
}

/// A cancellation with nothing to refund, a payload that is not the contract's and an
/// event type that is not billing's are passed over; the order's partition goes on.
#[tokio::test]
async fn what_billing_cannot_or_need_not_handle_is_passed_over() {
    let mut world = spawn_world(|_| {}).await;
    let order = order_id();
    world.publish(&cancelled(&order, 100)).await;
    let broken = messaging::Envelope::new(
        orders::events::ORDER_CONFIRMED,
        json!({"event_type": "OrderConfirmed", "order_id": order}),
    )
    .with_key(order.as_str());
    world.publish(&broken).await;
    let created = messaging::Envelope::new(
        orders::events::ORDER_CREATED,
        json!({"event_type": "OrderCreated", "order_id": order, "total": 1.0}),
    )
    .with_key(order.as_str());
    world.publish(&created).await;
    world.settle().await;
    assert!(world.outcomes(&order).is_empty());
    assert!(world.ledger(&order).await.is_empty());
    assert_eq!(world.payment(&order).await.0, 404);

    // The next event of the same order is handled.
    world.publish(&confirmed(&order, 100)).await;
    assert_eq!(world.await_outcomes(&order, 1).await[0].kind, ORDER_PAID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_provider_refuses_fails_the_payment_and_a_free_order_is_paid_without_one() {
    let mut world = spawn_world(|_| {}).await;
    // Beyond the provider's largest amount: refused (422), which no retry can change.
    let too_big = order_id();
    world.publish(&confirmed(&too_big, 100_000_000)).await;
    let outcome = &world.await_outcomes(&too_big, 1).await[0];
    assert_eq!(outcome.kind, orders::events::PAYMENT_FAILED);
    assert_eq!(outcome.payload["code"], "provider_refused");
    assert!(world.ledger(&too_big).await.is_empty());

    let free = order_id();
    world.publish(&confirmed(&free, 0)).await;
    assert_eq!(world.await_outcomes(&free, 1).await[0].kind, ORDER_PAID);
    assert!(world.ledger(&free).await.is_empty(), "nothing to charge");
}
