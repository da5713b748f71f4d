//! Correlation through the real stack (`server::guard`): the context every request runs
//! in, as a handler sees it and as the response returns it.

use axum::Router;
use axum::routing::get;
use settings::ServiceName;
use telemetry::{CorrelationId, TraceParent, context};

use crate::helpers::{TestApp, spawn};

fn faces() -> Router {
    Router::new().route(
        "/v1/echo",
        get(|| async {
            tracing::info!("inside the handler");
            context::current()
                .map(|c| c.correlation_id.to_string())
                .unwrap_or_default()
        }),
    )
}

async fn call(app: &TestApp, headers: &[(&str, &str)]) -> (reqwest::header::HeaderMap, String) {
    let mut request = app.client.get(app.url("/v1/echo"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let headers = response.headers().clone();
    (headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_valid_inbound_id_is_kept_and_returned() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    let (headers, seen_by_handler) = call(&app, &[("x-correlation-id", "order-42.retry:1")]).await;
    assert_eq!(headers["x-correlation-id"], "order-42.retry:1");
    assert_eq!(seen_by_handler, "order-42.retry:1");
}

#[tokio::test]
async fn a_missing_or_invalid_id_is_replaced_by_a_fresh_one() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    for inbound in [None, Some("has spaces"), Some("")] {
        let sent: Vec<(&str, &str)> = inbound
            .map(|v| ("x-correlation-id", v))
            .into_iter()
            .collect();
        let (headers, seen) = call(&app, &sent).await;
        let returned = headers["x-correlation-id"].to_str().unwrap();
        assert!(CorrelationId::parse(returned).is_some());
        assert_ne!(Some(returned), inbound);
        assert_eq!(seen, returned);
    }
}

#[tokio::test]
async fn the_callers_trace_is_continued_with_a_new_span() {
    let app = spawn(ServiceName::Catalog, faces()).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (headers, _) = call(&app, &[("traceparent", parent)]).await;
    let ours = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    let theirs = TraceParent::parse(parent).unwrap();
    assert_eq!(ours.trace_id, theirs.trace_id);
    assert_ne!(ours.span_id, theirs.span_id);

    let (headers, _) = call(&app, &[("traceparent", "not-a-traceparent")]).await;
    assert!(TraceParent::parse(headers["traceparent"].to_str().unwrap()).is_some());
}
