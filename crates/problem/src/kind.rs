//! The table. Adding a kind means adding one arm to [`Kind::row`]; every conversion
//! reads from there.

use http::StatusCode;
use tonic::Code;

/// Where every problem `type` URI starts. Stable: clients branch on these strings.
pub const TYPE_BASE: &str = "https://brigade.dev/problems/";

/// What a caller should do about a failure, from the seed's "Classify errors at the
/// source" table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Fix the request, re-authenticate or show the user; retrying cannot help.
    Never,
    /// A server bug: retry once, then give up.
    Once,
    /// Transient: retry with backoff, honouring `Retry-After`.
    WithBackoff,
}

/// Every error kind Brigade can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// The request is malformed: bad syntax, missing header, unparsable parameter.
    InvalidRequest,
    /// The request is well-formed but some fields break the rules (`errors` lists them).
    ValidationFailed,
    /// The request body is not in a media type the endpoint accepts.
    UnsupportedMediaType,
    /// The request body is larger than the endpoint accepts.
    PayloadTooLarge,
    /// The caller did not prove who it is.
    Unauthenticated,
    /// The caller is known but may not do this.
    Forbidden,
    /// The resource does not exist.
    NotFound,
    /// The resource exists but not with this method (`Allow` lists the ones it has).
    MethodNotAllowed,
    /// The request conflicts with the current state (a duplicate, a concurrent change).
    Conflict,
    /// The request is valid but a business rule refuses it.
    BusinessRuleViolated,
    /// Not enough units in stock (the seed's example: `available_stock` says how many).
    InsufficientStock,
    /// A payment provider declined the payment (`charge` names the failed charge,
    /// `decline_code` says why). Retrying the same payment gets the same answer; another
    /// payment method, or the customer's bank, may change it.
    PaymentDeclined,
    /// A conditional request's precondition (`If-Match`) does not hold.
    PreconditionFailed,
    /// A request with this `Idempotency-Key` is still being processed.
    IdempotencyKeyInUse,
    /// This `Idempotency-Key` was first used for a different request (method, path or body).
    IdempotencyKeyReused,
    /// The caller sent too much too fast (`Retry-After` says when to come back).
    RateLimited,
    /// A bug or an unexpected failure inside Brigade. Its cause never leaves the process.
    Internal,
    /// A dependency is down, a breaker is open, or the service is shedding load.
    Unavailable,
    /// The request's deadline passed before the work could finish.
    Timeout,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub slug: &'static str,
    pub title: &'static str,
    pub status: StatusCode,
    pub grpc: Code,
    pub retry: Retry,
}

const fn row(
    slug: &'static str,
    title: &'static str,
    status: StatusCode,
    grpc: Code,
    retry: Retry,
) -> Row {
    Row {
        slug,
        title,
        status,
        grpc,
        retry,
    }
}

impl Kind {
    /// Every kind, for tests and documentation.
    pub const ALL: [Kind; 19] = [
        Kind::InvalidRequest,
        Kind::ValidationFailed,
        Kind::UnsupportedMediaType,
        Kind::PayloadTooLarge,
        Kind::Unauthenticated,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::MethodNotAllowed,
        Kind::Conflict,
        Kind::BusinessRuleViolated,
        Kind::InsufficientStock,
        Kind::PaymentDeclined,
        Kind::PreconditionFailed,
        Kind::IdempotencyKeyInUse,
        Kind::IdempotencyKeyReused,
        Kind::RateLimited,
        Kind::Internal,
        Kind::Unavailable,
        Kind::Timeout,
    ];

