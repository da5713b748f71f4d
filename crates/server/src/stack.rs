//! The one place where a service's router and middleware stack are assembled.

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use problem::{Kind, Problem};
use settings::ServiceName;
use storage::Database;
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
) -> Router {
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
                // Metrics next: they must see the final status, including the 500 the
                // panic layer below makes out of a panic.
                .layer(from_fn_with_state(name, telemetry::metrics::record))
                // A panicking handler becomes a 500 problem instead of a dropped
                // connection; below metrics and correlation, so they still see it.
                .layer(CatchPanicLayer::custom(panic_to_problem))
                // Bodies are capped before anyone buffers them; the extractors turn the
                // refusal into a 413 problem.
                .layer(DefaultBodyLimit::max(crate::extract::MAX_BODY_BYTES)),
        )
}

async fn not_found(headers: http::HeaderMap) -> Response {
    if crate::grpc::is_grpc(&headers) {
        // A gRPC client calling a service this port does not serve.
        return crate::grpc::status_response(tonic::Status::unimplemented(
            "no such gRPC service on this port",
        ));
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
