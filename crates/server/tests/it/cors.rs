//! Every answer to a CORS request carries the CORS headers, including the ones the shared
//! stack makes itself (shedding, the deadline, a panic), which a browser would otherwise
//! hide from the page; origins are configured per service.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use settings::ServiceName;
use tokio::sync::Notify;

use crate::helpers::{TestApp, spawn_configured};

const ORIGIN: &str = "https://shop.example.com";

/// `/v1/hold` answers once `release` is notified; `/v1/boom` panics.
fn faces(release: Arc<Notify>) -> Router {
    Router::new()
        .route("/v1/hello", get(|| async { "hello" }))
        .route(
            "/v1/hold",
            get(move || {
                let release = release.clone();
                async move {
                    release.notified().await;
                    "released"
                }
            }),
        )
        .route(
            "/v1/boom",
            get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
}

async fn from_browser(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

fn allowed_origin(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_stack_s_own_answers_carry_cors_headers() {
    let release = Arc::new(Notify::new());
    let app = spawn_configured(ServiceName::Catalog, faces(release.clone()), |s| {
        s.max_in_flight = 1;
    })
    .await;

    // A panic's 500.
    let panicked = from_browser(&app, "/v1/boom", ORIGIN).await;
    assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(allowed_origin(&panicked), Some("*"));
    assert!(
        panicked.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-correlation-id")
    );

    // The deadline's answer.
    let late = app
        .client
        .get(app.url("/v1/hold"))
        .header("origin", ORIGIN)
        .header("x-request-timeout-ms", "50")
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(allowed_origin(&late), Some("*"));

    // Shedding's 503, while the one slot is held.
    let holder = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/v1/hold"));
        async move { client.get(url).send().await.unwrap().status() }
    });
    let shed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let r = from_browser(&app, "/v1/hello", ORIGIN).await;
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                return r;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("shed while the slot is held");
    assert_eq!(allowed_origin(&shed), Some("*"));
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    release.notify_one();
    assert_eq!(holder.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn origins_are_configured_per_service() {
    let release = Arc::new(Notify::new());
    // Only the shop's origin.
    let shop = spawn_configured(ServiceName::Catalog, faces(release.clone()), |s| {
        s.services.catalog.cors_origins = Some(vec![ORIGIN.to_owned()]);
    })
    .await;
    let allowed = from_browser(&shop, "/v1/hello", ORIGIN).await;
    assert_eq!(allowed_origin(&allowed), Some(ORIGIN));
    let panicked = from_browser(&shop, "/v1/boom", ORIGIN).await;
    assert_eq!(allowed_origin(&panicked), Some(ORIGIN));
    let other = from_browser(&shop, "/v1/hello", "https://evil.example").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(allowed_origin(&other), None);

    // Billing is internal: no CORS by default, and a preflight is not granted.
    let billing = spawn_configured(ServiceName::Billing, faces(release), |_| {}).await;
    let refused = from_browser(&billing, "/v1/hello", ORIGIN).await;
    assert_eq!(refused.status(), StatusCode::OK);
    assert_eq!(allowed_origin(&refused), None);
    let preflight = billing
        .client
        .request(reqwest::Method::OPTIONS, billing.url("/v1/hello"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed_origin(&preflight), None);
}

#[test]
fn settings_refuse_what_is_not_an_origin() {
    for (origins, ok) in [
        (vec!["*"], true),
        (
            vec!["https://shop.example.com", "http://localhost:3000"],
            true,
        ),
        (vec![], true),
        (vec!["*", "https://shop.example.com"], false),
        (vec!["shop.example.com"], false),
        (vec!["https://shop.example.com/"], false),
        (vec!["ftp://shop.example.com"], false),
    ] {
        let mut settings = settings::Settings::default();
        settings.services.gateway.cors_origins =
            Some(origins.iter().map(|o| (*o).to_owned()).collect());
        assert_eq!(settings.validate().is_ok(), ok, "{origins:?}");
    }
}

/// An OPTIONS without `Access-Control-Request-Method` is no preflight: it reaches the
/// route (here a 405) and carries the ordinary CORS headers, not a preflight's.
#[tokio::test]
async fn a_plain_options_request_is_no_preflight() {
    let app = spawn_configured(ServiceName::Catalog, faces(Arc::new(Notify::new())), |_| {}).await;
    let options = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/hello"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allowed_origin(&options), Some("*"));
    assert!(
        options
            .headers()
            .get("access-control-allow-methods")
            .is_none()
    );
    assert!(
        options.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-correlation-id")
    );
}
