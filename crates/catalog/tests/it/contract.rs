//! The committed OpenAPI document is the contract: code and document may not drift.

use crate::helpers::spawn_app;

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/catalog.json")
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = serde_json::to_string_pretty(&catalog::rest::openapi()).unwrap() + "\n";
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        generated == committed,
        "openapi/catalog.json is out of date with the code. Regenerate it with \
         `cargo run -q -p brigade -- openapi --write` and review the diff."
    );
}

#[tokio::test]
async fn the_service_serves_its_document_and_docs_page() {
    let (app, _data) = spawn_app().await;
    let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        served,
        serde_json::to_value(catalog::rest::openapi()).unwrap()
    );
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    // The page's script is served by the binary itself, not a CDN.
    assert!(!html.contains("cdn"), "{html}");
    let script = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(script.status(), 200);
}
