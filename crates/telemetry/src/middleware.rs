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
pub fn context_of(headers: &HeaderMap, method: &Method, uri: &Uri) -> RequestContext {
    context_from(
        headers.get(&CORRELATION),
        headers.get(&TRACEPARENT),
        method,
        uri,
    )
}

/// [`context_of`] from the two header values, for a caller that has already found them
/// (the server's stack reads all the headers it needs in one pass).
pub fn context_from(
    correlation_id: Option<&HeaderValue>,
    traceparent: Option<&HeaderValue>,
    method: &Method,
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
    RequestContext::new(correlation_id, trace, method, uri)
}

/// The span a request's work is recorded in. It has no fields: a log line written on the
/// request's behalf reads the correlation ID, trace ID, method and route from the request's
/// [`context`] when, and only when, the line is written (`crate::json_lines`), so a
/// request that logs nothing formats nothing. Free when `info` is filtered out.
pub fn request_span() -> tracing::Span {
    tracing::info_span!("request")
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
    let ctx = context_of(req.headers(), req.method(), req.uri()).with_route(
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .cloned(),
    );
    let span = request_span();
    let started = std::time::Instant::now();
    let stamp = Stamp::of(&ctx);
    // The access log is debug: at info it would cost every request a formatted line.
    let access_log = tracing::enabled!(tracing::Level::DEBUG).then(|| ctx.clone());
    let mut response = context::scope(ctx, next.run(req))
        .instrument(span.clone())
        .await;
    if let Some(ctx) = access_log {
        context::sync_scope(ctx, || {
            span.in_scope(|| {
                tracing::debug!(
                    status = response.status().as_u16(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "request served"
                );
            })
        });
    }
    stamp.apply(response.headers_mut());
    response
}
