//! Traces: an OpenTelemetry span for every inbound request, outbound call, publish and
//! consume, exported over OTLP/gRPC when `[telemetry] otlp_endpoint` is set (off by
//! default: then [`enabled`] is false and nothing here runs).
//!
//! Brigade carries W3C trace context itself (`context::TraceParent`, in HTTP headers,
//! gRPC metadata and message envelopes), so every hop already knows its trace, its own
//! span and its parent's: a span here is the record of that, made when the work ends.
//! The OpenTelemetry SDK would mint span IDs of its own, so only the wire types come
//! from the official protos (`opentelemetry-proto`); the batching is ours.
//!
//! Never in a request's way: [`record`] is a `try_send` onto a bounded queue (a span that
//! does not fit is dropped and counted); one exporter task sends batches (up to 512
//! spans, or what a second gathered) with a timeout, and drops a batch the collector
//! does not take in time (counted): a slow or absent collector costs spans, never
//! latency.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use tokio::sync::mpsc;

use crate::context::RequestContext;

/// Spans waiting for the exporter; beyond this, new ones are dropped.
const QUEUE: usize = 8192;
const BATCH: usize = 512;
const GATHER: Duration = Duration::from_secs(1);

/// Counter: spans by `outcome` (`exported`, `dropped_full`: the queue was full,
/// `dropped_export`: the collector did not take them).
pub const SPANS_TOTAL: &str = "brigade_trace_spans_total";

/// What a span stands for (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An inbound request.
    Server,
    /// An outbound call.
    Client,
    /// A message written for a queue or stream.
    Producer,
    /// A message handled.
    Consumer,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: &'static str,
    pub name: String,
    pub kind: Kind,
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: the trace's root.
    pub parent_span_id: u64,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Set when the work failed on this side (a 5xx, a failed call or handler).
    pub error: Option<String>,
    pub attributes: Vec<(&'static str, String)>,
}

impl Span {
    /// A span of the work `ctx` stands for: its trace, its span and its parent, and its
    /// service (`unknown` when none was said), from `start` until now.
    pub fn of(ctx: &RequestContext, kind: Kind, name: String, start: SystemTime) -> Span {
        Span {
            service: ctx.service().unwrap_or("unknown"),
            name,
            kind,
            trace_id: ctx.trace.trace_id,
            span_id: ctx.trace.span_id,
            parent_span_id: ctx.trace.parent_span_id,
            start,
            end: SystemTime::now(),
            error: None,
            attributes: vec![("brigade.correlation_id", ctx.correlation_id.to_string())],
        }
    }
}

static SINK: OnceLock<mpsc::Sender<Span>> = OnceLock::new();

/// Whether spans are exported: call sites skip the work of making them otherwise.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Hands `span` to the exporter, or drops it (counted) when the queue is full.
pub fn record(span: Span) {
    if let Some(sink) = SINK.get()
        && sink.try_send(span).is_err()
    {
        metrics::counter!(SPANS_TOTAL, "outcome" => "dropped_full").increment(1);
    }
}

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("otlp_endpoint {0:?} is not a URL a gRPC client can reach: {1}")]
    Endpoint(String, String),
    #[error("spans are already exported from this process")]
    AlreadyStarted,
}

/// Starts exporting this process's spans to the OTLP/gRPC collector at `endpoint`
/// (`http://127.0.0.1:4317`), each batch given `timeout`. The collector is reached lazily:
/// one that is down at start, or goes away, only costs spans. Needs a Tokio runtime.
pub fn export_to(endpoint: &str, timeout: Duration) -> Result<(), ExportError> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| ExportError::Endpoint(endpoint.to_owned(), e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_lazy();
    let (tx, rx) = mpsc::channel(QUEUE);
    SINK.set(tx).map_err(|_| ExportError::AlreadyStarted)?;
    metrics::describe_counter!(
        SPANS_TOTAL,
        "Trace spans by outcome: exported, dropped_full (the queue was full), dropped_export (the collector did not take them)."
    );
    tokio::spawn(run(TraceServiceClient::new(channel), rx));
    Ok(())
}

