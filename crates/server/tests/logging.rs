//! The log lines of a request through the real stack (`server::guard`), in a test binary
//! of its own: `tracing` caches per-callsite interest process-wide, so a scoped
//! subscriber must not race tests running without one.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use settings::ServiceName;

// The `it` binary's helpers; this binary uses only some of them.
#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

fn faces() -> Router {
    Router::new().route(
        "/echo",
        get(|| async {
            tracing::info!("inside the handler");
            tracing::info_span!("nested", depth = 2_u64).in_scope(|| {
                tracing::info_span!("deeper")
                    .in_scope(|| tracing::warn!(rows = 3_u64, "inside a nested span"));
            });
        }),
    )
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

// One thread: the server's tasks run where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn every_log_line_of_a_request_carries_its_correlation_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = telemetry::subscriber(true, "info", move || writer.clone()).unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = helpers::spawn(ServiceName::Catalog, faces()).await;
    let response = app
        .client
        .get(app.url("/echo"))
        .header("x-correlation-id", "log-me-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .expect("the handler's line was logged");
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["correlation_id"], "log-me-7", "{json}");
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["message"], "inside the handler");
    assert_eq!(json["target"], "logging");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/echo");
    assert_eq!(json["route"], "/echo");
    let trace_id = json["trace_id"].as_str().unwrap();
    assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    // The request span has no fields of its own: nothing is formatted for a request that
    // logs nothing.
    assert_eq!(json["span"], serde_json::json!({"name": "request"}));
    let timestamp = json["timestamp"].as_str().unwrap();
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == 27,
        "{timestamp}"
    );

    // A line two spans deeper still carries the request's identity, and its own fields
    // and its span's.
    let nested = text
        .lines()
        .find(|l| l.contains("inside a nested span"))
        .expect("the nested line was logged");
    let nested: serde_json::Value = serde_json::from_str(nested).unwrap();
    assert_eq!(nested["correlation_id"], "log-me-7", "{nested}");
    assert_eq!(nested["trace_id"], trace_id);
    assert_eq!(nested["level"], "WARN");
    assert_eq!(nested["rows"], 3);
    assert_eq!(nested["span"], serde_json::json!({"name": "deeper"}));
}
