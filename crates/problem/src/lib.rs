//! Brigade's one error table: every error kind, once, with its HTTP status, gRPC code,
//! problem `type` URI, title and retry advice, and the single conversion point from a
//! [`Problem`] to each wire format (RFC 9457 problem+json, `tonic::Status` with rich
//! details, GraphQL error extensions).
#![forbid(unsafe_code)]

mod graphql;
mod grpc;
mod http;
mod kind;

pub use graphql::GraphqlError;
pub use grpc::{grpc_status_of, kind_of_grpc_response};
pub use http::{PROBLEM_JSON, ProblemBody};
pub use kind::{Kind, Retry, TYPE_BASE};

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// One field that failed validation, as listed in the `errors` member of a problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name as the client spelled it (JSON pointer-ish: `price`, `items[2].qty`).
    pub field: String,
    /// Why the value was refused, in words a client developer can act on.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error on its way to a caller: a [`Kind`] from the table plus the specifics.
///
/// Build one with a constructor named after the kind (`Problem::not_found(..)`), add
/// detail and typed extension members, and let the wire face convert it at its one point.
#[derive(Debug)]
pub struct Problem {
    kind: Kind,
    /// Boxed so that `Result<T, Problem>` stays small on the happy path.
    more: Box<Details>,
}

/// Everything about a problem beyond its kind.
#[derive(Debug, Default)]
struct Details {
    /// Human-readable explanation of this occurrence. Never shown for [`Kind::Internal`].
    detail: Option<Cow<'static, str>>,
    /// Every bad field, for validation failures.
    errors: Vec<FieldError>,
    /// Typed extension members (`available_stock`, ...), serialized at the top level.
    extensions: serde_json::Map<String, serde_json::Value>,
    /// How long the caller should wait before retrying (`Retry-After`).
    retry_after: Option<Duration>,
    /// Overrides the request path as the problem's `instance`.
    instance: Option<String>,
    /// The cause; logged with its whole chain, never put on the wire.
    source: Option<BoxError>,
}

impl Problem {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            more: Box::default(),
        }
    }

    pub fn invalid_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::InvalidRequest).with_detail(detail)
    }

    /// A validation failure listing every bad field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self::new(Kind::ValidationFailed)
            .with_detail(detail)
            .with_errors(errors)
    }

    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::NotFound).with_detail(detail)
    }

    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Conflict).with_detail(detail)
    }

    /// Anything unexpected. The cause is logged with the correlation ID; the caller sees
    /// only a generic detail.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::new(Kind::Internal).with_source(cause)
    }

    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Unavailable).with_detail(detail)
    }

    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.more.detail = Some(detail.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.more.errors = errors;
        self
    }

    /// Adds a typed extension member. Names of the standard members are refused so an
    /// extension can never overwrite `type`, `status` and the like.
    pub fn with_extension(mut self, name: &str, value: impl serde::Serialize) -> Self {
        if http::RESERVED_MEMBERS.contains(&name) {
            tracing::warn!(
                member = name,
                "refused to overwrite a standard problem member"
            );
            return self;
        }
        match serde_json::to_value(value) {
            Ok(v) => {
                self.more.extensions.insert(name.to_owned(), v);
            }
            Err(err) => tracing::warn!(member = name, error = %err, "extension not serializable"),
        }
        self
    }

    /// An extension member added with [`with_extension`](Self::with_extension).
    pub fn extension(&self, name: &str) -> Option<&serde_json::Value> {
        self.more.extensions.get(name)
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.more.retry_after = Some(after);
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.more.instance = Some(instance.into());
        self
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.more.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.more.errors
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.more.retry_after
    }

    /// The detail as the caller may see it: internal errors get a fixed sentence, so a
    /// cause can never leak through `detail`.
    pub fn public_detail(&self) -> Option<Cow<'static, str>> {
        if self.kind == Kind::Internal {
            return Some(Cow::Borrowed(
                "An unexpected error occurred. Quote the correlation_id when reporting it.",
            ));
        }
        self.more.detail.clone()
    }

    /// Logs the problem once, at the conversion point: server-side kinds at `error` with
    /// the whole cause chain, client mistakes at `debug`.
    fn log(&self, correlation_id: &str) {
        let chain = self.more.source.as_deref().map(|e| cause_chain(e));
        if self.kind.is_server_error() {
            tracing::error!(
                kind = self.kind.slug(),
                correlation_id,
                detail = self.more.detail.as_deref(),
                cause = chain.as_deref(),
                "request failed"
            );
        } else {
            tracing::debug!(
                kind = self.kind.slug(),
                correlation_id,
                detail = self.more.detail.as_deref(),
                "request refused"
            );
        }
    }
}

/// `outer: middle: root`, every `source()` in order.
fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.title())?;
        if let Some(detail) = &self.more.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.more
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Correlation ID and instance of the request being served, if any.
fn request_context() -> (String, Option<String>) {
    match telemetry::context::current() {
        Some(ctx) => (
            ctx.correlation_id.to_string(),
            Some(ctx.instance().to_owned()),
        ),
        None => (String::new(), None),
    }
}
