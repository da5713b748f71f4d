//! The analytics projection: on both backends, each event applied once and a result that
//! depends only on which events were applied; end to end, `GET /v1/analytics/products`
//! following the stream, and a replay (billing stopped) rebuilding the same result.

use std::time::Duration;

use billing::analytics::{self, Applied, Cleared, ProductSales};
use messaging::{Envelope, StartFrom};
use orders::events::{ORDER_CREATED, ORDER_EVENTS, ORDER_PAID, ORDER_REFUNDED};
use serde_json::{Value, json};
use storage::Database;
use tokio::time::Instant;

use crate::helpers::{PATIENCE, World, confirmed, order_id, spawn_world};

storage::backend_tests!(billing::ALL_MIGRATIONS;
    each_event_is_applied_once,
    the_result_depends_only_on_which_events_were_applied,
    a_clear_empties_the_projection_and_the_same_events_rebuild_it,
);

/// `OrderCreated` with `lines` of (product, quantity, unit price in cents); none is the
/// seed's shape, as a foreign producer sends it.
fn created(order: &str, lines: &[(i64, i64, i64)]) -> Envelope {
    let total: i64 = lines.iter().map(|(_, q, p)| q * p).sum();
    let mut payload = json!({
        "event_type": ORDER_CREATED,
        "order_id": order,
        "total": total as f64 / 100.0,
    });
    if !lines.is_empty() {
        payload["total_minor"] = json!(total);
        payload["items"] = lines
            .iter()
            .map(|(product_id, quantity, unit_price_minor)| {
                json!({"product_id": product_id, "quantity": quantity, "unit_price_minor": unit_price_minor})
            })
            .collect();
    }
    Envelope::new(ORDER_CREATED, payload).with_key(order)
}

fn paid(order: &str, total_minor: i64) -> Envelope {
    let payload = json!({
        "event_type": ORDER_PAID,
        "order_id": order,
        "total": total_minor as f64 / 100.0,
        "total_minor": total_minor,
        "charge_id": format!("ch_{order}"),
    });
    Envelope::new(ORDER_PAID, payload).with_key(order)
}

fn refunded(order: &str, total_minor: i64) -> Envelope {
    let payload = json!({
        "event_type": ORDER_REFUNDED,
        "order_id": order,
        "total": total_minor as f64 / 100.0,
        "refund_id": format!("re_{order}"),
        "amount_minor": total_minor,
    });
    Envelope::new(ORDER_REFUNDED, payload).with_key(order)
}

fn sales(product_id: i64, orders_paid: i64, units_paid: i64, revenue_minor: i64) -> ProductSales {
    ProductSales {
        product_id,
        orders_paid,
        units_paid,
        revenue_minor,
    }
}

/// The story the tests tell, and what it comes to:
/// - A: 2 × product 1 at 10.00 and 1 × product 2 at 5.00, paid;
/// - B: 1 × product 1, paid, then refunded (counts for nothing);
/// - C: 3 × product 2 at 5.00, paid;
/// - D: the seed's shape (no items), paid (counts for nothing);
/// - E: 1 × product 3, never paid (counts for nothing).
fn story() -> (Vec<Envelope>, Vec<ProductSales>) {
    let (a, b, c, d, e) = (order_id(), order_id(), order_id(), order_id(), order_id());
    let events = vec![
        created(&a, &[(1, 2, 1_000), (2, 1, 500)]),
        created(&b, &[(1, 1, 1_000)]),
        paid(&a, 2_500),
        created(&c, &[(2, 3, 500)]),
        paid(&b, 1_000),
        created(&d, &[]),
        paid(&c, 1_500),
        refunded(&b, 1_000),
        paid(&d, 4_200),
        created(&e, &[(3, 1, 700)]),
    ];
    let expected = vec![sales(1, 1, 2, 2_000), sales(2, 2, 4, 2_000)];
    (events, expected)
}

