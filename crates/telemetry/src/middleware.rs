//! Correlation: the context every request runs in. The server's stack
//! (`server::guard`) calls the pieces ([`context_from`], [`request_span`], [`Stamp`]) from
//! its one hand-written layer.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::context::{CorrelationId, RequestContext, TraceParent};

pub const CORRELATION_HEADER: &str = "x-correlation-id";
pub const TRACEPARENT_HEADER: &str = "traceparent";
// As `HeaderName`s: looked up and inserted without parsing the name on every request.
pub const CORRELATION: HeaderName = HeaderName::from_static(CORRELATION_HEADER);
pub const TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT_HEADER);

/// The context of an inbound request from its `X-Correlation-ID` and `traceparent` values:
/// a valid inbound correlation ID (or a new one), this hop's span in the caller's W3C
/// trace (or a new trace), and the path as the `instance` of any problem the request ends
/// in. The server's stack finds both values in its one pass over the headers.
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
/// `traceparent` to the caller, made from the request's context once the request is done
/// with it.
#[derive(Debug, Clone)]
pub struct Stamp {
    correlation_id: HeaderValue,
    traceparent: HeaderValue,
}

impl Stamp {
    /// The correlation ID moves into the response instead of being copied.
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
