//! The request context: who asked (correlation ID), where in the trace we are
//! (`traceparent`), and what was asked (`instance`). Available to any code running on
//! behalf of a request through [`current`], so that errors, logs and outbound calls can
//! carry it without threading it through every signature.

use std::fmt;
use std::future::Future;

use axum::extract::MatchedPath;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method};
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static CURRENT: RequestContext;
    /// The service a background task (a consumer, a relay) works for.
    static SERVICE: &'static str;
}

/// Runs `fut` as work of `service`: a message it consumes is traced as that service's.
pub fn serving<F: Future>(service: &'static str, fut: F) -> TaskLocalFuture<&'static str, F> {
    SERVICE.scope(service, fut)
}

/// The service this task works for, inside [`serving`].
pub fn current_service() -> Option<&'static str> {
    SERVICE.try_with(|s| *s).ok()
}

/// The context of the request being served.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: CorrelationId,
    pub trace: TraceParent,
    /// The request's path and query as the server received them: a clone shares the
    /// request's bytes instead of copying the path for every request.
    target: PathAndQuery,
    /// For log lines: what was asked, and which route (template) serves it.
    method: Method,
    route: Option<MatchedPath>,
    /// Whose request this is (an API key's id, `anonymous`, or the service a message
    /// came from), as the edge established it: the scope of idempotency keys, and what
    /// a call to another service says it acts for.
    client: Option<std::sync::Arc<str>>,
    /// The service doing the work (what its spans are exported as).
    service: Option<&'static str>,
}

impl RequestContext {
    pub fn new(
        correlation_id: CorrelationId,
        trace: TraceParent,
        method: &Method,
        uri: &Uri,
    ) -> Self {
        Self {
            correlation_id,
            trace,
            target: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            method: method.clone(),
            route: None,
            client: None,
            service: current_service(),
        }
    }

    /// The context of one message a consumer handles, rebuilt from its envelope: the
    /// producer's correlation ID (a fresh one if it sent none or a malformed one) and a
    /// span of this hop in the producer's trace, so nothing downstream of a message starts
    /// a new chain. Its log lines read `MESSAGE /<channel>/<type>`.
    pub fn for_message(
        correlation_id: Option<&str>,
        traceparent: Option<&str>,
        channel: &str,
        kind: &str,
    ) -> Self {
        let correlation_id = correlation_id
            .and_then(CorrelationId::parse)
            .unwrap_or_else(CorrelationId::generate);
        let trace = traceparent
            .and_then(TraceParent::parse)
            .map_or_else(TraceParent::new_root, |parent| parent.child());
        let uri = format!("/{channel}/{kind}")
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let method = Method::from_bytes(b"MESSAGE").unwrap_or(Method::POST);
        Self::new(correlation_id, trace, &method, &uri)
    }

    /// Work of `service`.
    pub fn with_service(mut self, service: &'static str) -> Self {
        self.service = Some(service);
        self
    }

    pub fn service(&self) -> Option<&'static str> {
        self.service
    }

    /// The same work one span further down its trace: what an outbound call or a
    /// published message runs under, so the callee's span is the call's child.
    pub fn child(&self) -> Self {
        let mut child = self.clone();
        child.trace = self.trace.child();
        child
    }

    /// The route template that matched (`/v1/products/{id}`), when the router found one.
    pub fn with_route(mut self, route: Option<MatchedPath>) -> Self {
        self.route = route;
        self
    }

    /// Acting for `client` (see [`RequestContext::client`]).
    pub fn with_client(mut self, client: std::sync::Arc<str>) -> Self {
        self.client = Some(client);
        self
    }

    /// The client this request acts for, once the edge or a service's token check has
    /// said; `None` before (and for work no client asked for).
    pub fn client(&self) -> Option<&std::sync::Arc<str>> {
        self.client.as_ref()
    }

    /// The request path: the `instance` of any problem this request ends in.
    pub fn instance(&self) -> &str {
        self.target.path()
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn route(&self) -> Option<&str> {
        self.route.as_ref().map(MatchedPath::as_str)
    }
}

/// The context of the request this task serves, if it serves one.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `f` of the context of the request this task serves, without cloning it; `None` outside
/// a request. What a log line reads its correlation ID, trace ID, method and route from.
pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Runs `f` synchronously with `ctx` as the current request context (for work done
/// outside the request's future that should still log as part of the request).
pub fn sync_scope<R>(ctx: RequestContext, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx, f)
}

/// The headers that carry this request's context on an outbound call: the same
/// correlation ID, and a `traceparent` naming this hop's span as the callee's parent.
/// Empty outside a request.
pub fn outbound_headers() -> Vec<(&'static str, String)> {
    match current() {
        Some(ctx) => vec![
            (crate::CORRELATION_HEADER, ctx.correlation_id.to_string()),
            (crate::TRACEPARENT_HEADER, ctx.trace.to_string()),
        ],
        None => Vec::new(),
    }
}

