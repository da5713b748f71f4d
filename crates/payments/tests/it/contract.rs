//! The committed OpenAPI document is the code's.

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../openapi/payments-sandbox.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = serde_json::to_string_pretty(&payments::rest::openapi()).unwrap() + "\n";
    assert!(
        generated == committed,
        "openapi/payments-sandbox.json is out of date with the code. Regenerate it with \
         `cargo run -q -p brigade -- openapi --write` and review the diff."
    );
}
