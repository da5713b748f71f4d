//! The use cases without the stream: what two handlers of one order racing each other
//! (two members, or two billing processes, handed the order's events around a
//! rebalance) do — one charge at the provider, one payment, one event.

use billing::app::{Billed, Billing, BillingError};
use billing::domain::OrderToCharge;
use billing::provider::Provider;
use messaging::outbox::Outbox;
use settings::Settings;

use crate::helpers::{TestApp, order_id};

#[tokio::test]
async fn two_handlers_racing_on_one_order_charge_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.services.payments_sandbox.port = 0;
    let sandbox = payments::build(&settings).await.unwrap();
    settings.services.payments_sandbox.port = sandbox.port();
    let sandbox = TestApp::run(sandbox);
    let db = storage::testing::sqlite(billing::ALL_MIGRATIONS).await;
    let store = billing::BillingStore::new(db.db.clone(), Outbox::new(db.db.clone(), "billing"));
    let billing = Billing::new(store, Provider::new(&settings).unwrap());

    let order = order_id();
    let charge = || OrderToCharge::parse(&order, 500, "usd").unwrap();
    let (a, b) = tokio::join!(
        billing.charge(uuid::Uuid::now_v7(), charge()),
        billing.charge(uuid::Uuid::now_v7(), charge()),
    );
    let mut recorded = 0;
    for outcome in [a, b] {
        match outcome {
            Ok(Billed::Recorded(_)) => recorded += 1,
            // The other one: it found the payment, lost the race to record it, or met
            // the first request still holding the key (and would be retried).
            Ok(Billed::AlreadyBilled(_) | Billed::Concurrent)
            | Err(BillingError::ProviderUnavailable(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(recorded, 1);
    // A retry of either now finds the payment.
    assert!(matches!(
        billing.charge(uuid::Uuid::now_v7(), charge()).await,
        Ok(Billed::AlreadyBilled(_))
    ));

    let ledger: serde_json::Value = sandbox
        .get(&format!("/v1/charges?order_id={order}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["data"].as_array().unwrap().len(), 1, "{ledger}");
    assert_eq!(billing.store().outbox().backlog().await.unwrap(), 1);
}
