//! How gRPC shares a service's one port with REST: tonic's routes become axum routes (the
//! gRPC paths, `/<package>.<Service>/<Method>`, never collide with `/v1/...`), wrapped so
//! that gRPC-Web works without a proxy and an inbound `grpc-timeout` is enforced even
//! though tonic's own server (which would enforce it) is not in the path.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;

use tonic::server::NamedService;
use tower::Service;

/// A set of gRPC services as axum routes. Like `tonic::service::Routes`, minus its
/// catch-all fallback: a service's port has one fallback (`stack::not_found`, which
/// answers UNIMPLEMENTED to gRPC callers), and axum refuses to merge two.
#[derive(Debug, Clone, Default)]
pub struct GrpcRoutes {
    router: Router,
    /// The fully qualified names of the services added, for the health service.
    names: Vec<&'static str>,
}

impl GrpcRoutes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.router = self
            .router
            .route_service(&format!("/{}/{{*method}}", S::NAME), service);
        self.names.push(S::NAME);
        self
    }

    /// The services added, e.g. `ecommerce.v1.ProductService`.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// gRPC routes ready to merge into a service's router: gRPC-Web translation outermost
/// (so a browser's request is plain gRPC by the time it reaches the deadline), then the
/// deadline.
pub fn face(routes: GrpcRoutes) -> Router {
    routes
        .router
        .layer(from_fn(enforce_deadline))
        .layer(tonic_web::GrpcWebLayer::new())
}

/// Server reflection (v1) over every Brigade proto, so `grpcurl` and friends can discover
/// the services.
pub fn reflection() -> Result<GrpcRoutes, tonic_reflection::server::Error> {
    let service = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(GrpcRoutes::new().add_service(service))
}

/// Runs the call under its `grpc-timeout`: the handler sees the deadline
/// (`telemetry::deadline`), and when it passes the handler's future is dropped (its work
/// cancelled) and the client gets DEADLINE_EXCEEDED.
async fn enforce_deadline(req: Request, next: Next) -> Response {
    let timeout = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(telemetry::deadline::parse_grpc_timeout);
    match timeout {
        Some(timeout) => run_within(timeout, "grpc", next.run(req)).await,
        None => next.run(req).await,
    }
}

/// Runs `call` within `timeout`, with the deadline visible to it; past the deadline the
/// call is dropped and the answer is a Timeout problem in the caller's protocol.
pub(crate) async fn run_within(
    timeout: Duration,
    protocol: &'static str,
    call: impl std::future::Future<Output = Response>,
) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let call = telemetry::deadline::scope(deadline, call);
    match tokio::time::timeout_at(deadline, call).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("brigade_deadline_exceeded_total", "protocol" => protocol)
                .increment(1);
            tracing::info!(?timeout, protocol, "deadline exceeded; call cancelled");
            let problem = problem::Problem::new(problem::Kind::Timeout)
                .with_detail(format!("the call's deadline ({timeout:?}) passed"));
            if protocol == "grpc" {
                problem.into_grpc_response()
            } else {
                problem.into_response()
            }
        }
    }
}

/// Whether a request speaks gRPC (or gRPC-Web), for answers that must be gRPC statuses.
pub fn is_grpc(req_headers: &http::HeaderMap) -> bool {
    req_headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}
