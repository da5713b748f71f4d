//! The one place where a service's router and middleware stack are assembled.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use problem::{Kind, Problem};
use settings::ServiceName;
use storage::Database;
use tower_http::cors::CorsLayer;

use crate::guard::GuardLayer;
use crate::health;

/// The service's wire faces plus health (HTTP and gRPC), reflection and metrics, behind
/// the shared stack (`guard`).
pub fn router(
    service: ServiceName,
    db: Database,
    faces: Router,
    grpc_health: crate::grpc::GrpcRoutes,
    max_in_flight: usize,
    cors_origins: &[String],
    identity: Option<crate::identity::Check>,
) -> Router {
    let name: &'static str = service.as_str();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz).with_state(db))
        .route("/metrics", get(health::metrics).with_state(name))
        .route("/slo", get(health::slo).with_state(name))
        .merge(crate::grpc::face(grpc_health))
        .merge(faces)
        // The framework's own rejections speak problem+json too.
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are capped where they are read (`extract::body_bytes`), not here.
        .layer(GuardLayer::new(
            name,
            max_in_flight,
            cors(cors_origins),
            identity,
        ))
}

/// CORS for browsers on `origins` (`["*"]`: any; none: no CORS at all, for internal
/// services). The API authenticates with headers (API keys), never cookies, so `*` leaks
/// nothing. The exposed headers are what a client needs to read errors (gRPC-Web sends
/// them as headers), caching and correlation.
pub(crate) fn cors(origins: &[String]) -> Option<CorsLayer> {
    use http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, Any};
    let allow: AllowOrigin = if origins.iter().any(|o| o == "*") {
        Any.into()
    } else {
        // Settings validated them as origins; one that is still no header value is left out.
        let exact: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if exact.is_empty() {
            return None;
        }
        AllowOrigin::list(exact)
    };
    let header = HeaderName::from_static;
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            http::header::CONTENT_TYPE,
            http::header::IF_MATCH,
            http::header::IF_NONE_MATCH,
            header("idempotency-key"),
            header("x-correlation-id"),
            header("traceparent"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            http::header::AUTHORIZATION,
        ])
        .expose_headers([
            http::header::ETAG,
            http::header::LOCATION,
            http::header::RETRY_AFTER,
            header("idempotent-replayed"),
            header("x-correlation-id"),
            header("traceparent"),
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            http::header::WWW_AUTHENTICATE,
            header("ratelimit"),
            header("ratelimit-policy"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    Some(layer)
}

async fn not_found(headers: http::HeaderMap) -> Response {
    // A gRPC client calling a service this port does not serve gets UNIMPLEMENTED, as
    // gRPC asks for an unknown service; through the table, so the caller gets the same
    // rich details as for any other error.
    if crate::grpc::is_grpc(&headers) {
        let problem =
            Problem::new(Kind::MethodNotAllowed).with_detail("no such gRPC service on this port");
        return crate::grpc::reply(problem, headers.get(http::header::CONTENT_TYPE));
    }
    Problem::not_found("no resource lives at this path").into_response()
}

async fn method_not_allowed() -> Problem {
    Problem::new(Kind::MethodNotAllowed).with_detail("this resource does not accept that method")
}
