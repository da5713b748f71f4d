//! Catalog's events: every product write puts its event in the outbox in the same
//! transaction (on both backends), in write order, and every event is one the AsyncAPI
//! document describes. The relay's side (publishing in order, resuming after a crash) is
//! tested in `messaging`'s `tests/outbox.rs`; the whole path, REST write to
//! `brigade events tail`, in `brigade`'s `up` tests.

use catalog::CatalogStore;
use catalog::domain::{NewProduct, NewReservation, OrderId, ProductId, ProductPatch};
use catalog::events::{self, ProductCreated, ProductDeleted, ProductUpdated, StockChanged};
use catalog::store::reservations;
use messaging::Envelope;
use storage::{Database, StoreError};

storage::backend_tests!(catalog::ALL_MIGRATIONS;
    every_write_leaves_its_event_in_the_outbox,
    a_refused_write_leaves_no_event,
);

/// The outbox's unsent messages, in write order.
async fn outbox(db: &Database) -> Vec<(String, String, Envelope)> {
    let mut conn = db.pool().acquire().await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT shape, destination, envelope FROM outbox WHERE sent_at IS NULL ORDER BY seq",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(shape, dest, json)| (shape, dest, serde_json::from_str(&json).unwrap()))
        .collect()
}

/// Each event's payload is exactly the documented type (they deny unknown fields), and
/// its type is one the AsyncAPI channel lists.
fn check_documented(envelope: &Envelope) {
    let documented: Vec<&str> = events::channels()[0]
        .messages
        .iter()
        .map(|m| m.kind)
        .collect();
    assert!(
        documented.contains(&envelope.kind.as_str()),
        "{} undocumented",
        envelope.kind
    );
    let payload = envelope.payload.clone();
    let parsed = match envelope.kind.as_str() {
        events::PRODUCT_CREATED => serde_json::from_value::<ProductCreated>(payload).map(|_| ()),
        events::PRODUCT_UPDATED => serde_json::from_value::<ProductUpdated>(payload).map(|_| ()),
        events::PRODUCT_DELETED => serde_json::from_value::<ProductDeleted>(payload).map(|_| ()),
        events::STOCK_CHANGED => serde_json::from_value::<StockChanged>(payload).map(|_| ()),
        other => panic!("unexpected event type {other}"),
    };
    parsed.unwrap_or_else(|e| panic!("{} payload does not match its schema: {e}", envelope.kind));
    assert_eq!(envelope.id.get_version_num(), 7);
}

async fn every_write_leaves_its_event_in_the_outbox(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let laptop = store
        .create_product(&NewProduct::parse("Laptop", 999.99, 50).unwrap())
        .await
        .unwrap();
    let patch = ProductPatch::parse(None, Some(899.0), Some(40)).unwrap();
    store
        .update_product(laptop.id, &patch, Some(1))
        .await
        .unwrap();
    let order = NewReservation::parse("ORD-12345", &[(laptop.id.0, 2)]).unwrap();
    reservations::reserve(db, &order).await.unwrap();
    reservations::release(db, &OrderId::parse("ORD-12345").unwrap())
        .await
        .unwrap();
    assert!(store.delete_product(laptop.id).await.unwrap());

    let events = outbox(db).await;
    let kinds: Vec<&str> = events.iter().map(|(_, _, e)| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ProductCreated",
            "ProductUpdated",
            "StockChanged",
            "StockChanged",
            "StockChanged",
            "ProductDeleted"
        ]
    );
    for (shape, destination, envelope) in &events {
        assert_eq!(
            (shape.as_str(), destination.as_str()),
            ("stream", "catalog-events")
        );
        assert_eq!(
            envelope.key.as_deref(),
            Some(laptop.id.0.to_string().as_str())
        );
        check_documented(envelope);
    }
    let stock: Vec<(i64, Option<i64>, String)> = events
        .iter()
        .filter(|(_, _, e)| e.kind == "StockChanged")
        .map(|(_, _, e)| {
            let s: StockChanged = serde_json::from_value(e.payload.clone()).unwrap();
            (s.stock, s.delta, serde_json::to_string(&s.reason).unwrap())
        })
        .collect();
    assert_eq!(
        stock,
        [
            (40, None, "\"set\"".to_owned()),
            (38, Some(-2), "\"reserved\"".to_owned()),
            (40, Some(2), "\"released\"".to_owned()),
        ]
    );
    let created: ProductCreated = serde_json::from_value(events[0].2.payload.clone()).unwrap();
    assert_eq!(
        (created.name.as_str(), created.price_minor, created.stock),
        ("Laptop", 99_999, 50)
    );
}

async fn a_refused_write_leaves_no_event(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let p = store
        .create_product(&NewProduct::parse("Mouse", 29.99, 1).unwrap())
        .await
        .unwrap();
    let before = outbox(db).await.len();
    // A stale version, an unknown product, stock that is not there: nothing commits.
    let patch = ProductPatch::parse(Some("Mouse 2"), None, None).unwrap();
    let stale = store.update_product(p.id, &patch, Some(7)).await;
    assert!(matches!(stale, Err(StoreError::Stale { .. })), "{stale:?}");
    let missing = store.update_product(ProductId(999), &patch, None).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let order = NewReservation::parse("ORD-9", &[(p.id.0, 5)]).unwrap();
    assert!(reservations::reserve(db, &order).await.is_err());
    assert!(!store.delete_product(ProductId(999)).await.unwrap());
    assert_eq!(outbox(db).await.len(), before);
}
