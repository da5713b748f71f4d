//! The gateway as the one door: API keys and their scopes on every write, REST forwarded
//! to the owning service, idempotency keys scoped per API key, and no way around it.

use std::time::Duration;

use serde_json::{Value, json};

use telemetry::metrics::series_value;

use crate::helpers::{System, bearer, make_key};

/// Every write endpoint of the public REST API, read from the committed OpenAPI
/// documents (which tests elsewhere hold equal to the code), so a new one is covered the
/// day it is added.
fn rest_writes() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi");
    let mut writes = Vec::new();
    for service in ["catalog", "accounts", "orders", "billing"] {
        let text = std::fs::read_to_string(dir.join(format!("{service}.json"))).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                if ["post", "put", "patch", "delete"].contains(&method.as_str()) {
                    // Any id will do: the refusal comes before anything is looked up.
                    let concrete = path.replace("{id}", "1").replace("{order_id}", "1");
                    writes.push((method.to_uppercase(), concrete));
                }
            }
        }
    }
    assert!(writes.len() >= 7, "{writes:?}");
    writes
}

/// A call of every mutation, by field name. The test asks the schema for its mutations
/// and fails on any this table lacks.
fn mutation_call(field: &str) -> &'static str {
    match field {
        "createProduct" => {
            r#"mutation { createProduct(name: "Nope", price: 1.5, stock: 1, idempotencyKey: "edge-m1") { id } }"#
        }
        "placeOrder" => {
            r#"mutation { placeOrder(input: {userId: "1", items: [{productId: "1", quantity: 1}]}, idempotencyKey: "edge-m2") { id } }"#
        }
        "cancelOrder" => r#"mutation { cancelOrder(id: "ord_x") { id } }"#,
        other => panic!("mutation {other} has no call in edge.rs's table: add one"),
    }
}

