//! The product and review resources over HTTP, errors included.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{all_product_ids, spawn_app};

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn the_seeds_product_resource_round_trips() {
    let (app, _data) = spawn_app().await;
    let created = app
        .post(
            "/v1/products",
            "create-laptop",
            &json!({"name": "Laptop", "price": 999.99, "stock": 50}),
        )
        .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/products/1");
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["name"], "Laptop");
    assert_eq!(body["price"], 999.99);
    assert_eq!(body["stock"], 50);

    let got = app.get("/v1/products/1").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["etag"].to_str().unwrap(), etag);
    let read: Value = got.json().await.unwrap();
    assert_eq!(read, body);

    let not_modified = app
        .client
        .get(app.url("/v1/products/1"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert!(not_modified.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_product_is_the_seeds_problem() {
    let (app, _data) = spawn_app().await;
    let r = app.get("/v1/products/999").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], PROBLEM);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "https://brigade.dev/problems/not-found");
    assert_eq!(p["title"], "Not found");
    assert_eq!(p["status"], 404);
    assert_eq!(p["instance"], "/v1/products/999");
    assert!(p["correlation_id"].as_str().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn patch_honours_if_match() {
    let (app, _data) = spawn_app().await;
    let created = app
        .post(
            "/v1/products",
            "p",
            &json!({"name": "Mouse", "price": 29.99, "stock": 200}),
        )
        .await;
    let v1 = created.headers()["etag"].to_str().unwrap().to_owned();

    let ok = app
        .client
        .patch(app.url("/v1/products/1"))
        .header("if-match", &v1)
        .json(&json!({"price": 24.99}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let v2 = ok.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(
        (body["price"].clone(), body["stock"].clone()),
        (json!(24.99), json!(200))
    );

    // A client still holding v1 must not overwrite v2.
    let stale = app
        .client
        .patch(app.url("/v1/products/1"))
        .header("if-match", &v1)
        .json(&json!({"stock": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let p: Value = stale.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://brigade.dev/problems/precondition-failed"
    );
    let now: Value = app.get("/v1/products/1").await.json().await.unwrap();
    assert_eq!(now["stock"], 200);

    let missing = app
        .client
        .patch(app.url("/v1/products/77"))
        .json(&json!({"stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn delete_removes_the_product() {
    let (app, _data) = spawn_app().await;
    app.post(
        "/v1/products",
        "d",
        &json!({"name": "Lamp", "price": 10, "stock": 1}),
    )
    .await;
    let deleted = app
        .client
        .delete(app.url("/v1/products/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get("/v1/products/1").await.status(), 404);
    let again = app
        .client
        .delete(app.url("/v1/products/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn validation_lists_every_bad_field() {
    let (app, _data) = spawn_app().await;
    let r = app
        .post(
            "/v1/products",
            "v",
            &json!({"name": "  ", "price": -1.234, "stock": -3}),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], PROBLEM);
    let p: Value = r.json().await.unwrap();
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "price", "stock"]);
    // Nothing was written, and the key was not spent: the fixed request succeeds.
    assert!(all_product_ids(&app, 50).await.is_empty());
    let fixed = app
        .post(
            "/v1/products",
            "v",
            &json!({"name": "Pen", "price": 1.25, "stock": 3}),
        )
        .await;
    assert_eq!(fixed.status(), 201);
}

#[tokio::test]
async fn what_the_framework_refuses_is_problem_json_too() {
    let (app, _data) = spawn_app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/products"))
            .header("idempotency-key", "f")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = send("{\"name\": ", "application/json").await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["content-type"], PROBLEM);

    let wrong_type = send("name=Laptop", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert_eq!(wrong_type.headers()["content-type"], PROBLEM);

    let wrong_shape = send(
        r#"{"name": "X", "price": "cheap", "stock": 1}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(wrong_shape.status(), 422);
    let p: Value = wrong_shape.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "price");

    let not_an_object = send("[null, null]", "application/json").await.unwrap();
    assert_eq!(not_an_object.status(), 422);

    let unknown_field = send(
        r#"{"name": "X", "price": 1, "stock": 1, "colour": "red"}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(unknown_field.status(), 422);

    let huge = app
        .client
        .post(app.url("/v1/products"))
        .header("idempotency-key", "big")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"name": "{}", "price": 1, "stock": 1}}"#,
            "x".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.headers()["content-type"], PROBLEM);

    let bad_query = app.get("/v1/products?limit=lots").await;
    assert_eq!(bad_query.status(), 400);
    assert_eq!(bad_query.headers()["content-type"], PROBLEM);
    let out_of_range = app.get("/v1/products?limit=201").await;
    assert_eq!(out_of_range.status(), 400);
    // Malformed, or well-formed but never issued by the server (any base-36 string used
    // to decode: `abc` and `2999` paged from ids 13,368 and 2,999).
    for cursor in ["not-a-cursor", "", "ABC", "abc", "2999", "1zzzzzzzzz"] {
        let bad_cursor = app.get(&format!("/v1/products?cursor={cursor}")).await;
        assert_eq!(bad_cursor.status(), 400, "{cursor:?}");
        assert_eq!(bad_cursor.headers()["content-type"], PROBLEM);
        let problem: Value = bad_cursor.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "cursor", "{problem}");
        let reviews = app
            .get(&format!("/v1/products/1/reviews?cursor={cursor}"))
            .await;
        assert_eq!(reviews.status(), 400, "reviews {cursor:?}");
    }
    let bad_path = app.get("/v1/products/abc").await;
    assert_eq!(bad_path.status(), 400);
    assert_eq!(bad_path.headers()["content-type"], PROBLEM);

    let unknown_route = app.get("/v2/products").await;
    assert_eq!(unknown_route.status(), 404);
    assert_eq!(unknown_route.headers()["content-type"], PROBLEM);
    let wrong_method = app
        .client
        .put(app.url("/v1/products/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["content-type"], PROBLEM);
    let allow = wrong_method.headers()["allow"].to_str().unwrap().to_owned();
    for method in ["GET", "PATCH", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
    assert!(
        all_product_ids(&app, 50).await.is_empty(),
        "no refused request wrote anything"
    );
}

#[tokio::test]
async fn paging_while_others_insert_visits_every_product_once() {
    let (app, _data) = spawn_app().await;
    for i in 0..40 {
        let r = app
            .post(
                "/v1/products",
                &format!("seed-{i}"),
                &json!({"name": format!("P{i}"), "price": 1, "stock": 1}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let before: HashSet<i64> = (1..=40).collect();

    let client = app.client.clone();
    let url = app.url("/v1/products");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0;
        while !writer_stop.is_cancelled() {
            let r = client
                .post(&url)
                .header("idempotency-key", format!("live-{n}"))
                .json(&json!({"name": format!("Live {n}"), "price": 2, "stock": 2}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            n += 1;
        }
        n
    });

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = "/v1/products?limit=7".to_owned();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get(&url).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|p| p["id"].as_i64().unwrap()));
        // Let the writer get some inserts in between pages.
        tokio::task::yield_now().await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        if seen.len() > 5_000 {
            break;
        }
    }
    stop.cancel();
    let inserted = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();

    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no product was returned twice");
    assert!(
        before.is_subset(&unique),
        "every pre-existing product was visited"
    );
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, seen, "pages come in id order");
    assert!(inserted > 0, "the writer really ran concurrently");
}

#[tokio::test]
async fn reviews_belong_to_existing_products() {
    let (app, _data) = spawn_app().await;
    let none = app
        .post(
            "/v1/products/5/reviews",
            "r0",
            &json!({"user_id": 1, "rating": 5}),
        )
        .await;
    assert_eq!(none.status(), 404);
    app.post(
        "/v1/products",
        "p",
        &json!({"name": "Laptop", "price": 999.99, "stock": 50}),
    )
    .await;
    let created = app
        .post(
            "/v1/products/1/reviews",
            "r1",
            &json!({"user_id": 1, "rating": 5, "comment": "Great"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let review: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(review["rating"], 5);
    assert_eq!(review["comment"], "Great");
    let bad = app
        .post(
            "/v1/products/1/reviews",
            "r2",
            &json!({"user_id": 0, "rating": 6}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let p: Value = bad.json().await.unwrap();
    assert_eq!(p["errors"].as_array().unwrap().len(), 2);
    let page: Value = app
        .get("/v1/products/1/reviews")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(app.get("/v1/products/9/reviews").await.status(), 404);
}