    pub(crate) const fn row(self) -> Row {
        use Retry::*;
        match self {
            Kind::InvalidRequest => row(
                "invalid-request",
                "Invalid request",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                Never,
            ),
            Kind::ValidationFailed => row(
                "validation-failed",
                "Validation failed",
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::InvalidArgument,
                Never,
            ),
            Kind::UnsupportedMediaType => row(
                "unsupported-media-type",
                "Unsupported media type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                Never,
            ),
            Kind::PayloadTooLarge => row(
                "payload-too-large",
                "Payload too large",
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::InvalidArgument,
                Never,
            ),
            Kind::Unauthenticated => row(
                "unauthenticated",
                "Authentication required",
                StatusCode::UNAUTHORIZED,
                Code::Unauthenticated,
                Never,
            ),
            Kind::Forbidden => row(
                "forbidden",
                "Forbidden",
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                Never,
            ),
            Kind::NotFound => row(
                "not-found",
                "Not found",
                StatusCode::NOT_FOUND,
                Code::NotFound,
                Never,
            ),
            Kind::MethodNotAllowed => row(
                "method-not-allowed",
                "Method not allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                Never,
            ),
            Kind::Conflict => row(
                "conflict",
                "Conflict",
                StatusCode::CONFLICT,
                Code::Aborted,
                Never,
            ),
            Kind::BusinessRuleViolated => row(
                "business-rule-violated",
                "Business rule violated",
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::FailedPrecondition,
                Never,
            ),
            Kind::InsufficientStock => row(
                "insufficient-stock",
                "Insufficient stock",
                StatusCode::CONFLICT,
                Code::FailedPrecondition,
                Never,
            ),
            Kind::PaymentDeclined => row(
                "payment-declined",
                "Payment declined",
                StatusCode::PAYMENT_REQUIRED,
                Code::FailedPrecondition,
                Never,
            ),
            Kind::PreconditionFailed => row(
                "precondition-failed",
                "Precondition failed",
                StatusCode::PRECONDITION_FAILED,
                Code::FailedPrecondition,
                Never,
            ),
            Kind::IdempotencyKeyInUse => row(
                "idempotency-key-in-use",
                "Idempotency key in use",
                StatusCode::CONFLICT,
                Code::Aborted,
                WithBackoff,
            ),
            Kind::IdempotencyKeyReused => row(
                "idempotency-key-reused",
                "Idempotency key reused",
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::InvalidArgument,
                Never,
            ),
            Kind::RateLimited => row(
                "rate-limited",
                "Too many requests",
                StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                WithBackoff,
            ),
            Kind::Internal => row(
                "internal",
                "Internal error",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                Once,
            ),
            Kind::Unavailable => row(
                "unavailable",
                "Service unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                WithBackoff,
            ),
            Kind::Timeout => row(
                "timeout",
                "Deadline exceeded",
                StatusCode::GATEWAY_TIMEOUT,
                Code::DeadlineExceeded,
                WithBackoff,
            ),
        }
    }

    /// The last segment of the problem `type` URI; also the metrics label.
    pub const fn slug(self) -> &'static str {
        self.row().slug
    }

    /// The problem `type` URI, e.g. `https://brigade.dev/problems/not-found`.
    pub fn type_uri(self) -> String {
        format!("{TYPE_BASE}{}", self.slug())
    }

    /// Short, fixed summary; the same for every occurrence of the kind.
    pub const fn title(self) -> &'static str {
        self.row().title
    }

    pub const fn http_status(self) -> StatusCode {
        self.row().status
    }

    pub const fn grpc_code(self) -> Code {
        self.row().grpc
    }

    pub const fn retry(self) -> Retry {
        self.row().retry
    }

    /// Whether a caller may retry at all (once or with backoff).
    pub const fn retryable(self) -> bool {
        !matches!(self.row().retry, Retry::Never)
    }

    /// The GraphQL `extensions.code`: the gRPC code's canonical name, so the three faces
    /// share one vocabulary (`NOT_FOUND`, `INVALID_ARGUMENT`, ...).
    pub fn graphql_code(self) -> &'static str {
        grpc_code_name(self.grpc_code())
    }

    /// 5xx kinds: the server's fault or its dependencies', logged at `error`.
    pub fn is_server_error(self) -> bool {
        self.http_status().is_server_error()
    }

    /// The kind whose `type` URI this is, for clients reading a problem back.
    pub fn from_type_uri(uri: &str) -> Option<Kind> {
        let slug = uri.strip_prefix(TYPE_BASE)?;
        Kind::ALL.into_iter().find(|k| k.slug() == slug)
    }
}

/// Canonical upper-snake names of gRPC codes, as in `google.rpc.Code`.
pub(crate) fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
