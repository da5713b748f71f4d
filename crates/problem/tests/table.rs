//! Pins every row of the error table and each conversion's shape.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::response::IntoResponse;
use http::StatusCode;
use http_body_util::BodyExt;
use problem::{FieldError, Kind, PROBLEM_JSON, Problem, ProblemBody, Retry};
use tonic::Code;
use tonic_types::StatusExt;

/// (kind, slug, HTTP status, gRPC code, retry advice) — the whole table, spelled out.
const TABLE: [(Kind, &str, u16, Code, Retry); 19] = [
    (
        Kind::InvalidRequest,
        "invalid-request",
        400,
        Code::InvalidArgument,
        Retry::Never,
    ),
    (
        Kind::ValidationFailed,
        "validation-failed",
        422,
        Code::InvalidArgument,
        Retry::Never,
    ),
    (
        Kind::UnsupportedMediaType,
        "unsupported-media-type",
        415,
        Code::InvalidArgument,
        Retry::Never,
    ),
    (
        Kind::PayloadTooLarge,
        "payload-too-large",
        413,
        Code::InvalidArgument,
        Retry::Never,
    ),
    (
        Kind::Unauthenticated,
        "unauthenticated",
        401,
        Code::Unauthenticated,
        Retry::Never,
    ),
    (
        Kind::Forbidden,
        "forbidden",
        403,
        Code::PermissionDenied,
        Retry::Never,
    ),
    (
        Kind::NotFound,
        "not-found",
        404,
        Code::NotFound,
        Retry::Never,
    ),
    (
        Kind::MethodNotAllowed,
        "method-not-allowed",
        405,
        Code::Unimplemented,
        Retry::Never,
    ),
    (Kind::Conflict, "conflict", 409, Code::Aborted, Retry::Never),
    (
        Kind::BusinessRuleViolated,
        "business-rule-violated",
        422,
        Code::FailedPrecondition,
        Retry::Never,
    ),
    (
        Kind::InsufficientStock,
        "insufficient-stock",
        409,
        Code::FailedPrecondition,
        Retry::Never,
    ),
    (
        Kind::PaymentDeclined,
        "payment-declined",
        402,
        Code::FailedPrecondition,
        Retry::Never,
    ),
    (
        Kind::PreconditionFailed,
        "precondition-failed",
        412,
        Code::FailedPrecondition,
        Retry::Never,
    ),
    (
        Kind::IdempotencyKeyInUse,
        "idempotency-key-in-use",
        409,
        Code::Aborted,
        Retry::WithBackoff,
    ),
    (
        Kind::IdempotencyKeyReused,
        "idempotency-key-reused",
        422,
        Code::InvalidArgument,
        Retry::Never,
    ),
    (
        Kind::RateLimited,
        "rate-limited",
        429,
        Code::ResourceExhausted,
        Retry::WithBackoff,
    ),
    (Kind::Internal, "internal", 500, Code::Internal, Retry::Once),
    (
        Kind::Unavailable,
        "unavailable",
        503,
        Code::Unavailable,
        Retry::WithBackoff,
    ),
    (
        Kind::Timeout,
        "timeout",
        504,
        Code::DeadlineExceeded,
        Retry::WithBackoff,
    ),
];

#[test]
fn every_row_is_pinned() {
    assert_eq!(
        TABLE.len(),
        Kind::ALL.len(),
        "a kind was added without a row here"
    );
    for (kind, slug, status, code, retry) in TABLE {
        assert_eq!(kind.slug(), slug);
        assert_eq!(
            kind.type_uri(),
            format!("https://brigade.dev/problems/{slug}")
        );
        assert_eq!(kind.http_status().as_u16(), status, "{kind:?}");
        assert_eq!(kind.grpc_code(), code, "{kind:?}");
        assert_eq!(kind.retry(), retry, "{kind:?}");
        assert_eq!(kind.retryable(), retry != Retry::Never);
        assert!(!kind.title().is_empty());
        assert_eq!(Kind::from_type_uri(&kind.type_uri()), Some(kind));
        assert_eq!(kind.graphql_code(), upper_snake(&format!("{code:?}")));
    }
    // Slugs and URIs are unique.
    let mut slugs: Vec<_> = Kind::ALL.iter().map(|k| k.slug()).collect();
    slugs.sort();
    slugs.dedup();
    assert_eq!(slugs.len(), Kind::ALL.len());
}

#[test]
fn the_seeds_never_retry_classes_are_not_retryable() {
    for kind in [
        Kind::InvalidRequest,
        Kind::ValidationFailed,
        Kind::NotFound,
        Kind::Forbidden,
        Kind::Unauthenticated,
    ] {
        assert!(!kind.retryable(), "{kind:?}");
    }
}

