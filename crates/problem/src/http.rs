//! The one conversion to RFC 9457 `application/problem+json`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};

use crate::{FieldError, Problem, request_context};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Members defined by RFC 9457 or by Brigade for every problem; extensions may not reuse them.
pub(crate) const RESERVED_MEMBERS: [&str; 8] = [
    "type",
    "title",
    "status",
    "detail",
    "instance",
    "correlation_id",
    "errors",
    "retryable",
];

/// The problem+json document as it goes on the wire (and as clients parse it back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(
    as = Problem,
    title = "Problem",
    description = "An RFC 9457 problem document. `type` is stable: branch on it, not on `title` or `detail`. Further members (e.g. `available_stock`) may be present."
)]
pub struct ProblemBody {
    /// A URI identifying the kind of problem, e.g. `https://brigade.dev/problems/not-found`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    /// Whether retrying the same request may succeed (from the error table).
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Typed extension members such as `available_stock`.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// The problem+json document for this problem, in the context of one request.
    pub fn to_body(&self, correlation_id: &str, instance: Option<&str>) -> ProblemBody {
        let kind = self.kind;
        ProblemBody {
            type_uri: kind.type_uri(),
            title: kind.title().to_owned(),
            status: kind.http_status().as_u16(),
            detail: self.public_detail().map(|d| d.into_owned()),
            instance: self
                .more
                .instance
                .clone()
                .or_else(|| instance.map(str::to_owned)),
            correlation_id: correlation_id.to_owned(),
            retryable: kind.retryable(),
            errors: self.more.errors.clone(),
            extensions: self.more.extensions.clone(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (correlation_id, instance) = request_context();
        self.log(&correlation_id);
        let body = self.to_body(&correlation_id, instance.as_deref());
        // Serializing a struct of strings, numbers and JSON values cannot fail; fall back
        // to a minimal document rather than panic if it ever does.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"{}","title":"{}","status":{}}}"#,
                body.type_uri, body.title, body.status
            )
            .into_bytes()
        });
        let mut response = (self.kind.http_status(), bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.kind == crate::Kind::Unauthenticated {
            // RFC 9110 §15.5.2: a 401 says how to authenticate.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"brigade\""),
            );
        }
        if let Some(after) = self.more.retry_after {
            // Retry-After is whole seconds; round up so a client never comes back early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
            .extensions_mut()
            .insert(telemetry::ErrorKindLabel(self.kind.slug()));
        response
    }
}
