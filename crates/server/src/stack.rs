//! The one place where a service's router and middleware stack are assembled.

use std::any::Any;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use problem::{Kind, Problem};
use settings::ServiceName;
use storage::Database;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::health;

/// The service's wire faces plus health (HTTP and gRPC), reflection and metrics, behind
/// the shared stack.
pub fn router(
    service: ServiceName,
    db: Database,
    faces: Router,
    grpc_health: crate::grpc::GrpcRoutes,
    max_in_flight: usize,
) -> Router {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let name: &'static str = service.as_str();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz).with_state(db))
        .route("/metrics", get(health::metrics).with_state(name))
        .merge(crate::grpc::face(grpc_health))
        .merge(faces)
        // The framework's own rejections speak problem+json too.
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            // Outermost first; each layer wraps everything listed after it.
            ServiceBuilder::new()
                // Correlation ID and trace context first, so every log line, metric and
                // problem below (even a panic's) can name the request.
                .layer(from_fn(telemetry::correlate))
                // CORS next, so a browser on another origin can call REST and gRPC-Web
                // (its preflight is answered here, before routing).
                .layer(cors())
                // Metrics next: they must see the final status, including the 500 the
                // panic layer below makes out of a panic.
                .layer(from_fn_with_state(name, telemetry::metrics::record))
                // An HTTP caller's deadline (`x-request-timeout-ms`, which the gateway sets
                // from its own timeout): the handler sees it and is cut off at it. gRPC
                // calls carry `grpc-timeout` instead, enforced in `grpc::face`.
                .layer(from_fn(http_deadline))
                // Load shedding: past `max_in_flight` requests, answer 503 / UNAVAILABLE
                // at once rather than queue without bound. Inside metrics, so shed
                // requests are counted like any other answer.
                .layer(from_fn_with_state((name, in_flight), shed_load))
                // A panicking handler becomes a 500 problem instead of a dropped
                // connection; below metrics and correlation, so they still see it.
                .layer(CatchPanicLayer::custom(panic_to_problem))
                // Bodies are capped before anyone buffers them; the extractors turn the
                // refusal into a 413 problem.
                .layer(DefaultBodyLimit::max(crate::extract::MAX_BODY_BYTES)),
        )
}

/// Browsers on any origin may call the API: it authenticates with headers (API keys),
/// never cookies, so `*` leaks nothing. The exposed headers are what a client needs to
/// read errors (gRPC-Web sends them as headers), caching and correlation.
fn cors() -> tower_http::cors::CorsLayer {
    use http::{HeaderName, Method};
    use tower_http::cors::{Any, CorsLayer};
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(Any)
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
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The header an HTTP caller states its remaining budget in, in milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout-ms";

async fn http_deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let timeout = req
        .headers()
        .get(REQUEST_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    match timeout {
        Some(timeout) => crate::grpc::run_within(timeout, "http", next.run(req)).await,
        None => next.run(req).await,
    }
}

/// Admits a request while fewer than `max_in_flight` are being served; otherwise refuses
/// it at once, in the caller's protocol, with a hint to come back in a second.
async fn shed_load(
    State((service, in_flight)): State<(&'static str, Arc<Semaphore>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        metrics::counter!("brigade_shed_total", "service" => service).increment(1);
        tracing::warn!(service, "saturated; shedding a request");
        let problem = Problem::unavailable("the service is saturated; retry shortly")
            .with_retry_after(std::time::Duration::from_secs(1));
        return if crate::grpc::is_grpc(req.headers()) {
            problem.into_grpc_response()
        } else {
            problem.into_response()
        };
    };
    next.run(req).await
}

async fn not_found(headers: http::HeaderMap) -> Response {
    if crate::grpc::is_grpc(&headers) {
        // A gRPC client calling a service this port does not serve.
        // UNIMPLEMENTED, as gRPC asks for an unknown service; through the table, so the
        // caller gets the same rich details as for any other error.
        let mut response = Problem::new(Kind::MethodNotAllowed)
            .with_detail("no such gRPC service on this port")
            .into_grpc_response();
        // This fallback sits outside tonic-web's translation: answer a gRPC-Web client
        // in its own content type.
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE)
            && ct.as_bytes().starts_with(b"application/grpc-web")
        {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.clone());
        }
        return response;
    }
    Problem::not_found("no resource lives at this path").into_response()
}

async fn method_not_allowed() -> Problem {
    Problem::new(Kind::MethodNotAllowed).with_detail("this resource does not accept that method")
}

fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic with a non-string payload".to_owned());
    Problem::internal(PanicError(message)).into_response()
}

#[derive(Debug, thiserror::Error)]
#[error("handler panicked: {0}")]
struct PanicError(String);
