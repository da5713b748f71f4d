//! Log lines, in a test binary of their own: `tracing` caches per-callsite interest
//! process-wide, so a scoped subscriber must not race tests running without one.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::middleware::from_fn;
use axum::routing::get;
use http::Request;
use tower::ServiceExt;

fn app() -> Router {
    Router::new()
        .route(
            "/echo",
            get(|| async {
                tracing::info!("inside the handler");
            }),
        )
        .layer(from_fn(telemetry::correlate))
}

/// A writer that keeps every line, for asserting on log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_log_line_of_a_request_carries_its_correlation_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = telemetry::subscriber(true, "info", move || writer.clone()).unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);

    let req = Request::get("/echo")
        .header("x-correlation-id", "log-me-7")
        .body(Body::empty())
        .unwrap();
    app().oneshot(req).await.unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .expect("the handler's line was logged");
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["span"]["correlation_id"], "log-me-7");
    assert_eq!(json["level"], "INFO");
    assert!(json["span"]["trace_id"].as_str().unwrap().len() == 32);
}
