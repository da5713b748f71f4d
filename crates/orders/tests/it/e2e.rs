//! The pipeline end to end: paid, declined and compensated, cancelled and refunded; and
//! under load on each backend, with the failures the issue names injected mid-run.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::history;
use crate::pipeline::{Broker, Pipeline, all_final, assert_consistent, place_many};
use telemetry::metrics::series_value;

async fn placed(pipeline: &Pipeline, key: &str, items: &[(i64, i64)]) -> String {
    pipeline.system.placed(key, 1, items).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_paid_once_end_to_end() {
    let pipeline = Pipeline::start(Broker::Embedded, |_| {}).await;
    let item = pipeline.system.product(12.34, 10).await;
    let id = placed(&pipeline, "paid", &[(item, 2)]).await;
    let paid = pipeline.system.status_becomes(&id, "PAID").await;
    assert_eq!(history(&paid), ["PENDING", "CONFIRMED", "PAID"]);
    let charges = pipeline.charges(&id).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["amount"], 2468);
    assert_eq!(charges[0]["status"], "succeeded");
    assert_eq!(pipeline.system.stock(item).await, 8);
    // Orders' own series: its transitions and how long accept → paid took.
    let metrics = pipeline
        .system
        .orders
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap();
    for series in [
        r#"brigade_orders_transitions_total{service="orders",to="PAID"}"#,
        r#"brigade_orders_accept_to_paid_seconds_count{service="orders"}"#,
        r#"brigade_orders_accept_to_confirmed_seconds_count{service="orders"}"#,
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(series) && !l.ends_with(" 0")),
            "{series} missing or 0:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_cancels_the_order_and_gives_its_stock_back() {
    let pipeline = Pipeline::start(Broker::Embedded, |_| {}).await;
    pipeline.behave(json!({"decline_rate": 1.0})).await;
    let item = pipeline.system.product(5.00, 10).await;
    let id = placed(&pipeline, "declined", &[(item, 3)]).await;
    let cancelled = pipeline.system.status_becomes(&id, "CANCELLED").await;
    assert_eq!(history(&cancelled), ["PENDING", "CONFIRMED", "CANCELLED"]);
    let reason = cancelled["history"][2]["reason"].as_str().unwrap();
    assert!(reason.starts_with("payment_failed"), "{reason}");
    pipeline.system.stock_becomes(item, 10).await;
    let charges = pipeline.charges(&id).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_paid_order_refunds_its_charge_and_releases_its_stock() {
    let pipeline = Pipeline::start(Broker::Embedded, |_| {}).await;
    let item = pipeline.system.product(7.00, 4).await;
    let id = placed(&pipeline, "refund", &[(item, 4)]).await;
    pipeline.system.status_becomes(&id, "PAID").await;
    assert_eq!(pipeline.system.stock(item).await, 0);
    assert_eq!(pipeline.system.cancel(&id).await.status(), 200);
    let order = pipeline.system.order(&id).await;
    assert_eq!(
        history(&order),
        ["PENDING", "CONFIRMED", "PAID", "CANCELLED"]
    );
    pipeline.system.stock_becomes(item, 4).await;
    let mut initial = HashMap::new();
    initial.insert(item, 4);
    assert_consistent(&pipeline, &[order], &initial).await;
}

/// `n` orders from `concurrency` retrying clients over a few products (one of them too
/// scarce for all), with `during` run while they are placed; then every check.
async fn load(pipeline: Pipeline, n: usize, during: impl std::future::Future<Output = ()>) {
    let mut products = Vec::new();
    let mut initial = HashMap::new();
    for stock in [100_000, 100_000, 100_000, 40] {
        let id = pipeline.system.product(9.99, stock).await;
        products.push(id);
        initial.insert(id, stock);
    }
    let ((placed, _), ()) = tokio::join!(place_many(&pipeline.system, n, 32, &products), during);
    assert_eq!(placed.len(), n, "one order per client key");
    let mut ids: Vec<&String> = placed.values().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no two keys got one order");
    let orders = all_final(&pipeline.system, ids, Duration::from_secs(120)).await;
    // Nothing else was placed: every order of every user is one of ours.
    let mut listed = 0;
    for user in 1..=5 {
        let mut cursor = String::new();
        loop {
            let page: Value = pipeline
                .system
                .orders
                .get(&format!("/v1/orders?user_id={user}&limit=200{cursor}"))
                .await
                .json()
                .await
                .unwrap();
            listed += page["items"].as_array().unwrap().len();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    assert_eq!(listed, n, "exactly one order per key");
    let rejected = orders.iter().filter(|o| o["status"] == "REJECTED").count();
    assert!(rejected > 0, "the scarce product ran out");
    assert_consistent(&pipeline, &orders, &initial).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_orders_end_final_charged_once_with_stock_conserved_embedded() {
    load(
        Pipeline::start(Broker::Embedded, |_| {}).await,
        1_000,
        async {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_stopped_mid_run_loses_nothing_and_strands_nothing_embedded() {
    catalog_outage(Broker::Embedded).await;
}

/// The provider slower than billing's timeout and declining 30% of charges, on `broker`.
async fn slow_and_failing_provider(broker: Broker) {
    let pipeline = Pipeline::start(broker, |s| {
        s.billing.provider_timeout = Duration::from_millis(300);
    })
    .await;
    pipeline
        .behave(json!({"latency_ms": 200, "latency_jitter_ms": 300, "decline_rate": 0.3}))
        .await;
    let (orders, _) = load_borrowed(&pipeline, 100, async {}).await;
    let count = |status: &str| orders.iter().filter(|o| o["status"] == status).count();
    // Both outcomes happened (30% of 100 declines: 0 or 100 of them is a broken run).
    assert!(
        count("CANCELLED") > 0 && count("PAID") > 0,
        "paid {}, cancelled {}",
        count("PAID"),
        count("CANCELLED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_failing_thirty_percent_still_ends_every_order_paid_or_cancelled_embedded()
{
    slow_and_failing_provider(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_failing_thirty_percent_still_ends_every_order_paid_or_cancelled_rabbitmq()
{
    slow_and_failing_provider(Broker::rabbitmq().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_failing_thirty_percent_still_ends_every_order_paid_or_cancelled_nats() {
    slow_and_failing_provider(Broker::nats().await).await;
}

/// As [`load`], for a pipeline the caller keeps (to break it while orders flow): the
/// final orders, and how many attempts the clients needed in all.
async fn load_borrowed(
    pipeline: &Pipeline,
    n: usize,
    during: impl std::future::Future<Output = ()>,
) -> (Vec<Value>, u32) {
    let mut products = Vec::new();
    let mut initial = HashMap::new();
    for stock in [100_000, 100_000, 40] {
        let id = pipeline.system.product(9.99, stock).await;
        products.push(id);
        initial.insert(id, stock);
    }
    let ((placed, attempts), ()) =
        tokio::join!(place_many(&pipeline.system, n, 32, &products), during);
    assert_eq!(placed.len(), n);
    let orders = all_final(&pipeline.system, placed.values(), Duration::from_secs(120)).await;
    assert_consistent(pipeline, &orders, &initial).await;
    (orders, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_orders_end_final_charged_once_with_stock_conserved_rabbitmq() {
    load(
        Pipeline::start(Broker::rabbitmq().await, |_| {}).await,
        1_000,
        async {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_orders_end_final_charged_once_with_stock_conserved_nats() {
    load(
        Pipeline::start(Broker::nats().await, |_| {}).await,
        1_000,
        async {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_units_go_to_exactly_as_many_orders_as_there_are_units_rabbitmq() {
    let pipeline = Pipeline::start(Broker::rabbitmq().await, |_| {}).await;
    crate::accept::the_last_units_race(&pipeline.system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_units_go_to_exactly_as_many_orders_as_there_are_units_nats() {
    let pipeline = Pipeline::start(Broker::nats().await, |_| {}).await;
    crate::accept::the_last_units_race(&pipeline.system).await;
}

/// Catalog away for three seconds while orders flow, on `broker`.
async fn catalog_outage(broker: Broker) {
    let pipeline = Pipeline::start(broker, |s| {
        s.outbound.breaker_wait = Duration::from_secs(1);
    })
    .await;
    let outage = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pipeline.catalog_down();
        tokio::time::sleep(Duration::from_secs(3)).await;
        pipeline.catalog_up();
    };
    let (_, attempts) = load_borrowed(&pipeline, 300, outage).await;
    // The outage was felt: accepts were refused while catalog was away, and retried.
    assert!(
        attempts > 300,
        "no client had to retry: {attempts} attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_stopped_mid_run_loses_nothing_and_strands_nothing_rabbitmq() {
    catalog_outage(Broker::rabbitmq().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_stopped_mid_run_loses_nothing_and_strands_nothing_nats() {
    catalog_outage(Broker::nats().await).await;
}

/// Catalog down far longer than an order's retry budget (`max_deliveries` 3): once the
/// worker's calls have opened the breaker, each delivery of `ProcessOrder` is deferred —
/// a refused call, or a probe whose failure opens the breaker again, says the catalog is
/// down, not that the message is bad — so the order waits instead of being
/// dead-lettered, and is paid once catalog is back.
///
/// The order is accepted by an orders process with no workers (`orders.workers = 0`,
/// an accept tier), so catalog is down before any worker sees it; then a second orders
/// process on the same database and broker, with one worker, takes it. A current-thread
/// runtime: the test's own recorder sees the worker's settles.
#[tokio::test]
async fn an_order_waits_out_a_catalog_outage_longer_than_its_retries() {
    const MAX_DELIVERIES: u32 = 3;
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let pipeline = Pipeline::start(Broker::Embedded, |s| {
        s.messaging.max_deliveries = MAX_DELIVERIES;
        // The breaker opens on the worker's second failed call, and its wait is longer
        // than a call's budget (a shorter one would be waited out inside the call, whose
        // last attempt, a half-open probe, then fails without the hint).
        s.outbound.breaker_minimum_calls = 2;
        s.outbound.breaker_probes = 1;
        s.outbound.timeout = Duration::from_millis(250);
        s.outbound.breaker_wait = Duration::from_millis(400);
        s.orders.workers = 0;
    })
    .await;
    let item = pipeline.system.product(4.00, 10).await;
    let id = placed(&pipeline, "outage", &[(item, 1)]).await;
    pipeline.catalog_down();
    let mut settings = pipeline.system.settings.clone();
    settings.services.orders.port = 0;
    settings.orders.workers = 1;
    let worker = crate::helpers::Running::run(orders::build(&settings).await.unwrap());

    // Deferred more times than it may be delivered, and still waiting.
    let deferred = [("queue", "order_processing"), ("outcome", "defer")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while series_value(
        &metrics.render(),
        "brigade_messaging_settled_total",
        &deferred,
    ) < f64::from(MAX_DELIVERIES + 2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not deferred {} times within 30 s:\n{}",
            MAX_DELIVERIES + 2,
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rendered = metrics.render();
    let dead = [("queue", "order_processing")];
    assert_eq!(
        series_value(&rendered, "brigade_messaging_dead_lettered_total", &dead),
        0.0,
        "{rendered}"
    );
    assert_eq!(pipeline.system.order(&id).await["status"], "PENDING");

    pipeline.catalog_up();
    let paid = pipeline.system.status_becomes(&id, "PAID").await;
    assert_eq!(history(&paid), ["PENDING", "CONFIRMED", "PAID"]);
    assert_eq!(pipeline.system.stock(item).await, 9);
    let rendered = metrics.render();
    assert_eq!(
        series_value(&rendered, "brigade_messaging_dead_lettered_total", &dead),
        0.0,
        "{rendered}"
    );
    drop(worker);
}

/// Billing crashed while orders flow (its tasks dropped mid-charge, its group membership
/// never closed), then started again, on `broker`.
async fn billing_crash(broker: Broker) {
    let pipeline = Pipeline::start(broker, |s| {
        // A crashed member's partitions move on when its lease runs out.
        s.messaging.handler_timeout = Duration::from_secs(2);
    })
    .await;
    pipeline
        .behave(json!({"latency_ms": 20, "latency_jitter_ms": 40}))
        .await;
    let crash = async {
        // Mid-run: once billing has charged something.
        pipeline.some_paid().await;
        pipeline.crash_billing().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        pipeline.restart_billing().await;
    };
    let (orders, _) = load_borrowed(&pipeline, 300, crash).await;
    assert!(orders.iter().any(|o| o["status"] == "PAID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_crashed_mid_run_charges_every_order_once_embedded() {
    billing_crash(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_crashed_mid_run_charges_every_order_once_rabbitmq() {
    billing_crash(Broker::rabbitmq().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_crashed_mid_run_charges_every_order_once_nats() {
    billing_crash(Broker::nats().await).await;
}