/// The calls the gateway has made to the services (from the test's own recorder), and
/// what the system holds that a write would change (two calls more).
async fn footprint(system: &System, rendered: String) -> (f64, Value, Value) {
    let calls = series_value(
        &rendered,
        "brigade_downstream_calls_total",
        &[("service", "gateway")],
    );
    let products: Value = system
        .anonymous()
        .get(system.gateway.url("/v1/products?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users: Value = system
        .gateway
        .client
        .get(system.gateway.url("/v1/users?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (calls, products, users)
}

async fn wait_for_keys() {
    // The gateway reloads its keys every 100 ms in these tests.
    tokio::time::sleep(Duration::from_millis(400)).await;
}

/// A current-thread runtime: the test's own recorder sees only its own calls.
#[tokio::test]
async fn every_write_without_a_valid_key_or_its_scope_is_refused_and_changes_nothing() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
    })
    .await;
    let revoked = make_key(&system.settings, "revoked", None).await;
    let narrow = make_key(&system.settings, "narrow", Some("billing:read")).await;
    {
        let db = storage::Database::open(
            &system.settings.database_url(settings::ServiceName::Gateway),
            &system.settings.database,
            &[gateway::MIGRATIONS],
        )
        .await
        .unwrap();
        let store = gateway::keys::KeyStore::new(db.clone());
        let id = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.name == "revoked")
            .unwrap()
            .id;
        store.revoke(&id).await.unwrap();
        db.close().await;
    }
    wait_for_keys().await;
    let before = footprint(&system, metrics.render()).await;

    let callers = [
        ("no key", system.anonymous(), 401),
        ("a revoked key", bearer(&revoked), 401),
        ("a key of another shape", bearer("sk_live_not_ours"), 401),
        ("a key without the scope", bearer(&narrow), 403),
    ];
    for (method, path) in rest_writes() {
        for (who, client, status) in &callers {
            let answer = client
                .request(method.parse().unwrap(), system.gateway.url(&path))
                .header("idempotency-key", format!("edge-{method}-{path}"))
                .json(&json!({"name": "Nope", "price": 1.5, "stock": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                answer.status().as_u16(),
                *status,
                "{method} {path} with {who}"
            );
            let www = answer.headers().get("www-authenticate").cloned();
            let body: Value = answer.json().await.unwrap();
            let kind = if *status == 401 {
                "unauthenticated"
            } else {
                "forbidden"
            };
            assert_eq!(
                body["type"],
                format!("https://brigade.dev/problems/{kind}"),
                "{method} {path} with {who}: {body}"
            );
            assert_eq!(www.is_some(), *status == 401, "{method} {path} with {who}");
        }
    }

    let mutations: Value = system
        .graphql("{ __schema { mutationType { fields { name } } } }")
        .await;
    let fields = mutations["data"]["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap();
    assert!(fields.len() >= 3);
    for field in fields {
        let name = field["name"].as_str().unwrap();
        for (who, client, status) in &callers {
            let answer = client
                .post(system.gateway.url("/graphql"))
                .json(&json!({"query": mutation_call(name)}))
                .send()
                .await
                .unwrap();
            let http = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap();
            // A key that is not valid is refused at the door (HTTP 401); a missing key or
            // scope is the field's error, with the table's code.
            let code = if *status == 401 {
                "UNAUTHENTICATED"
            } else {
                "PERMISSION_DENIED"
            };
            if http == 401 {
                assert_ne!(*who, "no key", "{name}: {body}");
                assert_eq!(body["status"], 401, "{name} with {who}: {body}");
            } else {
                assert_eq!(http, 200, "{name} with {who}: {body}");
                assert_eq!(
                    body["errors"][0]["extensions"]["code"], code,
                    "{name} with {who}: {body}"
                );
            }
        }
    }
    let after = footprint(&system, metrics.render()).await;
    assert_eq!(
        after.0,
        before.0 + 2.0,
        "the gateway called a service for a refused write (2 calls are the footprint's)"
    );
    assert_eq!(
        (&after.1, &after.2),
        (&before.1, &before.2),
        "a refused write changed something"
    );
}

#[tokio::test]
async fn two_api_keys_with_the_same_idempotency_key_get_two_results() {
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
    })
    .await;
    let other = make_key(&system.settings, "other", Some("catalog:write")).await;
    wait_for_keys().await;
    let body = json!({"name": "Twin", "price": 2.5, "stock": 4});
    let mut ids = Vec::new();
    for client in [system.gateway.client.clone(), bearer(&other)] {
        for _ in 0..2 {
            let answer = client
                .post(system.gateway.url("/v1/products"))
                .header("idempotency-key", "same-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201);
            let created: Value = answer.json().await.unwrap();
            ids.push(created["id"].as_i64().unwrap());
        }
    }
    // Each key replays its own first answer, and the two keys made two products.
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2], "{ids:?}");
}

#[tokio::test]
async fn rest_is_forwarded_with_the_callers_scopes_and_services_refuse_the_side_door() {
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
    })
    .await;
    let reader = make_key(&system.settings, "reader", Some("accounts:read")).await;
    wait_for_keys().await;
    // Catalog's reads are public; a user needs accounts:read.
    let laptop = system
        .anonymous()
        .get(system.gateway.url("/v1/products/1"))
        .header("x-correlation-id", "edge-forward-1")
        .send()
        .await
        .unwrap();
    assert_eq!(laptop.status(), 200);
    assert_eq!(laptop.headers()["x-correlation-id"], "edge-forward-1");
    assert!(laptop.headers().contains_key("etag"));
    let vary: Vec<_> = laptop.headers().get_all("vary").iter().collect();
    assert_eq!(vary.len(), 1, "{vary:?}");
    let body: Value = laptop.json().await.unwrap();
    assert_eq!(body["name"], "Laptop");
    let user = system
        .anonymous()
        .get(system.gateway.url("/v1/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 401);
    let user = bearer(&reader)
        .get(system.gateway.url("/v1/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    // A path no service owns is the gateway's 404.
    let nothing = system
        .anonymous()
        .get(system.gateway.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 404);

    // The services' own ports take no call that skipped the gateway, key or not.
    for (client, what) in [
        (system.anonymous(), "no key"),
        (bearer(&system.key), "a key"),
    ] {
        let direct = client
            .post(system.catalog.url("/v1/products"))
            .header("idempotency-key", "side-door")
            .json(&json!({"name": "Side", "price": 1.0, "stock": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 401, "{what}");
        let direct = client
            .get(system.accounts().url("/v1/users/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 401, "{what}");
    }
}
