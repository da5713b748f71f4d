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
                tracing::info_span!("nested", depth = 2_u64).in_scope(|| {
                    tracing::info_span!("deeper")
                        .in_scope(|| tracing::warn!(rows = 3_u64, "inside a nested span"));
                });
            }),
        )
        .route_layer(from_fn(telemetry::correlate))
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

#[test]
fn a_line_outside_any_request_has_no_request_members() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = telemetry::subscriber(true, "info", move || writer.clone()).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(task = "relay", "on its own");
        tracing::debug!("filtered out");
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(json["message"], "on its own");
    assert_eq!(json["task"], "relay");
    for absent in ["correlation_id", "trace_id", "method", "span"] {
        assert!(json.get(absent).is_none(), "{absent} in {json}");
    }
}

#[test]
fn span_fields_of_every_kind_and_recorded_later_stay_valid_json() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = telemetry::subscriber(true, "info", move || writer.clone()).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            "work",
            label = "quote\" and \\ and\nnewline",
            count = 3_u64,
            delta = -2_i64,
            ok = true,
            ratio = 0.5_f64,
            debugged = ?vec![1, 2],
            later = tracing::field::Empty,
        );
        span.record("later", "filled in");
        span.in_scope(|| tracing::info!("inside"));
        tracing::info_span!("empty").in_scope(|| tracing::info!("inside empty"));
    });

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| -> serde_json::Value {
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle} in {text}"));
        serde_json::from_str(line).unwrap()
    };
    let json = line("\"inside\"");
    let span = &json["span"];
    assert_eq!(span["label"], "quote\" and \\ and\nnewline");
    assert_eq!(span["count"], 3);
    assert_eq!(span["delta"], -2);
    assert_eq!(span["ok"], true);
    assert_eq!(span["ratio"], 0.5);
    assert_eq!(span["debugged"], "[1, 2]");
    assert_eq!(span["later"], "filled in");
    assert_eq!(span["name"], "work");
    let empty = line("inside empty");
    assert_eq!(
        empty["span"],
        serde_json::json!({"name": "empty"}),
        "{empty}"
    );
}
