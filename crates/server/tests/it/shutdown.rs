use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use settings::ServiceName;
use tokio::sync::Notify;

use crate::helpers::{spawn, spawn_with_grace};

/// A route that signals when it has started and then waits to be released.
fn gated(started: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/v1/slow",
        get(move || {
            let started = started.clone();
            let release = release.clone();
            async move {
                started.notify_one();
                release.notified().await;
                "finished"
            }
        }),
    )
}

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = spawn(ServiceName::Orders, gated(started.clone(), release.clone())).await;

    let client = app.client.clone();
    let url = app.url("/v1/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    started.notified().await;

    app.stop.notify_one();
    // Once shutdown has begun, the listener closes: a fresh client cannot connect.
    let refused = async {
        loop {
            let fresh = reqwest::Client::new();
            if fresh.get(app.url("/healthz")).send().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("the listener closed after shutdown began");

    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(5), app.handle)
        .await
        .expect("server stopped after draining")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_request_that_never_ends_is_cut_off_after_the_grace_period() {
    let started = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let grace = Duration::from_millis(300);
    let app = spawn_with_grace(ServiceName::Billing, gated(started.clone(), never), grace).await;

    let client = app.client.clone();
    let url = app.url("/v1/slow");
    let _stuck = tokio::spawn(async move { client.get(url).send().await });
    started.notified().await;

    let begun = Instant::now();
    app.stop.notify_one();
    tokio::time::timeout(Duration::from_secs(10), app.handle)
        .await
        .expect("server stopped despite a stuck request")
        .unwrap()
        .unwrap();
    assert!(begun.elapsed() >= grace, "stopped before the grace period");
}

// A current-thread runtime (the default), with the test's own recorder: an exact count
// that no test running beside it can change.
#[tokio::test]
async fn a_saturated_service_sheds_load_at_once() {
    let recorder = telemetry::metrics::isolated_recorder();
    let series = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = crate::helpers::spawn_configured(
        ServiceName::Orders,
        gated(started.clone(), release.clone()),
        |s| s.max_in_flight = 1,
    )
    .await;
    let client = app.client.clone();
    let url = app.url("/v1/slow");
    let busy = tokio::spawn(async move { client.get(url).send().await });
    started.notified().await;

    let begun = Instant::now();
    let shed = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/problem+json");

    release.notify_one();
    assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
    // With the slot free again, requests are served.
    let ok = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let metrics = series.render();
    assert!(
        metrics.contains(r#"brigade_shed_total{service="orders"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_http_callers_deadline_cuts_the_handler_off() {
    let started = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let app = spawn(ServiceName::Billing, gated(started, never)).await;
    let begun = Instant::now();
    let response = app
        .client
        .get(app.url("/v1/slow"))
        .header("x-request-timeout-ms", "200")
        .send()
        .await
        .unwrap();
    let took = begun.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