async fn body_of(
    problem: Problem,
) -> (StatusCode, http::HeaderMap, ProblemBody, serde_json::Value) {
    let response = problem.into_response();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap(),
        raw,
    )
}

#[tokio::test]
async fn every_kind_renders_as_problem_json() {
    for kind in Kind::ALL {
        let (status, headers, body, _) = body_of(Problem::new(kind)).await;
        assert_eq!(status, kind.http_status());
        assert_eq!(headers[http::header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(body.type_uri, kind.type_uri());
        assert_eq!(body.title, kind.title());
        assert_eq!(body.status, kind.http_status().as_u16());
        assert_eq!(body.retryable, kind.retryable());
    }
}

#[tokio::test]
async fn validation_lists_every_field_and_extensions_are_typed() {
    let problem = Problem::validation(vec![
        FieldError::new("name", "must not be empty"),
        FieldError::new("price", "must not be negative"),
    ])
    .with_extension("available_stock", 12)
    .with_extension("status", 200); // reserved: refused
    let (status, _, body, raw) = body_of(problem).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body.errors.len(), 2);
    assert_eq!(raw["errors"][1]["field"], "price");
    assert_eq!(raw["available_stock"], 12);
    assert_eq!(raw["status"], 422);
}

#[derive(Debug)]
struct DbDown {
    source: std::io::Error,
}
impl std::fmt::Display for DbDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connecting to postgres://app:hunter2@db failed")
    }
}
impl std::error::Error for DbDown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[tokio::test]
async fn internal_errors_never_show_their_cause() {
    let cause = DbDown {
        source: std::io::Error::other("connection refused"),
    };
    let problem = Problem::internal(cause).with_detail("the SQL was SELECT secret");
    let status = problem.to_status("cid-1");
    assert!(!status.message().contains("hunter2"));
    assert!(!status.message().contains("SELECT"));
    let gql = problem.to_graphql("cid-1");
    assert!(!gql.message.contains("SELECT"));
    let (code, _, body, raw) = body_of(problem).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    let text = raw.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("refused") && !text.contains("SELECT"),
        "{text}"
    );
    assert!(body.detail.unwrap().contains("correlation_id"));
}

#[tokio::test]
async fn retry_after_is_whole_seconds_rounded_up() {
    let problem = Problem::new(Kind::RateLimited).with_retry_after(Duration::from_millis(1500));
    let (_, headers, _, _) = body_of(problem).await;
    assert_eq!(headers[http::header::RETRY_AFTER], "2");
}

#[test]
fn grpc_status_carries_rich_details() {
    let problem = Problem::validation(vec![FieldError::new("price", "must not be negative")]);
    let status = problem.to_status("corr-42");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "VALIDATION_FAILED");
    assert_eq!(info.domain, "brigade.dev");
    assert_eq!(info.metadata["type"], Kind::ValidationFailed.type_uri());
    assert_eq!(info.metadata["correlation_id"], "corr-42");
    let bad = details.bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "price");
    assert_eq!(
        status.metadata().get("x-correlation-id").unwrap(),
        "corr-42"
    );

    let not_found = Problem::not_found("Product 7 not found").to_status("c");
    assert_eq!(not_found.code(), Code::NotFound);
    assert_eq!(not_found.message(), "Product 7 not found");
}

#[test]
fn graphql_errors_carry_code_and_type() {
    let gql = Problem::not_found("Product 7 not found").to_graphql("corr-9");
    assert_eq!(gql.message, "Product 7 not found");
    assert_eq!(gql.extensions["code"], "NOT_FOUND");
    assert_eq!(gql.extensions["type"], Kind::NotFound.type_uri());
    assert_eq!(gql.extensions["correlation_id"], "corr-9");
    let v = Problem::validation(vec![FieldError::new("name", "empty")]).to_graphql("");
    assert_eq!(v.extensions["code"], "INVALID_ARGUMENT");
    assert_eq!(v.extensions["errors"][0]["field"], "name");
    assert_eq!(v.extensions["classification"], "BAD_REQUEST");
    assert_eq!(gql.extensions["classification"], "BAD_REQUEST");
    let down = Problem::unavailable("catalog is down").to_graphql("");
    assert_eq!(down.extensions["classification"], "INTERNAL_SERVER_ERROR");
}

/// `InvalidArgument` -> `INVALID_ARGUMENT`, to check GraphQL codes independently.
fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