/// Runs `fut` with `ctx` as the current request context.
///
/// A plain function returning tokio's future rather than an `async fn`: a request's
/// future is large, and each `async` wrapper would move (copy) it once more.
pub fn scope<F: Future>(ctx: RequestContext, fut: F) -> TaskLocalFuture<RequestContext, F> {
    CURRENT.scope(ctx, fut)
}

/// An ID that follows one piece of work across every hop and every log line.
///
/// Accepted from a client when it is 1–128 characters of `[A-Za-z0-9._:-]`; anything
/// else is replaced by a fresh UUIDv7 rather than logged or echoed.
///
/// Kept as the header value it arrives in or leaves in: an inbound ID is shared with the
/// request rather than copied, and a new one is written once and moved into the response.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Option<Self> {
        Self::valid(raw.as_bytes())
            .then(|| HeaderValue::from_str(raw).ok().map(Self))
            .flatten()
    }

    /// [`parse`](Self::parse) for an inbound header value, shared instead of copied.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        Self::valid(value.as_bytes()).then(|| Self(value.clone()))
    }

    fn valid(raw: &[u8]) -> bool {
        !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    }

    /// A fresh UUIDv7: time-ordered, so IDs sort roughly by when requests arrived.
    pub fn generate() -> Self {
        // Without uuid's shared counter context (`now_v7` locks one to keep IDs from the
        // same millisecond in order, which a correlation ID does not need: its 74 random
        // bits keep it unique), and written straight into its text form rather than
        // through `Display`. Both ran on every request without an inbound ID.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let timestamp = uuid::Timestamp::from_unix(
            uuid::NoContext,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
        );
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v7(timestamp)
            .hyphenated()
            .encode_lower(&mut text);
        // Hex digits and dashes: always a valid header value.
        Self(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown")))
    }

    pub fn as_str(&self) -> &str {
        // Validated or generated from `[A-Za-z0-9._:-]`: always visible ASCII.
        self.0.to_str().unwrap_or_default()
    }

    /// The ID as a response header value, without a copy.
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A W3C Trace Context `traceparent` (version 00): trace ID, this hop's span ID, flags —
/// and, known only here (never sent), the span this one is a child of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
    /// The parent span's ID; 0 for a trace's root or a parsed (remote) value.
    pub parent_span_id: u64,
}

impl TraceParent {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: 0x01,
            parent_span_id: 0,
        }
    }

    /// This hop's span inside the caller's trace.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: nonzero_u64(),
            flags: self.flags,
            parent_span_id: self.span_id,
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero IDs and version `ff` are invalid.
    /// Future versions are read by their first four fields, as the spec asks.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let mut parts = raw.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let lower_hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" || !lower_hex(trace, 32) {
            return None;
        }
        if !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        if version == "00" && rest.is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
            parent_span_id: 0,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` header value, written straight into its bytes: this runs for
    /// every request, and `format!`'s machinery cost more than the rest of the header.
    pub fn header_value(&self) -> http::HeaderValue {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut buf[3..35], self.trace_id);
        write_hex(&mut buf[36..52], u128::from(self.span_id));
        write_hex(&mut buf[53..55], u128::from(self.flags));
        // Only hex digits and dashes: always a valid header value.
        http::HeaderValue::from_bytes(&buf).unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }
}

/// Writes the low `out.len() * 4` bits of `value` as lowercase hex into `out`.
pub(crate) fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_validated() {
        assert!(CorrelationId::parse("01HXYZ-abc_1.2:3").is_some());
        assert!(CorrelationId::parse("").is_none());
        assert!(CorrelationId::parse("has space").is_none());
        assert!(CorrelationId::parse("new\nline").is_none());
        assert!(CorrelationId::parse(&"a".repeat(129)).is_none());
        assert!(CorrelationId::parse(&"a".repeat(128)).is_some());
        let generated = CorrelationId::generate();
        assert!(CorrelationId::parse(generated.as_str()).is_some());
        let uuid = uuid::Uuid::parse_str(generated.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_ne!(CorrelationId::generate(), generated);
    }

    #[test]
    fn traceparent_round_trips_and_rejects_invalid() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(raw).unwrap();
        assert_eq!(tp.to_string(), raw);
        assert_eq!(tp.header_value().to_str().unwrap(), raw);
        let small = TraceParent {
            trace_id: 1,
            span_id: 2,
            flags: 0,
            parent_span_id: 0,
        };
        assert_eq!(small.header_value().to_str().unwrap(), small.to_string());
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
        assert_eq!(child.parent_span_id, tp.span_id, "a child knows its parent");
        assert_eq!(tp.parent_span_id, 0, "a parsed value's parent is not known");

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        // A future version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }
}
