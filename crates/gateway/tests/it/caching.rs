//! Reads an HTTP cache can keep: automatic persisted queries over GET, with
//! `Cache-Control` from the types involved and an `ETag` honoured by `If-None-Match`.

use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::System;

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
