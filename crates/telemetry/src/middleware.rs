//! The correlation middleware: the outermost layer of every service.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

use crate::context::{self, CorrelationId, RequestContext, TraceParent};

pub const CORRELATION_HEADER: &str = "x-correlation-id";
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Accepts a valid inbound `X-Correlation-ID` (or makes one), joins the caller's W3C
/// trace (or starts one), runs the request inside a span carrying both, so every log line
/// of the request has them, and returns both on the response.
pub async fn correlate(mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let correlation_id = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(CorrelationId::parse)
        .unwrap_or_else(CorrelationId::generate);
    let trace = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|parent| parent.child())
        .unwrap_or_else(TraceParent::new_root);
    let ctx = RequestContext {
        correlation_id: correlation_id.clone(),
        trace,
        instance: req.uri().path().to_owned(),
    };
    req.extensions_mut().insert(ctx.clone());

    let span = tracing::info_span!(
        "request",
        correlation_id = %correlation_id,
        trace_id = %trace.trace_id_hex(),
        method = %req.method(),
        path = %ctx.instance,
    );
    let started = std::time::Instant::now();
    let mut response = context::scope(ctx, next.run(req))
        .instrument(span.clone())
        .await;
    // The access log is debug: at info it would cost every request a formatted line.
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "request served"
        );
    });

    let headers = response.headers_mut();
    // Both values were validated or generated from a safe alphabet above.
    if let Ok(value) = HeaderValue::from_str(correlation_id.as_str()) {
        headers.insert(CORRELATION_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        headers.insert(TRACEPARENT_HEADER, value);
    }
    response
}
