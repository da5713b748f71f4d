//! Each owning service's subgraph, as a federation router uses it: `_service { sdl }` to
//! compose, `_entities` to resolve what another subgraph names by key, and the writes
//! with their idempotency keys. (Composition itself, and Apollo's router answering as our
//! gateway does, are CI's `contract-tests/federation/run.sh`.)

use serde_json::{Value, json};
use server::testing::Running;

use crate::helpers::System;

async fn subgraph(service: &Running, query: &str, variables: Value) -> Value {
    let response = service
        .client
        .post(service.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn each_subgraph_serves_its_sdl_and_resolves_its_entities_by_key() {
    let system = System::start_with_orders(3, 0).await;

    // The SDL a router composes is the committed one's source.
    let sdl = subgraph(&system.catalog, "{ _service { sdl } }", json!({})).await;
    let sdl = sdl["data"]["_service"]["sdl"].as_str().unwrap().to_owned();
    assert!(sdl.contains("type Product @key(fields: \"id\")"), "{sdl}");
    assert_eq!(sdl.trim_end(), catalog::graphql::sdl().trim_end());

    // Catalog: products by key, a missing one null, in the order asked.
    let found = subgraph(
        &system.catalog,
        r#"query($r: [_Any!]!) { _entities(representations: $r) { ... on Product { id name } } }"#,
        json!({ "r": [
            { "__typename": "Product", "id": "2" },
            { "__typename": "Product", "id": "999999" },
            { "__typename": "Product", "id": "1" },
        ]}),
    )
    .await;
    assert_eq!(
        found["data"]["_entities"],
        json!([{ "id": "2", "name": "Mouse" }, null, { "id": "1", "name": "Laptop" }]),
        "{found:#}"
    );

    // Accounts: users by key (a page of reviews' authors, as a router asks for them).
    let users = subgraph(
        system.accounts(),
        r#"query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id name } } }"#,
        json!({ "r": [{ "__typename": "User", "id": "1" }, { "__typename": "User", "id": "2" }] }),
    )
    .await;
    assert_eq!(
        users["data"]["_entities"][0]["name"], "Jane Doe",
        "{users:#}"
    );
    assert_eq!(users["data"]["_entities"][1]["id"], "2");

    // Orders: an order placed here, then found through the user entity orders extends.
    let place = r#"mutation($input: PlaceOrderInput!, $key: String!) {
        placeOrder(input: $input, idempotencyKey: $key) { id status user { id } items { product { id } quantity } } }"#;
    let input = json!({ "userId": "1", "items": [{ "productId": "2", "quantity": 1 }] });
    let placed = subgraph(
        system.orders(),
        place,
        json!({ "input": input, "key": "subgraph-1" }),
    )
    .await;
    let order = &placed["data"]["placeOrder"];
    assert_eq!(order["status"], "PENDING", "{placed:#}");
    assert_eq!(order["user"], json!({ "id": "1" }));
    assert_eq!(
        order["items"],
        json!([{ "product": { "id": "2" }, "quantity": 1 }])
    );
    let id = order["id"].as_str().unwrap().to_owned();

    // The same key again answers the same order; with other input it is refused.
    let again = subgraph(
        system.orders(),
        place,
        json!({ "input": input, "key": "subgraph-1" }),
    )
    .await;
    assert_eq!(again["data"]["placeOrder"]["id"], id.as_str(), "{again:#}");
    let other = json!({ "userId": "1", "items": [{ "productId": "1", "quantity": 1 }] });
    let reused = subgraph(
        system.orders(),
        place,
        json!({ "input": other, "key": "subgraph-1" }),
    )
    .await;
    assert_eq!(reused["data"], Value::Null, "{reused:#}");
    assert_eq!(
        reused["errors"][0]["extensions"]["status"], 422,
        "{reused:#}"
    );

    let theirs = subgraph(
        system.orders(),
        r#"query($r: [_Any!]!) { _entities(representations: $r) { ... on User { orders { nodes { id } } } } }"#,
        json!({ "r": [{ "__typename": "User", "id": "1" }] }),
    )
    .await;
    assert_eq!(
        theirs["data"]["_entities"][0]["orders"]["nodes"],
        json!([{ "id": id }]),
        "{theirs:#}"
    );

    // Paging arguments are refused naming them, as the gateway does.
    for (args, field) in [
        ("first: 0", "first"),
        ("first: 2, after: \"nope\"", "after"),
    ] {
        let refused = subgraph(
            system.orders(),
            &format!(
                r#"query($r: [_Any!]!) {{ _entities(representations: $r) {{ ... on User {{ orders({args}) {{ nodes {{ id }} }} }} }} }}"#
            ),
            json!({ "r": [{ "__typename": "User", "id": "1" }] }),
        )
        .await;
        let error = &refused["errors"][0]["extensions"];
        assert_eq!(error["code"], "INVALID_ARGUMENT", "{refused:#}");
        assert_eq!(error["errors"][0]["field"], field, "{refused:#}");
    }

    // An invalid order is refused with the error table's extensions, naming the field.
    let invalid = subgraph(
        system.orders(),
        place,
        json!({ "input": { "userId": "1", "items": [{ "productId": "2", "quantity": 0 }] }, "key": "subgraph-2" }),
    )
    .await;
    let extensions = &invalid["errors"][0]["extensions"];
    assert_eq!(extensions["code"], "INVALID_ARGUMENT", "{invalid:#}");
    assert_eq!(
        extensions["errors"][0]["field"], "input.items[0].quantity",
        "{invalid:#}"
    );
}

#[tokio::test]
async fn a_subgraph_create_with_a_key_creates_once() {
    let system = System::start(2, 0).await;
    let create = r#"mutation { createProduct(name: "Dock", price: 49.5, stock: 3, idempotencyKey: "dock-1") { id name price stock } }"#;
    let first = subgraph(&system.catalog, create, json!({})).await;
    let second = subgraph(&system.catalog, create, json!({})).await;
    assert_eq!(first["data"]["createProduct"]["name"], "Dock", "{first:#}");
    assert_eq!(first["data"], second["data"]);
    let listed = subgraph(
        &system.catalog,
        "{ products(limit: 200) { name } }",
        json!({}),
    )
    .await;
    let docks = listed["data"]["products"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "Dock")
        .count();
    assert_eq!(docks, 1);

    // A malformed key is refused naming the argument.
    let bad_key = subgraph(
        &system.catalog,
        r#"mutation { createProduct(name: "Dock", price: 1, stock: 1, idempotencyKey: "has space") { id } }"#,
        json!({}),
    )
    .await;
    let extensions = &bad_key["errors"][0]["extensions"];
    assert_eq!(extensions["code"], "INVALID_ARGUMENT", "{bad_key:#}");
    assert_eq!(
        extensions["errors"][0]["field"], "idempotencyKey",
        "{bad_key:#}"
    );
    assert!(
        bad_key["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("idempotencyKey"),
        "{bad_key:#}"
    );

    // Bad input is refused before anything is written, every bad field named.
    let bad = subgraph(
        &system.catalog,
        r#"mutation { createProduct(name: " ", price: -1, stock: 3) { id } }"#,
        json!({}),
    )
    .await;
    let fields: Vec<&str> = bad["errors"][0]["extensions"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "price"], "{bad:#}");
    // A body that is not a GraphQL request is a 400 with a GraphQL error.
    let response = system
        .catalog
        .client
        .post(system.catalog.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_ARGUMENT");
}
