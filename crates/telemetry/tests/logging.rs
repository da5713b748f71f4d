//! Log lines, in a test binary of their own: `tracing` caches per-callsite interest
//! process-wide, so a scoped subscriber must not race tests running without one. The
//! lines of a request, through the real stack, are in `server`'s `tests/logging.rs`.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

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