async fn each_event_is_applied_once(db: &Database) {
    let projection = analytics::projection(db.clone());
    let order = order_id();
    let (create, pay) = (created(&order, &[(7, 2, 300)]), paid(&order, 600));
    assert_eq!(projection.apply(&create).await.unwrap(), Applied::Applied);
    assert_eq!(projection.apply(&pay).await.unwrap(), Applied::Applied);
    // Delivered again (same ids): skipped.
    assert_eq!(projection.apply(&pay).await.unwrap(), Applied::Duplicate);
    assert_eq!(projection.apply(&create).await.unwrap(), Applied::Duplicate);
    // Published again under a new id: applied, and still the order counts once.
    assert_eq!(
        projection.apply(&paid(&order, 600)).await.unwrap(),
        Applied::Applied
    );
    // Not the projection's business.
    assert_eq!(
        projection.apply(&confirmed(&order, 600)).await.unwrap(),
        Applied::Ignored
    );
    assert_eq!(
        projection.products().await.unwrap(),
        vec![sales(7, 1, 2, 600)]
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics_applied")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied, 3);
    // A payload that is not the contract's is refused, and nothing is recorded.
    let broken = Envelope::new(ORDER_PAID, json!({"order_id": order})).with_key(&order);
    assert!(projection.apply(&broken).await.is_err());
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics_applied")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied, 3);
}

async fn the_result_depends_only_on_which_events_were_applied(db: &Database) {
    let projection = analytics::projection(db.clone());
    let (x, y) = (order_id(), order_id());
    let xs = [
        created(&x, &[(1, 1, 1_000), (1, 2, 1_000)]),
        paid(&x, 3_000),
        refunded(&x, 3_000),
    ];
    let ys = [created(&y, &[(1, 1, 900), (4, 5, 10)]), paid(&y, 950)];
    // Every order of X's three events, with Y's around them: X counts for nothing.
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        projection.rebuild_from_scratch().await.unwrap();
        projection.apply(&ys[1]).await.unwrap();
        for i in order {
            projection.apply(&xs[i]).await.unwrap();
        }
        projection.apply(&ys[0]).await.unwrap();
        assert_eq!(
            projection.products().await.unwrap(),
            vec![sales(1, 1, 1, 900), sales(4, 1, 5, 50)],
            "X applied in the order {order:?}"
        );
    }
    // Paid before created: counted once its lines are known.
    projection.rebuild_from_scratch().await.unwrap();
    projection.apply(&xs[1]).await.unwrap();
    assert_eq!(projection.products().await.unwrap(), vec![]);
    projection.apply(&xs[0]).await.unwrap();
    assert_eq!(
        projection.products().await.unwrap(),
        vec![sales(1, 1, 3, 3_000)]
    );
}

async fn a_clear_empties_the_projection_and_the_same_events_rebuild_it(db: &Database) {
    let projection = analytics::projection(db.clone());
    let (events, expected) = story();
    for event in &events {
        projection.apply(event).await.unwrap();
    }
    assert_eq!(projection.products().await.unwrap(), expected);
    let cleared = projection.rebuild_from_scratch().await.unwrap();
    assert_eq!(
        cleared,
        Cleared {
            orders: 5,
            products: 2,
            applied: 10
        }
    );
    assert_eq!(projection.products().await.unwrap(), vec![]);
    for event in &events {
        assert_eq!(projection.apply(event).await.unwrap(), Applied::Applied);
    }
    assert_eq!(projection.products().await.unwrap(), expected);
}

/// `GET /v1/analytics/products`, as the tests compare it.
async fn products(world: &World) -> Value {
    let response = world.billing.get("/v1/analytics/products").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn as_json(expected: &[ProductSales]) -> Value {
    let data: Vec<Value> = expected
        .iter()
        .map(|p| {
            json!({
                "product_id": p.product_id,
                "orders_paid": p.orders_paid,
                "units_paid": p.units_paid,
                "revenue_minor": p.revenue_minor,
            })
        })
        .collect();
    json!({ "data": data })
}

/// Waits until billing's projection answers `expected` (or `PATIENCE` passes).
async fn await_products(world: &World, expected: &Value) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = products(world).await;
        if seen == *expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the projection is {seen} after {PATIENCE:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_projection_follows_the_stream_and_a_replay_rebuilds_it() {
    let mut world = spawn_world(|_| {}).await;
    let (events, expected) = story();
    for event in &events {
        world.publish(event).await;
    }
    let expected = as_json(&expected);
    await_products(&world, &expected).await;

    // With billing stopped, what `brigade replay analytics --from earliest` does; billing's
    // member rebuilds the projection when it starts again.
    world
        .restart_billing(async |settings| {
            let replayed = analytics::replay(&settings, StartFrom::Earliest)
                .await
                .unwrap();
            assert_eq!(
                replayed.cleared,
                Cleared {
                    orders: 5,
                    products: 2,
                    applied: 10
                }
            );
        })
        .await;
    await_products(&world, &expected).await;
    // Everything was applied again (not left in place): once the group has caught up, the
    // applied ids are all back.
    let deadline = Instant::now() + PATIENCE;
    while world
        .broker
        .streams
        .lag(ORDER_EVENTS, analytics::GROUP)
        .await
        .unwrap()
        .lag
        > 0
    {
        assert!(Instant::now() < deadline, "analytics never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let projection = analytics::projection(world.billing_database().clone());
    let again = projection.rebuild_from_scratch().await.unwrap();
    assert_eq!(again.applied, 10);
}
