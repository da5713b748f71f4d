//! The services behind the gateway take calls only with an identity token
//! (`server::identity`): a direct call without one, or with a forged or expired one, is a
//! 401 in the caller's protocol and reaches no handler; with one, the handler sees the
//! client it names. The gateway (the door) and health checks need none.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use server::identity::{ClientScope, HEADER, Signer};
use settings::ServiceName;

use crate::helpers::spawn;

fn faces(reached: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/v1/who",
        get(move |scope: Option<axum::Extension<ClientScope>>| {
            let reached = Arc::clone(&reached);
            async move {
                reached.fetch_add(1, Ordering::SeqCst);
                scope.map_or_else(|| "nobody".to_owned(), |s| s.0.0.clone())
            }
        }),
    )
}

#[tokio::test]
async fn a_service_refuses_calls_without_a_valid_token_and_names_the_client_of_one() {
    let reached = Arc::new(AtomicUsize::new(0));
    let app = spawn(ServiceName::Catalog, faces(Arc::clone(&reached))).await;
    let bare = reqwest::Client::new();

    // The test client carries a token for "test": the handler sees that client.
    let with = app.client.get(app.url("/v1/who")).send().await.unwrap();
    assert_eq!(with.status(), StatusCode::OK);
    assert_eq!(with.text().await.unwrap(), "test");
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    let other_key = Signer::new(b"not this system's key, 32 bytes!", Duration::from_secs(60));
    let expired = Signer::new(
        b"a test's own internal key, 32+ bytes",
        Duration::from_millis(1),
    );
    let expired_token = expired.token("test");
    tokio::time::sleep(Duration::from_millis(5)).await;
    for (what, token) in [
        ("none", None),
        ("another system's", Some(other_key.token("test"))),
        ("expired", Some(expired_token)),
        (
            "garbage",
            Some(http::HeaderValue::from_static("v1.9999999999999.test.AAAA")),
        ),
    ] {
        let mut request = bare.get(app.url("/v1/who"));
        if let Some(token) = token {
            request = request.header(HEADER, token);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Bearer realm=\"brigade\""
        );
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(
            body["type"], "https://brigade.dev/problems/unauthenticated",
            "{what}"
        );
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "no refused call reached the handler"
    );

    // gRPC callers hear UNAUTHENTICATED.
    let grpc = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let refused = grpc
        .post(app.url("/ecommerce.v1.ProductService/GetProduct"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["grpc-status"], "16");

    // Probes, metrics and docs need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let open = bare.get(app.url(path)).send().await.unwrap();
        assert_eq!(open.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_gateway_needs_no_token_and_no_service_does_when_told() {
    let reached = Arc::new(AtomicUsize::new(0));
    let gateway = spawn(ServiceName::Gateway, faces(Arc::clone(&reached))).await;
    let answer = reqwest::get(gateway.url("/v1/who")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "nobody");

    let open =
        crate::helpers::spawn_configured(ServiceName::Orders, faces(Arc::clone(&reached)), |s| {
            s.identity.require_internal_token = false
        })
        .await;
    let answer = reqwest::get(open.url("/v1/who")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "nobody");
    // A token that is sent is still checked, and names the client (idempotency keys stay
    // per API key behind the gateway).
    let named = open.client.get(open.url("/v1/who")).send().await.unwrap();
    assert_eq!(named.text().await.unwrap(), "test");
    let forged = reqwest::Client::new()
        .get(open.url("/v1/who"))
        .header(HEADER, "v1.9999999999999.someone.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}