async fn run(
    mut client: TraceServiceClient<tonic::transport::Channel>,
    mut spans: mpsc::Receiver<Span>,
) {
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + GATHER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match client.export(request(batch)).await {
            Ok(_) => metrics::counter!(SPANS_TOTAL, "outcome" => "exported").increment(n),
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "OTLP export failed; its spans are dropped");
                metrics::counter!(SPANS_TOTAL, "outcome" => "dropped_export").increment(n);
            }
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn text(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// The OTLP request for `batch`: one resource per service (`service.name`).
pub fn request(batch: Vec<Span>) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(
        &'static str,
        Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    )> = Vec::new();
    for s in batch {
        let kind = match s.kind {
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
            Kind::Producer => span::SpanKind::Producer,
            Kind::Consumer => span::SpanKind::Consumer,
        };
        let status = match s.error {
            Some(message) => Status {
                code: status::StatusCode::Error as i32,
                message,
            },
            None => Status::default(),
        };
        let otlp = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: s.trace_id.to_be_bytes().to_vec(),
            span_id: s.span_id.to_be_bytes().to_vec(),
            parent_span_id: if s.parent_span_id == 0 {
                Vec::new()
            } else {
                s.parent_span_id.to_be_bytes().to_vec()
            },
            name: s.name,
            kind: kind as i32,
            start_time_unix_nano: unix_nanos(s.start),
            end_time_unix_nano: unix_nanos(s.end),
            attributes: s.attributes.into_iter().map(|(k, v)| text(k, v)).collect(),
            status: Some(status),
            ..Default::default()
        };
        match by_service.iter_mut().find(|(name, _)| *name == s.service) {
            Some((_, spans)) => spans.push(otlp),
            None => by_service.push((s.service, vec![otlp])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", service.to_owned())],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "brigade".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn spans_become_one_resource_per_service_with_their_ids_in_bytes() {
        let now = SystemTime::now();
        let span = |service, span_id, parent| Span {
            service,
            name: "GET /v1/products/{id}".to_owned(),
            kind: Kind::Server,
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id,
            parent_span_id: parent,
            start: now - Duration::from_millis(3),
            end: now,
            error: None,
            attributes: vec![("http.route", "/v1/products/{id}".to_owned())],
        };
        let mut failed = span("catalog", 3, 2);
        failed.error = Some("unavailable".to_owned());
        let request = request(vec![span("gateway", 1, 0), span("gateway", 2, 1), failed]);
        assert_eq!(request.resource_spans.len(), 2);
        let gateway = &request.resource_spans[0];
        let name = &gateway.resource.as_ref().unwrap().attributes[0];
        assert_eq!(name.key, "service.name");
        let spans = &gateway.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0].trace_id,
            0x0af7651916cd43dd8448eb211c80319cu128.to_be_bytes()
        );
        assert!(spans[0].parent_span_id.is_empty(), "a root has no parent");
        assert_eq!(spans[1].parent_span_id, 1u64.to_be_bytes());
        assert_eq!(spans[1].kind, span::SpanKind::Server as i32);
        assert_eq!(
            spans[0].end_time_unix_nano - spans[0].start_time_unix_nano,
            3_000_000
        );
        let catalog = &request.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(
            catalog.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
    }

    #[test]
    fn without_export_nothing_is_recorded_or_queued() {
        // No exporter in this test binary: `record` is a no-op.
        assert!(!enabled());
        record(Span {
            service: "x",
            name: String::new(),
            kind: Kind::Client,
            trace_id: 1,
            span_id: 1,
            parent_span_id: 0,
            start: SystemTime::now(),
            end: SystemTime::now(),
            error: None,
            attributes: Vec::new(),
        });
        assert!(SINK.get().is_none());
    }
}
