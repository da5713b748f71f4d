//! `IdempotentJson`: the key is checked before the body, the body's problems are the
//! shared extractor's, and the fingerprint covers what the client sent.

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Method, Request, StatusCode, header};
use idempotency::{ClientScope, Fingerprint, IdempotentJson};
use problem::{Kind, ProblemBody};
use tower::ServiceExt;

use crate::helpers::read;

#[derive(serde::Deserialize)]
struct Thing {
    name: String,
}

/// Echoes what the extractor found.
async fn echo(req: IdempotentJson<Thing>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "key": req.key.as_str(),
        "scope": req.scope,
        "fingerprint": req.fingerprint.as_str(),
        "name": req.body.name,
    }))
}

fn app() -> Router {
    Router::new().route("/things", post(echo))
}

fn request(key: Option<&str>, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post("/things?dry_run=true");
    if let Some(key) = key {
        builder = builder.header("Idempotency-Key", key);
    }
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

async fn problem_of(app: Router, req: Request<Body>) -> (StatusCode, ProblemBody) {
    let (status, _, body) = read(app.oneshot(req).await.unwrap()).await;
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_missing_key_is_a_400_naming_the_header_before_the_body_is_read() {
    // Wrong content type too: the key is checked first.
    let (status, problem) = problem_of(app(), request(None, Some("text/plain"), "x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem.type_uri, Kind::InvalidRequest.type_uri());
    assert_eq!(problem.errors.len(), 1);
    assert_eq!(problem.errors[0].field, "Idempotency-Key");
    assert!(problem.errors[0].reason.contains("required"));
}

#[tokio::test]
async fn a_malformed_or_repeated_key_is_a_400() {
    let json = Some("application/json");
    let (status, problem) = problem_of(app(), request(Some("has space"), json, "{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem.errors[0].field, "Idempotency-Key");

    let mut twice = request(Some("a"), json, r#"{"name":"x"}"#);
    twice
        .headers_mut()
        .append("idempotency-key", "b".parse().unwrap());
    let (status, problem) = problem_of(app(), twice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem.errors[0].reason.contains("once"));
}

#[tokio::test]
async fn body_problems_come_from_the_shared_extractor() {
    let (status, _) = problem_of(app(), request(Some("k"), None, "{}")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let json = Some("application/json");
    let (status, _) = problem_of(app(), request(Some("k"), json, "{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, problem) = problem_of(app(), request(Some("k"), json, "{}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem.type_uri, Kind::ValidationFailed.type_uri());
}

#[tokio::test]
async fn the_extractor_yields_key_scope_and_fingerprint() {
    let body = r#"{"name":"lamp"}"#;
    let json = Some("application/json");
    let (status, _, echoed) = read(
        app()
            .oneshot(request(Some("\"k-1\""), json, body))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let echoed: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
    assert_eq!(echoed["key"], "k-1");
    assert_eq!(echoed["scope"], "anonymous");
    assert_eq!(echoed["name"], "lamp");
    let expected = Fingerprint::of(&Method::POST, "/things?dry_run=true", body.as_bytes());
    assert_eq!(echoed["fingerprint"], expected.as_str());

    // With a client scope, and mounted under a prefix: the fingerprint covers the full
    // path the client sent.
    let mut req = request(Some("k-1"), json, body);
    *req.uri_mut() = "/v1/things?dry_run=true".parse().unwrap();
    req.extensions_mut()
        .insert(ClientScope("api-key-42".to_owned()));
    let nested = Router::new().nest("/v1", app());
    let (_, _, echoed) = read(nested.oneshot(req).await.unwrap()).await;
    let echoed: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
    assert_eq!(echoed["scope"], "api-key-42");
    let expected = Fingerprint::of(&Method::POST, "/v1/things?dry_run=true", body.as_bytes());
    assert_eq!(echoed["fingerprint"], expected.as_str());
}
