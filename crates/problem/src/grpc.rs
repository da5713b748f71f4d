//! The one conversion to `tonic::Status`, with google.rpc rich details.

use std::collections::HashMap;

use tonic_types::{ErrorDetails, StatusExt};

use crate::{Problem, request_context};

/// `ErrorInfo.domain` for every Brigade error.
pub const ERROR_DOMAIN: &str = "brigade.dev";

/// The prefix of `ErrorInfo.metadata` keys that carry a problem's extension members
/// (`ext.available` = `12`, the value as JSON text), so the specifics a REST caller reads
/// from problem+json survive a gRPC hop ([`Problem::from_downstream`] puts them back).
pub const EXTENSION_PREFIX: &str = "ext.";

impl Problem {
    /// The gRPC status for this problem, in the context of one request: the code from the
    /// table, the public detail as message, `ErrorInfo` (reason = the kind's slug in
    /// upper snake case; metadata = problem `type` and correlation ID), `BadRequest` field
    /// violations for validation failures and `RetryInfo` when a delay is known.
    pub fn to_status(&self, correlation_id: &str) -> tonic::Status {
        let kind = self.kind;
        let message = self
            .public_detail()
            .map(|d| d.into_owned())
            .unwrap_or_else(|| kind.title().to_owned());

        let mut metadata = HashMap::new();
        metadata.insert("type".to_owned(), kind.type_uri());
        if !correlation_id.is_empty() {
            metadata.insert("correlation_id".to_owned(), correlation_id.to_owned());
        }
        for (name, value) in &self.more.extensions {
            metadata.insert(format!("{EXTENSION_PREFIX}{name}"), value.to_string());
        }
        let reason = kind.slug().replace('-', "_").to_uppercase();
        let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
        if !self.more.errors.is_empty() {
            details.set_bad_request(
                self.more
                    .errors
                    .iter()
                    .map(|e| tonic_types::FieldViolation::new(&e.field, &e.reason))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(after) = self.more.retry_after {
            details.set_retry_info(Some(after));
        }

        let mut status = tonic::Status::with_error_details(kind.grpc_code(), message, details);
        if let Ok(value) = correlation_id.parse() {
            status.metadata_mut().insert("x-correlation-id", value);
        }
        status
    }
}

impl From<Problem> for tonic::Status {
    fn from(problem: Problem) -> Self {
        let (correlation_id, _) = request_context();
        problem.log(&correlation_id);
        problem.to_status(&correlation_id)
    }
}

impl Problem {
    /// This problem as a trailers-only gRPC response, for middleware that answers a gRPC
    /// call itself (deadline, load shedding, unknown service).
    pub fn into_grpc_response(self) -> axum::response::Response {
        let kind = self.kind;
        let mut response = tonic::Status::from(self).into_http::<axum::body::Body>();
        response
            .extensions_mut()
            .insert(telemetry::ErrorKindLabel(kind.slug()));
        response
    }
}

/// The problem kind a trailers-only gRPC error response carries (its `ErrorInfo`'s
/// type), read back by the server's metrics: a handler's `Status` leaves tonic as
/// headers, never as a `Problem` the response could carry. `None` for a success, a
/// status that is not ours, or one in trailers after a body.
pub fn kind_of_grpc_response(headers: &http::HeaderMap) -> Option<crate::Kind> {
    if headers.get("grpc-status").is_none_or(|code| code == "0") {
        return None;
    }
    let status = grpc_status_of(headers)?;
    let details = status.get_error_details();
    let uri = details.error_info()?.metadata.get("type")?;
    crate::Kind::from_type_uri(uri)
}

/// The status a trailers-only gRPC response carries in its headers, if any. Unlike
/// `tonic::Status::from_header_map`, which panics on details that are not base64, a
/// peer's malformed details are dropped (the code and message stand).
pub fn grpc_status_of(headers: &http::HeaderMap) -> Option<tonic::Status> {
    use base64::Engine;
    const DETAILS: &str = "grpc-status-details-bin";
    // tonic's own reading of the header: standard alphabet, padding optional.
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    match headers.get(DETAILS) {
        Some(details) if LENIENT.decode(details.as_bytes()).is_err() => {
            let mut cleaned = headers.clone();
            cleaned.remove(DETAILS);
            tonic::Status::from_header_map(&cleaned)
        }
        _ => tonic::Status::from_header_map(headers),
    }
}

impl Problem {
    /// A downstream's gRPC status as a problem of ours. A client error keeps its kind
    /// (from the `ErrorInfo` type when the callee is Brigade, else from the code); any
    /// server-side failure of the callee becomes Unavailable, so a dependency's 500 never
    /// surfaces as ours (the seed's first rule for cross-service errors). A
    /// `grpc-retry-pushback-ms` becomes the problem's `Retry-After`.
    pub fn from_downstream(service: &str, status: &tonic::Status) -> Problem {
        use crate::Kind;
        use tonic::Code;
        let details = status.get_error_details();
        let typed = details
            .error_info()
            .and_then(|info| info.metadata.get("type"))
            .and_then(|uri| Kind::from_type_uri(uri));
        let kind = match status.code() {
            Code::NotFound => Kind::NotFound,
            Code::InvalidArgument | Code::OutOfRange => typed.unwrap_or(Kind::InvalidRequest),
            Code::AlreadyExists | Code::Aborted => typed.unwrap_or(Kind::Conflict),
            Code::FailedPrecondition => typed.unwrap_or(Kind::BusinessRuleViolated),
            Code::PermissionDenied => Kind::Forbidden,
            Code::Unauthenticated => Kind::Unauthenticated,
            Code::ResourceExhausted => Kind::RateLimited,
            Code::DeadlineExceeded => Kind::Timeout,
            _ => Kind::Unavailable,
        };
        let detail = if kind.is_server_error() {
            format!("{service} is unavailable ({:?})", status.code())
        } else {
            status.message().to_owned()
        };
        let mut problem = Problem::new(kind).with_detail(detail);
        // A client error's specifics are the caller's to act on: its extension members
        // and field violations come along. A server error's stay behind.
        if !kind.is_server_error() {
            if let Some(info) = details.error_info() {
                for (key, raw) in &info.metadata {
                    if let Some(name) = key.strip_prefix(EXTENSION_PREFIX) {
                        let value = serde_json::from_str::<serde_json::Value>(raw)
                            .unwrap_or_else(|_| serde_json::Value::String(raw.clone()));
                        problem = problem.with_extension(name, value);
                    }
                }
            }
            if let Some(bad) = details.bad_request() {
                problem.more.errors = bad
                    .field_violations
                    .iter()
                    .map(|v| crate::FieldError::new(v.field.clone(), v.description.clone()))
                    .collect();
            }
        }
        if let Some(ms) = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            problem = problem.with_retry_after(std::time::Duration::from_millis(ms));
        }
        problem
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Our own status reads back as its kind; a peer's details that are not base64 are
    /// dropped, not a panic.
    #[test]
    fn a_status_in_headers_reads_back_and_bad_details_do_not_panic() {
        let ours = Problem::not_found("no such thing")
            .to_status("c-1")
            .into_http::<axum::body::Body>();
        assert_eq!(
            kind_of_grpc_response(ours.headers()),
            Some(crate::Kind::NotFound)
        );

        let mut foreign = http::HeaderMap::new();
        foreign.insert("grpc-status", http::HeaderValue::from_static("13"));
        foreign.insert(
            "grpc-status-details-bin",
            http::HeaderValue::from_static("not*base64!"),
        );
        let status = grpc_status_of(&foreign).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(kind_of_grpc_response(&foreign), None);
        assert_eq!(kind_of_grpc_response(&http::HeaderMap::new()), None);
    }
}
