//! Development and production: introspection and GraphiQL (served from the binary) on in
//! development, off in production, and each settable on its own.

use serde_json::Value;

use crate::helpers::System;

async fn get(system: &System, path: &str) -> reqwest::Response {
    system
        .gateway
        .client
        .get(system.gateway.url(path))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_serves_graphiql_and_introspection_from_the_binary() {
    let system = System::start(2, 0).await;
    let page = get(&system, "/graphiql").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/graphiql/graphiql.min.js"), "{html}");
    assert!(!html.contains("https://"), "no CDN: {html}");
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
    ] {
        let response = get(&system, &format!("/graphiql/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(response.headers()["content-encoding"], "gzip", "{asset}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{asset} is gzip");
    }
    assert_eq!(get(&system, "/graphiql/secrets.txt").await.status(), 404);
    let schema = system.graphql("{ __schema { queryType { name } } }").await;
    assert_eq!(schema["data"]["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_serves_neither_graphiql_nor_introspection() {
    let system = System::start_with(2, 0, |s| s.profile = settings::Profile::Production).await;
    assert_eq!(get(&system, "/graphiql").await.status(), 404);
    assert_eq!(
        get(&system, "/graphiql/graphiql.min.js").await.status(),
        404
    );
    // The introspection fields answer nothing (async-graphql resolves them to null).
    let schema = system
        .graphql(r#"{ __schema { queryType { name } } __type(name: "Product") { name } }"#)
        .await;
    assert_eq!(schema["data"]["__schema"], Value::Null, "{schema:#}");
    assert_eq!(schema["data"]["__type"], Value::Null, "{schema:#}");
    // The schema itself still answers.
    let product = system.graphql(r#"{ product(id: "1") { name } }"#).await;
    assert_eq!(product["data"]["product"]["name"], "Laptop");
}
