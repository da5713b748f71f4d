//! The ledger's repository, run against both backends.

use payments::domain::{
    Amount, Charge, ChargeId, Decline, NewCharge, OrderRef, Outcome, Refund, RefundId,
};
use payments::{ALL_MIGRATIONS, PaymentsStore};
use storage::Database;

storage::backend_tests!(ALL_MIGRATIONS;
    charges_round_trip_and_list_by_order_oldest_first,
    refunds_add_up_only_from_what_was_read,
    failed_charges_take_no_refund,
);

fn new_charge(amount: i64, order: &str, outcome: Outcome, at: i64) -> Charge {
    let new = NewCharge::parse(amount, "usd", order, Some("Two mice")).unwrap();
    Charge::new(new, outcome, at)
}

fn refund_of(charge: &Charge, cents: i64) -> Refund {
    Refund {
        id: RefundId::generate(),
        charge: charge.id.clone(),
        amount: Amount::parse(cents).unwrap(),
        created_at: 1_000,
    }
}

async fn charges_round_trip_and_list_by_order_oldest_first(db: &Database) {
    let store = PaymentsStore::new(db.clone());
    // Same millisecond: the ledger's order is still the order of writing.
    let first = new_charge(100, "o-1", Outcome::Succeeded, 5);
    let declined = new_charge(200, "o-1", Outcome::Failed(Decline::generic()), 5);
    let other = new_charge(300, "o-2", Outcome::Succeeded, 5);
    for charge in [&first, &declined, &other] {
        store.insert_charge(charge).await.unwrap();
    }
    assert_eq!(store.charge(&first.id).await.unwrap().unwrap(), first);
    assert_eq!(store.charge(&declined.id).await.unwrap().unwrap(), declined);
    assert!(store.charge(&ChargeId::generate()).await.unwrap().is_none());
    let o1 = store
        .charges_of_order(&OrderRef::parse("o-1").unwrap())
        .await
        .unwrap();
    assert_eq!(o1, [first, declined]);
    assert!(
        store
            .charges_of_order(&OrderRef::parse("o-3").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn refunds_add_up_only_from_what_was_read(db: &Database) {
    let store = PaymentsStore::new(db.clone());
    let charge = new_charge(1000, "o-1", Outcome::Succeeded, 1);
    store.insert_charge(&charge).await.unwrap();

    let mut tx = db.begin_write().await.unwrap();
    let read = store
        .charge_for_update_in(&mut tx, &charge.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.amount_refunded, 0);
    let first = refund_of(&charge, 400);
    assert!(store.insert_refund_in(&mut tx, &first, 0).await.unwrap());
    // Read at 0, but it is 400 now: refused, nothing written.
    let stale = refund_of(&charge, 400);
    assert!(!store.insert_refund_in(&mut tx, &stale, 0).await.unwrap());
    // More than is left: refused even from the right amount.
    let too_much = refund_of(&charge, 601);
    assert!(
        !store
            .insert_refund_in(&mut tx, &too_much, 400)
            .await
            .unwrap()
    );
    let rest = refund_of(&charge, 600);
    assert!(store.insert_refund_in(&mut tx, &rest, 400).await.unwrap());
    tx.commit().await.unwrap();

    let after = store.charge(&charge.id).await.unwrap().unwrap();
    assert_eq!(after.amount_refunded, 1000);
    assert!(after.refunded());
    assert_eq!(
        store.refunds_of_charge(&charge.id).await.unwrap(),
        [first, rest]
    );
}

async fn failed_charges_take_no_refund(db: &Database) {
    let store = PaymentsStore::new(db.clone());
    let charge = new_charge(1000, "o-1", Outcome::Failed(Decline::generic()), 1);
    store.insert_charge(&charge).await.unwrap();
    let mut tx = db.begin_write().await.unwrap();
    assert!(
        !store
            .insert_refund_in(&mut tx, &refund_of(&charge, 100), 0)
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert!(
        store
            .refunds_of_charge(&charge.id)
            .await
            .unwrap()
            .is_empty()
    );
    let unknown = ChargeId::generate();
    let mut tx = db.begin_write().await.unwrap();
    assert!(
        store
            .charge_for_update_in(&mut tx, &unknown)
            .await
            .unwrap()
            .is_none()
    );
    tx.rollback().await.unwrap();
}
