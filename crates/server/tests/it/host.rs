use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use settings::ServiceName;

use crate::helpers::spawn;

fn faces() -> Router {
    Router::new()
        .route("/v1/hello", get(|| async { "hello" }))
        .route(
            "/v1/boom",
            get(|| async {
                if true {
                    panic!("secret internals: password=hunter2");
                }
                "unreachable"
            }),
        )
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["migrations"], "applied");
}

#[tokio::test]
async fn readiness_fails_as_a_problem_when_the_database_is_gone() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    app.db.close().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["type"], "https://brigade.dev/problems/unavailable");
    // Liveness is about the process, not its dependencies.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    let missing = app
        .client
        .get(app.url("/v1/nothing-here"))
        .header("x-correlation-id", "cid-404")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["type"], "https://brigade.dev/problems/not-found");
    assert_eq!(body["status"], 404);
    assert_eq!(body["instance"], "/v1/nothing-here");
    assert_eq!(body["correlation_id"], "cid-404");

    let wrong = app
        .client
        .delete(app.url("/v1/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "GET,HEAD");
    assert_eq!(wrong.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://brigade.dev/problems/method-not-allowed"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_that_leaks_nothing() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    let response = app.client.get(app.url("/v1/boom")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let cid = response.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("secret"),
        "{text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["type"], "https://brigade.dev/problems/internal");
    assert_eq!(body["correlation_id"], cid.as_str());
    // The service keeps serving.
    let ok = app.client.get(app.url("/v1/hello")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_and_errors_per_route_for_this_service_only() {
    // The recorder is process-wide and tests run in parallel: this test alone uses the
    // route `/v1/metered`, so its counts are its own.
    let metered = || Router::new().route("/v1/metered", get(|| async { "counted" }));
    let catalog = spawn(ServiceName::Catalog, metered()).await;
    let accounts = spawn(ServiceName::Accounts, metered()).await;
    for _ in 0..3 {
        catalog
            .client
            .get(catalog.url("/v1/metered"))
            .send()
            .await
            .unwrap();
    }
    catalog
        .client
        .delete(catalog.url("/v1/metered"))
        .send()
        .await
        .unwrap();
    accounts
        .client
        .get(accounts.url("/v1/metered"))
        .send()
        .await
        .unwrap();

    let text = catalog
        .client
        .get(catalog.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no series {needle} in:\n{text}"))
            .to_owned()
    };
    let hello = line(
        r#"brigade_requests_total{service="catalog",protocol="http",route="/v1/metered",method="GET",status="200"}"#,
    );
    assert!(hello.ends_with(" 3"), "{hello}");
    let errors = line(
        r#"brigade_errors_total{service="catalog",protocol="http",route="/v1/metered",kind="method-not-allowed"}"#,
    );
    assert!(errors.ends_with(" 1"), "{errors}");
    line(
        r#"brigade_request_duration_seconds_count{service="catalog",protocol="http",route="/v1/metered"}"#,
    );
    assert!(!text.contains(r#"service="accounts""#), "{text}");
}

#[tokio::test]
async fn browsers_on_any_origin_may_call_and_read_the_correlation_headers() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    // A preflight is answered before routing, for a method the route does not even have.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/hello"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key,x-correlation-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    // A browser's request (it carries an Origin) may read the correlation headers.
    let browser = app
        .client
        .get(app.url("/v1/hello"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), StatusCode::OK);
    assert_eq!(browser.headers()["access-control-allow-origin"], "*");
    let exposed = browser.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in ["x-correlation-id", "traceparent", "etag", "grpc-status"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // Any other request is no CORS request: no CORS headers, but `Vary: origin`, so a
    // shared cache never hands this answer to a browser.
    let plain = app.client.get(app.url("/v1/hello")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get("access-control-allow-origin").is_none());
    let vary = plain
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(vary.iter().any(|v| v.contains("origin")), "{vary:?}");
}
