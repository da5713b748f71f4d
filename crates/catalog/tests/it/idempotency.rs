//! `Idempotency-Key` on the real service: concurrency, reuse, restarts.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::{Backend, TestData, all_product_ids};

async fn one_key_many_concurrent_posts(backend: Backend) {
    let data = TestData::new(backend).await;
    let app = data.spawn().await;
    let body = json!({"name": "Laptop", "price": 999.99, "stock": 50});
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = app.client.clone();
        let url = app.url("/v1/products");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("idempotency-key", "the-one-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (status, replayed, r.bytes().await.unwrap())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let created: Vec<_> = results.iter().filter(|(s, r, _)| *s == 201 && !r).collect();
    assert_eq!(created.len(), 1, "exactly one request performs the create");
    let original = &created[0].2;
    for (status, replayed, body) in &results {
        match status {
            201 if *replayed => assert_eq!(body, original, "a replay is byte-identical"),
            201 => {}
            409 => {
                let p: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert_eq!(
                    p["type"],
                    "https://brigade.dev/problems/idempotency-key-in-use"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        all_product_ids(&app, 50).await.len(),
        1,
        "exactly one product exists"
    );
    app.stop().await;
}

#[tokio::test]
async fn one_key_many_concurrent_posts_sqlite() {
    one_key_many_concurrent_posts(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_key_many_concurrent_posts_postgres() {
    one_key_many_concurrent_posts(Backend::Postgres).await;
}

#[tokio::test]
async fn a_reused_key_with_another_body_is_refused_without_effect() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let first = app
        .post(
            "/v1/products",
            "k-1",
            &json!({"name": "Mouse", "price": 29.99, "stock": 200}),
        )
        .await;
    assert_eq!(first.status(), 201);
    let reused = app
        .post(
            "/v1/products",
            "k-1",
            &json!({"name": "Mouse", "price": 19.99, "stock": 200}),
        )
        .await;
    assert_eq!(reused.status(), 422);
    let problem: serde_json::Value = reused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://brigade.dev/problems/idempotency-key-reused"
    );
    // The same key on another path is a different request too.
    let other_path = app
        .post(
            "/v1/products/1/reviews",
            "k-1",
            &json!({"user_id": 1, "rating": 5}),
        )
        .await;
    assert_eq!(other_path.status(), 422);
    assert_eq!(all_product_ids(&app, 50).await, [1]);
    let mouse: serde_json::Value = app.get("/v1/products/1").await.json().await.unwrap();
    assert_eq!(mouse["price"], 29.99);
    assert_eq!(
        app.get("/v1/products/1/reviews")
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()["items"],
        json!([])
    );
    app.stop().await;
}

async fn replay_survives_a_restart(backend: Backend) {
    let data = TestData::new(backend).await;
    let app = data.spawn().await;
    let body = json!({"name": "Desk", "price": 150.0, "stock": 3});
    let first = app.post("/v1/products", "restart-key", &body).await;
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let first_bytes = first.bytes().await.unwrap();
    app.stop().await;

    let again = data.spawn().await;
    let replay = again.post("/v1/products", "restart-key", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["location"], location);
    assert_eq!(replay.bytes().await.unwrap(), first_bytes);
    assert_eq!(all_product_ids(&again, 50).await.len(), 1);
    again.stop().await;
}

#[tokio::test]
async fn replay_survives_a_restart_sqlite() {
    replay_survives_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn replay_survives_a_restart_postgres() {
    replay_survives_a_restart(Backend::Postgres).await;
}

#[tokio::test]
async fn every_post_needs_a_well_formed_key() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let body = json!({"name": "Pen", "price": 1.5, "stock": 10});
    let missing = app
        .client
        .post(app.url("/v1/products"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let problem: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    for bad in ["", "has space", &"k".repeat(256)] {
        let r = app.post("/v1/products", bad, &body).await;
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    assert!(all_product_ids(&app, 50).await.is_empty());
    // Different keys are different creates.
    let mut ids = HashSet::new();
    for key in ["a", "b"] {
        let r: serde_json::Value = app
            .post("/v1/products", key, &body)
            .await
            .json()
            .await
            .unwrap();
        ids.insert(r["id"].as_i64().unwrap());
    }
    assert_eq!(ids.len(), 2);
    app.stop().await;
}
