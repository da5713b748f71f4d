//! The correlation middleware, driven through a router with `oneshot`.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::middleware::from_fn;
use axum::routing::get;
use http::Request;
use telemetry::{CorrelationId, TraceParent, context};
use tower::ServiceExt;

fn app() -> Router {
    Router::new()
        .route(
            "/echo",
            get(|| async {
                tracing::info!("inside the handler");
                context::current()
                    .map(|c| c.correlation_id.to_string())
                    .unwrap_or_default()
            }),
        )
        .layer(from_fn(telemetry::correlate))
}

async fn call(req: Request<Body>) -> (http::HeaderMap, String) {
    let response = app().oneshot(req).await.unwrap();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_valid_inbound_id_is_kept_and_returned() {
    let req = Request::get("/echo")
        .header("x-correlation-id", "order-42.retry:1")
        .body(Body::empty())
        .unwrap();
    let (headers, seen_by_handler) = call(req).await;
    assert_eq!(headers["x-correlation-id"], "order-42.retry:1");
    assert_eq!(seen_by_handler, "order-42.retry:1");
}

#[tokio::test]
async fn a_missing_or_invalid_id_is_replaced_by_a_fresh_one() {
    for inbound in [None, Some("has spaces"), Some("")] {
        let mut req = Request::get("/echo");
        if let Some(v) = inbound {
            req = req.header("x-correlation-id", v);
        }
        let (headers, seen) = call(req.body(Body::empty()).unwrap()).await;
        let returned = headers["x-correlation-id"].to_str().unwrap();
        assert!(CorrelationId::parse(returned).is_some());
        assert_ne!(Some(returned), inbound);
        assert_eq!(seen, returned);
    }
}

#[tokio::test]
async fn the_callers_trace_is_continued_with_a_new_span() {
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get("/echo")
        .header("traceparent", parent)
        .body(Body::empty())
        .unwrap();
    let (headers, _) = call(req).await;
    let ours = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    let theirs = TraceParent::parse(parent).unwrap();
    assert_eq!(ours.trace_id, theirs.trace_id);
    assert_ne!(ours.span_id, theirs.span_id);

    let req = Request::get("/echo")
        .header("traceparent", "not-a-traceparent")
        .body(Body::empty())
        .unwrap();
    let (headers, _) = call(req).await;
    assert!(TraceParent::parse(headers["traceparent"].to_str().unwrap()).is_some());
}
