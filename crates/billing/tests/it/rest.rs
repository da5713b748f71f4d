//! The REST face: an order's payment, its refusals in the problem shape, and the
//! committed contract.

use serde_json::Value;

use crate::helpers::spawn_world;

#[tokio::test]
async fn an_unknown_or_malformed_order_is_a_problem() {
    let world = spawn_world(|_| {}).await;
    let missing = world.billing.get("/v1/payments/ORD-nothing").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["type"], "https://brigade.dev/problems/not-found");
    assert_eq!(body["order_id"], "ORD-nothing");

    let malformed = world.billing.get("/v1/payments/ORD%20one").await;
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["type"], "https://brigade.dev/problems/invalid-request");
    world.billing.stop().await;
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/billing.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = serde_json::to_string_pretty(&billing::rest::openapi()).unwrap() + "\n";
    assert!(
        generated == committed,
        "openapi/billing.json is out of date with the code. Regenerate it with \
         `cargo run -q -p brigade -- openapi --write` and review the diff."
    );
}
