//! Correlation: the context every request runs in. The server's stack calls the pieces
//! ([`context_of`], [`request_span`], [`Stamp`]) from its one hand-written layer;
//! [`correlate`] is the same thing as an axum middleware for routers that want only this.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use tracing::Instrument;

use crate::context::{self, CorrelationId, RequestContext, TraceParent};

pub const CORRELATION_HEADER: &str = "x-correlation-id";
pub const TRACEPARENT_HEADER: &str = "traceparent";
// As `HeaderName`s: looked up and inserted without parsing the name on every request.
pub const CORRELATION: HeaderName = HeaderName::from_static(CORRELATION_HEADER);
pub const TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT_HEADER);

/// The context of an inbound request: a valid inbound `X-Correlation-ID` (or a new one),
/// this hop's span in the caller's W3C trace (or a new trace), and the path as the
/// `instance` of any problem the request ends in.
pub fn context_of(headers: &HeaderMap, uri: &Uri) -> RequestContext {
    context_from(headers.get(&CORRELATION), headers.get(&TRACEPARENT), uri)
}

/// [`context_of`] from the two header values, for a caller that has already found them
/// (the server's stack reads all the headers it needs in one pass).
pub fn context_from(
    correlation_id: Option<&HeaderValue>,
    traceparent: Option<&HeaderValue>,
    uri: &Uri,
) -> RequestContext {
    let correlation_id = correlation_id
        .and_then(CorrelationId::from_header)
        .unwrap_or_else(CorrelationId::generate);
    let trace = traceparent
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|parent| parent.child())
        .unwrap_or_else(TraceParent::new_root);
    RequestContext::new(correlation_id, trace, uri)
}

/// The span a request's log lines are recorded in, carrying its correlation and trace IDs.
/// Free when `info` is filtered out.
pub fn request_span(ctx: &RequestContext, method: &Method) -> tracing::Span {
    // Fields that are strings already are recorded as strings: as `%value` they went
    // through the formatting machinery (`Display` inside `Debug`), a visible share of the
    // span's cost at `info`. The trace ID is written only if the span is on.
    tracing::info_span!(
        "request",
        correlation_id = ctx.correlation_id.as_str(),
        trace_id = %TraceIdHex(ctx.trace.trace_id),
        method = method.as_str(),
        path = ctx.instance(),
    )
}

/// A trace ID written as 32 hex digits straight into the log line (no `String` first,
/// and not through `{:032x}`, whose padded hex was a visible share of the span's cost).
struct TraceIdHex(u128);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 32];
        crate::context::write_hex(&mut buf, self.0);
        f.write_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// The response headers that return a request's correlation ID and this hop's
/// `traceparent` to the caller. Made from the context before the request runs
/// ([`Stamp::of`]), or from the context itself once the request is done with it
/// ([`Stamp::from_context`]).
#[derive(Debug, Clone)]
pub struct Stamp {
    correlation_id: HeaderValue,
    traceparent: HeaderValue,
}

impl Stamp {
    pub fn of(ctx: &RequestContext) -> Self {
        Self::from_context(ctx.clone())
    }

    /// [`Stamp::of`] for a request that is done with its context: the correlation ID
    /// moves into the response instead of being copied.
    pub fn from_context(ctx: RequestContext) -> Self {
        let mut correlation_id = ctx.correlation_id.into_header_value();
        let mut traceparent = ctx.trace.header_value();
        // Not secrets, but unique to each response: marked so that HTTP/2's HPACK sends
        // them as literals instead of adding each to the connection's header table, where
        // they would only push out entries that do repeat (content-type, grpc-status).
        correlation_id.set_sensitive(true);
        traceparent.set_sensitive(true);
        Stamp {
            correlation_id,
            traceparent,
        }
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(CORRELATION, self.correlation_id);
        headers.insert(TRACEPARENT, self.traceparent);
    }
}

/// Runs the request inside its context ([`context_of`]) and span, and stamps the response
/// ([`Stamp`]).
pub async fn correlate(req: Request, next: Next) -> Response {
    let ctx = context_of(req.headers(), req.uri());
    let span = request_span(&ctx, req.method());
    let started = std::time::Instant::now();
    let stamp = Stamp::of(&ctx);
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
    stamp.apply(response.headers_mut());
    response
}
