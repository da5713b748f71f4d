//! The store on both backends: a payment and its event commit together, an order has one
//! payment, and only a succeeded payment is refunded (once).

use billing::BillingStore;
use billing::domain::{ChargeAnswer, Decline, OrderId, OrderToCharge, Payment, PaymentStatus};
use messaging::Envelope;
use messaging::outbox::Outbox;
use storage::Database;

storage::backend_tests!(billing::ALL_MIGRATIONS;
    a_payment_and_its_event_commit_together,
    an_order_has_one_payment,
    only_a_succeeded_payment_is_refunded_once,
);

fn store(db: &Database) -> BillingStore {
    BillingStore::new(db.clone(), Outbox::new(db.clone(), "billing"))
}

fn payment(order: &str, answer: ChargeAnswer) -> Payment {
    let order = OrderToCharge::parse(order, 1999, "usd").unwrap();
    Payment::from_answer(order, answer, 1_700_000_000_000)
}

fn paid(order: &str) -> Payment {
    payment(
        order,
        ChargeAnswer::Succeeded {
            charge_id: format!("ch_{order}"),
        },
    )
}

/// The outbox's unsent messages, in write order: (destination, envelope).
async fn outbox(db: &Database) -> Vec<(String, Envelope)> {
    let mut conn = db.pool().acquire().await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT destination, envelope FROM outbox WHERE sent_at IS NULL ORDER BY seq",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(dest, json)| (dest, serde_json::from_str(&json).unwrap()))
        .collect()
}

async fn a_payment_and_its_event_commit_together(db: &Database) {
    let store = store(db);
    let declined = payment(
        "ORD-2",
        ChargeAnswer::Declined(Decline {
            charge_id: None,
            code: "insufficient_funds".into(),
            reason: "Your card has insufficient funds.".into(),
        }),
    );
    // Rolled back: neither the row nor the event.
    let mut tx = store.begin().await.unwrap();
    assert!(
        store
            .insert_payment_in(&mut tx, &paid("ORD-1"))
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert!(outbox(db).await.is_empty());
    let order1 = OrderId::parse("ORD-1").unwrap();
    assert_eq!(store.payment(&order1).await.unwrap(), None);

    let mut tx = store.begin().await.unwrap();
    assert!(
        store
            .insert_payment_in(&mut tx, &paid("ORD-1"))
            .await
            .unwrap()
    );
    assert!(store.insert_payment_in(&mut tx, &declined).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(store.payment(&order1).await.unwrap(), Some(paid("ORD-1")));

    let events = outbox(db).await;
    let kinds: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .map(|(dest, e)| (dest.as_str(), e.kind.as_str(), e.key.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("order-events", "OrderPaid", Some("ORD-1")),
            ("order-events", "PaymentFailed", Some("ORD-2")),
        ]
    );
    let failed: orders::events::PaymentFailed =
        serde_json::from_value(events[1].1.payload.clone()).unwrap();
    assert_eq!(failed.code, "insufficient_funds");
    assert!((failed.total - 19.99).abs() < f64::EPSILON);
}

async fn an_order_has_one_payment(db: &Database) {
    let store = store(db);
    let mut tx = store.begin().await.unwrap();
    assert!(
        store
            .insert_payment_in(&mut tx, &paid("ORD-1"))
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let again = payment(
        "ORD-1",
        ChargeAnswer::Succeeded {
            charge_id: "ch_other".into(),
        },
    );
    assert!(!store.insert_payment_in(&mut tx, &again).await.unwrap());
    tx.commit().await.unwrap();
    let kept = store
        .payment(&OrderId::parse("ORD-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.charge_id.as_deref(), Some("ch_ORD-1"));
    assert_eq!(outbox(db).await.len(), 1);
}

async fn only_a_succeeded_payment_is_refunded_once(db: &Database) {
    let store = store(db);
    let declined = payment(
        "ORD-2",
        ChargeAnswer::Declined(Decline {
            charge_id: Some("ch_x".into()),
            code: "card_declined".into(),
            reason: "no".into(),
        }),
    );
    let mut tx = store.begin().await.unwrap();
    store
        .insert_payment_in(&mut tx, &paid("ORD-1"))
        .await
        .unwrap();
    store.insert_payment_in(&mut tx, &declined).await.unwrap();
    tx.commit().await.unwrap();
    let (one, two, three) = (
        OrderId::parse("ORD-1").unwrap(),
        OrderId::parse("ORD-2").unwrap(),
        OrderId::parse("ORD-3").unwrap(),
    );

    let mut tx = store.begin().await.unwrap();
    let refunded = store
        .refund_in(&mut tx, &one, "re_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert_eq!(refunded.refund_id.as_deref(), Some("re_1"));
    assert_eq!(store.refund_in(&mut tx, &one, "re_2").await.unwrap(), None);
    assert_eq!(store.refund_in(&mut tx, &two, "re_3").await.unwrap(), None);
    assert_eq!(
        store.refund_in(&mut tx, &three, "re_4").await.unwrap(),
        None
    );
    tx.commit().await.unwrap();

    let kept = store.payment(&one).await.unwrap().unwrap();
    assert_eq!(
        (kept.status, kept.refund_id.as_deref()),
        (PaymentStatus::Refunded, Some("re_1"))
    );
    assert_eq!(
        store.payment(&two).await.unwrap().unwrap().status,
        PaymentStatus::Declined
    );
    let events = outbox(db).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last.kind, "OrderRefunded");
    let body: orders::events::OrderRefunded = serde_json::from_value(last.payload.clone()).unwrap();
    assert_eq!((body.refund_id.as_str(), body.amount_minor), ("re_1", 1999));
    assert_eq!(events.len(), 3);
}
