//! What every Brigade service reports about itself: a correlation ID and W3C trace
//! context on every request ([`context`], [`context_from`]), structured logs ([`init_logging`])
//! and Prometheus metrics per route and protocol ([`metrics`]).
#![forbid(unsafe_code)]

pub mod context;
pub mod deadline;
pub mod exposition;
mod json_lines;
mod logging;
pub mod metrics;
mod middleware;
pub mod slo;
pub mod trace;

pub use context::{CorrelationId, RequestContext, TraceParent};
pub use logging::{LogFormat, LoggingError, init_logging, subscriber};
pub use middleware::{
    CORRELATION, CORRELATION_HEADER, Stamp, TRACEPARENT, TRACEPARENT_HEADER, context_from,
    request_span,
};

/// Response extension naming the error kind a response carries (set by the `problem`
/// crate's conversions, read by the metrics middleware to count errors by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKindLabel(pub &'static str);

/// The proleptic Gregorian date (year, month, day) of a count of days since 1970-01-01:
/// Howard Hinnant's `civil_from_days`. Log lines and the REST faces write timestamps with
/// it, without a calendar crate's formatting machinery on every line and every row.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
