//! The behaviour, read and set over HTTP.

use serde_json::json;

use crate::helpers::{Backend, problem, spawn_app};

#[tokio::test]
async fn behaviour_is_read_and_changed_field_by_field() {
    let app = spawn_app(Backend::Sqlite).await;
    let healthy =
        json!({"latency_ms": 0, "latency_jitter_ms": 0, "decline_rate": 0.0, "error_rate": 0.0});
    assert_eq!(app.get_json("/v1/sandbox/behaviour").await, healthy);

    let slow = app
        .behave(json!({"latency_ms": 250, "latency_jitter_ms": 50}))
        .await;
    assert_eq!(
        slow,
        json!({"latency_ms": 250, "latency_jitter_ms": 50, "decline_rate": 0.0, "error_rate": 0.0})
    );
    // Only what is sent changes; integers are rates too.
    let flaky = app
        .behave(json!({"decline_rate": 0.25, "error_rate": 1}))
        .await;
    assert_eq!(
        flaky,
        json!({"latency_ms": 250, "latency_jitter_ms": 50, "decline_rate": 0.25, "error_rate": 1.0})
    );
    assert_eq!(app.get_json("/v1/sandbox/behaviour").await, flaky);
    assert_eq!(app.behave(json!({})).await, flaky);
    app.stop().await;
}

#[tokio::test]
async fn out_of_range_behaviour_is_a_422_naming_every_field_and_changes_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let before = app.get_json("/v1/sandbox/behaviour").await;
    let bad = json!({
        "latency_ms": 120_001,
        "latency_jitter_ms": -1,
        "decline_rate": 1.5,
        "error_rate": -0.1,
    });
    let p = problem(app.put_behaviour(&bad).await, 422, "validation-failed").await;
    let fields: Vec<_> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "latency_ms",
            "latency_jitter_ms",
            "decline_rate",
            "error_rate"
        ]
    );
    assert_eq!(p["errors"][0]["reason"], "must be between 0 and 120000");
    assert_eq!(p["errors"][2]["reason"], "must be between 0 and 1");
    // One bad field refuses the whole change.
    let half = json!({"latency_ms": 10, "error_rate": 2});
    let p = problem(app.put_behaviour(&half).await, 422, "validation-failed").await;
    assert_eq!(p["errors"][0]["field"], "error_rate");
    assert_eq!(app.get_json("/v1/sandbox/behaviour").await, before);
    // Of the wrong type or unknown: named too.
    let p = problem(
        app.put_behaviour(&json!({"latency_ms": "slow"})).await,
        422,
        "validation-failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "latency_ms");
    problem(
        app.put_behaviour(&json!({"timeout_rate": 0.5})).await,
        422,
        "validation-failed",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn jittered_latency_delays_a_charge_by_at_least_its_latency() {
    let app = spawn_app(Backend::Sqlite).await;
    app.behave(json!({"latency_ms": 1000, "latency_jitter_ms": 100}))
        .await;
    let started = std::time::Instant::now();
    let response = app
        .charge("k1", &crate::helpers::charge_body(100, "order-l"))
        .await;
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(took >= std::time::Duration::from_millis(1000), "{took:?}");
    // A replay answers from the record, without the wait.
    let started = std::time::Instant::now();
    let replay = app
        .charge("k1", &crate::helpers::charge_body(100, "order-l"))
        .await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    app.stop().await;
}
