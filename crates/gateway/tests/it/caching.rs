//! Reads an HTTP cache can keep: automatic persisted queries over GET, with
//! `Cache-Control` from the types involved and an `ETag` honoured by `If-None-Match`; and
//! the answers the gateway itself keeps for a client's repeated query.

use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{System, bearer, calls, make_key};

fn hash(query: &str) -> String {
    sha2::Sha256::digest(query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn extensions(query: &str) -> String {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash(query)}}).to_string()
}

/// `GET /graphql` with these query parameters: status, headers, body.
async fn get(
    system: &System,
    params: &[(&str, &str)],
    if_none_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = reqwest::Url::parse_with_params(&system.gateway.url("/graphql"), params).unwrap();
    let mut request = system.gateway.client.get(url);
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body = response.bytes().await.unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_query_is_read_over_get_with_cache_headers_and_etags() {
    let system = System::start(2, 0).await;
    let query = r#"{ product(id: "1") { name price } }"#;
    let ext = extensions(query);

    // The hash alone, before the query was ever sent: the client is told to send it.
    let (status, _, body) = get(&system, &[("extensions", &ext)], None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{body:#}"
    );

    // Sent once with its hash (POST), then asked for by the hash alone.
    let (status, first) = system
        .post_graphql(
            &json!({"query": query, "extensions": serde_json::from_str::<Value>(&ext).unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{first:#}");
    assert_eq!(first["data"]["product"]["name"], "Laptop");
    let (status, headers, body) = get(&system, &[("extensions", &ext)], None).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["data"], first["data"]);
    assert_eq!(headers["cache-control"], "max-age=5");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\"") && etag.len() == 36, "{etag}");

    // The same read again with its ETag: 304, no body; the tag compares weakly.
    let (status, headers, body) = get(&system, &[("extensions", &ext)], Some(&etag)).await;
    assert_eq!(status, 304);
    assert_eq!(body, Value::Null);
    assert_eq!(headers["etag"].to_str().unwrap(), etag);
    let strong = etag.trim_start_matches("W/");
    let (status, _, _) = get(&system, &[("extensions", &ext)], Some(strong)).await;
    assert_eq!(status, 304);
    let (status, _, _) = get(&system, &[("extensions", &ext)], Some("W/\"other\"")).await;
    assert_eq!(status, 200);

    // A user's email is private: a shared cache must not keep it.
    let (_, headers, body) = get(
        &system,
        &[("query", r#"{ user(id: "1") { name email } }"#)],
        None,
    )
    .await;
    assert_eq!(body["data"]["user"]["name"], "Jane Doe", "{body:#}");
    assert_eq!(headers["cache-control"], "max-age=5, private");

    // GET only reads: a mutation is refused, and nothing is created.
    let (status, headers, body) = get(
        &system,
        &[(
            "query",
            r#"mutation { createProduct(name: "Sneaky", price: 1.0, stock: 1) { id } }"#,
        )],
        None,
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(body["errors"][0]["extensions"]["status"], 405, "{body:#}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["allow"], "GET, POST");
    let page = system.graphql("{ products(limit: 10) { name } }").await;
    assert!(
        !page["data"]["products"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Sneaky"),
        "{page:#}"
    );
}

/// The gateway's own answers: a client's repeated query is answered without a backend
/// call, with the same data and charged to its bucket as running it was; a write through
/// the gateway (a mutation, a REST write) forgets every kept answer, so the next read
/// sees it; and another client never gets what one client's key was allowed to see. A
/// current-thread runtime: the test's own recorder sees only its own calls.
#[tokio::test]
async fn a_repeated_query_is_answered_from_the_gateway_until_a_write_and_only_for_its_client() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    // A bucket refilled slowly, so what each answer is charged shows in it.
    let system = System::start_with(4, 8, |s| s.gateway.graphql.restore_rate = 1).await;
    let query = "{ products(limit: 10) { name reviews { rating user { name } } } }";
    let first = system.graphql(query).await;
    let backend = |rendered: &str| calls(rendered, "catalog") + calls(rendered, "accounts");

    let before = metrics.render();
    let response = system
        .gateway
        .client
        .post(system.gateway.url("/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "max-age=5, private");
    let second: Value = response.json().await.unwrap();
    assert_eq!(backend(&metrics.render()) - backend(&before), 0.0);
    assert!(second.get("errors").is_none(), "{second:#}");
    assert_eq!(second["data"], first["data"]);
    let (was, now) = (&first["extensions"]["cost"], &second["extensions"]["cost"]);
    assert_eq!(now["requestedQueryCost"], was["requestedQueryCost"]);
    assert_eq!(now["actualQueryCost"], was["actualQueryCost"]);
    let actual = was["actualQueryCost"].as_f64().unwrap();
    let available = |cost: &Value| {
        cost["throttleStatus"]["currentlyAvailable"]
            .as_f64()
            .unwrap()
    };
    assert!(actual > 1.0, "{was:#}");
    assert!(
        available(now) <= available(was) - actual + 1.0,
        "charged again: {was:#} then {now:#}"
    );

    // A mutation through the gateway: the next read runs, and sees it.
    let made = system
        .graphql(r#"mutation { createProduct(name: "Kept-1", price: 2.0, stock: 1, idempotencyKey: "kept-1") { id } }"#)
        .await;
    assert!(made.get("errors").is_none(), "{made:#}");
    let before = metrics.render();
    let page = system.graphql("{ products(limit: 10) { name } }").await;
    assert!(backend(&metrics.render()) > backend(&before));
    let names = |page: &Value| -> Vec<String> {
        page["data"]["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(names(&page).contains(&"Kept-1".to_owned()), "{page:#}");

    // Kept again, then a REST write through the gateway: forgotten as well.
    let kept = system.graphql("{ products(limit: 10) { name } }").await;
    assert_eq!(kept["data"], page["data"]);
    let created = system
        .gateway
        .client
        .post(system.gateway.url("/v1/products"))
        .header("idempotency-key", "kept-2")
        .json(&json!({"name": "Kept-2", "price": 3.0, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let page = system.graphql("{ products(limit: 10) { name } }").await;
    assert!(names(&page).contains(&"Kept-2".to_owned()), "{page:#}");

    // Only for its client: the full key's answer holds an email; a key without
    // `accounts:read` asking the same gets the refusal it always gets, not that answer.
    let email = r#"{ user(id: "1") { name email } }"#;
    let full = system.graphql(email).await;
    assert!(full["data"]["user"]["email"].is_string(), "{full:#}");
    let narrow = make_key(&system.settings, "narrow", Some("catalog:write")).await;
    let narrow = bearer(&narrow);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let refused = loop {
        // (The gateway picks up a new key within its reload interval.)
        let (status, answer) = system
            .post_graphql_as(&narrow, &json!({ "query": email }))
            .await;
        if status != 401 {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not load the new key within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "PERMISSION_DENIED",
        "{refused:#}"
    );
    assert!(
        !refused
            .to_string()
            .contains(full["data"]["user"]["email"].as_str().unwrap())
    );
    // Nor does an anonymous client get the first key's kept page.
    let before = metrics.render();
    let (status, anonymous) = system
        .post_graphql_as(&system.anonymous(), &json!({ "query": query }))
        .await;
    assert_eq!(status, 200);
    assert!(
        backend(&metrics.render()) > backend(&before),
        "ran for its own client"
    );
    assert!(
        names(&anonymous).contains(&"Kept-2".to_owned()),
        "{anonymous:#}"
    );
}

/// A mutation sent as a persisted query (its hash alone, as Apollo Client's persisted
/// link does) is never answered from the kept answers: each one runs, and forgets what
/// was kept, so the next read sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_mutation_runs_every_time_and_forgets_what_was_kept() {
    let system = System::start(2, 0).await;
    let mutation =
        r#"mutation { createProduct(name: "Persisted", price: 1.0, stock: 1) { id name } }"#;
    let ext: Value = serde_json::from_str(&extensions(mutation)).unwrap();
    let page = "{ products(limit: 20) { name } }";
    let count = |page: &Value| {
        page["data"]["products"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "Persisted")
            .count()
    };
    let (status, first) = system
        .post_graphql(&json!({"query": mutation, "extensions": ext}))
        .await;
    assert_eq!(status, 200, "{first:#}");
    let mut ids = vec![first["data"]["createProduct"]["id"].clone()];
    for _ in 0..2 {
        // A page is kept, then the hash alone runs the mutation again.
        assert_eq!(count(&system.graphql(page).await), ids.len());
        let (status, again) = system.post_graphql(&json!({"extensions": ext})).await;
        assert_eq!(status, 200, "{again:#}");
        assert!(again.get("errors").is_none(), "{again:#}");
        ids.push(again["data"]["createProduct"]["id"].clone());
        assert_eq!(
            count(&system.graphql(page).await),
            ids.len(),
            "the kept page was forgotten"
        );
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "three products, none answered from memory: {ids:?}"
    );
}
