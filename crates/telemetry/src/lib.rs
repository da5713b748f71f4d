//! What every Brigade service reports about itself: a correlation ID and W3C trace
//! context on every request ([`context`], [`correlate`]), structured logs ([`init_logging`])
//! and Prometheus metrics per route and protocol ([`metrics`]).
#![forbid(unsafe_code)]

pub mod context;
pub mod deadline;
mod logging;
pub mod metrics;
mod middleware;
mod span_fields;

pub use context::{CorrelationId, RequestContext, TraceParent};
pub use logging::{LogFormat, LoggingError, init_logging, subscriber};
pub use middleware::{
    CORRELATION, CORRELATION_HEADER, Stamp, TRACEPARENT, TRACEPARENT_HEADER, context_from,
    context_of, correlate, request_span,
};

/// Response extension naming the error kind a response carries (set by the `problem`
/// crate's conversions, read by the metrics middleware to count errors by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKindLabel(pub &'static str);
