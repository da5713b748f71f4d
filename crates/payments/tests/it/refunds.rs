//! Refunds over HTTP: full and partial, refused, unknown, replayed, and concurrent.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, charge_body, problem, spawn_app};

on_both_backends!(
    partial_then_full_refunds_update_the_charge,
    over_refunds_and_refunds_of_failed_charges_are_refused_and_remembered,
    refunding_an_unknown_charge_is_a_404,
    concurrent_refunds_never_refund_more_than_was_charged,
);

/// A succeeded charge of `amount` for `order`; its id.
async fn charged(app: &TestApp, key: &str, amount: i64) -> String {
    let response = app.charge(key, &charge_body(amount, "order-r")).await;
    assert_eq!(response.status(), 200);
    let charge: Value = response.json().await.unwrap();
    charge["id"].as_str().unwrap().to_owned()
}

async fn partial_then_full_refunds_update_the_charge(backend: Backend) {
    let app = spawn_app(backend).await;
    let charge = charged(&app, "c1", 1000).await;

    let partial_body = json!({"charge": charge, "amount": 300});
    let partial = app.refund("r1", &partial_body).await;
    assert_eq!(partial.status(), 200);
    let partial_bytes = partial.bytes().await.unwrap();
    let refund: Value = serde_json::from_slice(&partial_bytes).unwrap();
    let id = refund["id"].as_str().unwrap();
    assert!(id.starts_with("re_") && id.len() == 35, "{id}");
    assert_eq!(refund["object"], "refund");
    assert_eq!(refund["charge"], charge.as_str());
    assert_eq!(refund["amount"], 300);
    assert_eq!(refund["status"], "succeeded");
    assert!(refund["created"].as_i64().unwrap() > 1_700_000_000);
    let after = app.get_json(&format!("/v1/charges/{charge}")).await;
    assert_eq!(after["amount_refunded"], 300);
    assert_eq!(after["refunded"], false);

    // The same key replays the refund and refunds nothing more.
    let replay = app.refund("r1", &partial_body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.bytes().await.unwrap(), partial_bytes);

    // Without an amount: what is left.
    let rest = app.refund("r2", &json!({"charge": charge})).await;
    assert_eq!(rest.status(), 200);
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["amount"], 700);
    let after = app.get_json(&format!("/v1/charges/{charge}")).await;
    assert_eq!(after["amount_refunded"], 1000);
    assert_eq!(after["refunded"], true);

    let list = app.get_json(&format!("/v1/refunds?charge={charge}")).await;
    assert_eq!(list["object"], "list");
    let amounts: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [300, 700], "oldest first");

    // Nothing is left.
    let again = app.refund("r3", &json!({"charge": charge})).await;
    let p = problem(again, 422, "business-rule-violated").await;
    assert_eq!(p["charge"], charge.as_str());
    app.stop().await;
}

async fn over_refunds_and_refunds_of_failed_charges_are_refused_and_remembered(backend: Backend) {
    let app = spawn_app(backend).await;
    let charge = charged(&app, "c1", 1000).await;
    let over_body = json!({"charge": charge, "amount": 1001});
    let over = app.refund("r1", &over_body).await;
    let p = problem(over, 422, "business-rule-violated").await;
    assert_eq!(p["amount_refundable"], 1000);
    assert_eq!(p["charge"], charge.as_str());
    // A refusal is the key's answer, as Stripe keeps it.
    let replay = app.refund("r1", &over_body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    problem(replay, 422, "business-rule-violated").await;
    let untouched = app.get_json(&format!("/v1/charges/{charge}")).await;
    assert_eq!(untouched["amount_refunded"], 0);
    let none = app.get_json(&format!("/v1/refunds?charge={charge}")).await;
    assert!(none["data"].as_array().unwrap().is_empty());

    app.behave(json!({"decline_rate": 1.0})).await;
    let declined = app.charge("c2", &charge_body(500, "order-r")).await;
    let failed = problem(declined, 402, "payment-declined").await;
    let failed_id = failed["charge"].as_str().unwrap();
    let refused = app.refund("r2", &json!({"charge": failed_id})).await;
    let p = problem(refused, 422, "business-rule-violated").await;
    assert_eq!(p["charge"], failed_id);

    let bad = app
        .refund("r3", &json!({"charge": charge, "amount": 0}))
        .await;
    let p = problem(bad, 422, "validation-failed").await;
    assert_eq!(p["errors"][0]["field"], "amount");
    app.stop().await;
}

async fn refunding_an_unknown_charge_is_a_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = format!("ch_{}", "a".repeat(32));
    let body = json!({"charge": unknown});
    let p = problem(app.refund("r1", &body).await, 404, "not-found").await;
    assert_eq!(p["charge"], unknown.as_str());
    // Remembered like every client error.
    let replay = app.refund("r1", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.status(), 404);

    let malformed = app.refund("r2", &json!({"charge": "ch_nope"})).await;
    let p = problem(malformed, 422, "validation-failed").await;
    assert_eq!(p["errors"][0]["field"], "charge");

    problem(
        app.get(&format!("/v1/refunds?charge={unknown}")).await,
        404,
        "not-found",
    )
    .await;
    let p = problem(app.get("/v1/refunds").await, 400, "invalid-request").await;
    assert_eq!(p["errors"][0]["field"], "charge");
    let p = problem(
        app.get("/v1/refunds?charge=nope").await,
        400,
        "invalid-request",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "charge");
    app.stop().await;
}

async fn concurrent_refunds_never_refund_more_than_was_charged(backend: Backend) {
    let app = spawn_app(backend).await;
    let charge = charged(&app, "c1", 1000).await;
    let body = json!({"charge": charge, "amount": 300});
    let mut refunds = tokio::task::JoinSet::new();
    for i in 0..5 {
        let request = app
            .client
            .post(app.url("/v1/refunds"))
            .header("idempotency-key", format!("r{i}"))
            .json(&body);
        refunds.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let mut statuses = refunds.join_all().await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 422, 422]);
    let after = app.get_json(&format!("/v1/charges/{charge}")).await;
    assert_eq!(after["amount_refunded"], 900);
    let list = app.get_json(&format!("/v1/refunds?charge={charge}")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    app.stop().await;
}
