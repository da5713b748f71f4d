//! How gRPC shares a service's one port with REST: tonic's routes become axum routes (the
//! gRPC paths, `/<package>.<Service>/<Method>`, never collide with `/v1/...`), wrapped so
//! that gRPC-Web works without a proxy. tonic's own server, which would enforce an inbound
//! `grpc-timeout`, is not in the path: the shared stack (`guard`) does.

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use problem::Problem;

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

/// gRPC routes ready to merge into a service's router. gRPC-Web calls go through
/// tonic-web's translation (so a browser's request is plain gRPC by the time it reaches
/// the service); native gRPC calls go straight to the service. The caller's
/// `grpc-timeout` is enforced by the shared stack (`guard`), around this.
pub fn face(routes: GrpcRoutes) -> Router {
    routes
        .router
        .layer(tower::layer::layer_fn(WebOrNative::new))
}

/// Sends gRPC-Web requests through tonic-web and all others past it. tonic-web would let
/// native gRPC through too, but only after boxing the request body into tonic's body
/// type and the response body back into axum's: two allocations and a dynamic call per
/// frame on every call for no translation at all.
#[derive(Debug, Clone)]
struct WebOrNative<S> {
    web: tonic_web::GrpcWebService<S>,
    native: S,
}

impl<S: Clone> WebOrNative<S> {
    fn new(service: S) -> Self {
        use tower::Layer;
        WebOrNative {
            web: tonic_web::GrpcWebLayer::new().layer(service.clone()),
            native: service,
        }
    }
}

type WebResponse = http::Response<tonic::body::Body>;

impl<S> Service<Request> for WebOrNative<S>
where
    S: Service<Request, Response = Response, Error = Infallible>
        + Service<http::Request<tonic::body::Body>, Response = Response, Error = Infallible>
        + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Either<
        futures::future::MapOk<
            tonic_web::ResponseFuture<<S as Service<http::Request<tonic::body::Body>>>::Future>,
            fn(WebResponse) -> Response,
        >,
        <S as Service<Request>>::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::ready!(<S as Service<Request>>::poll_ready(&mut self.native, cx))?;
        Service::<Request>::poll_ready(&mut self.web, cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures::TryFutureExt;
        let web = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"));
        if web {
            let into_axum: fn(WebResponse) -> Response = |r| r.map(axum::body::Body::new);
            futures::future::Either::Left(self.web.call(req).map_ok(into_axum))
        } else {
            futures::future::Either::Right(<S as Service<Request>>::call(&mut self.native, req))
        }
    }
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

/// Whether a request speaks gRPC (or gRPC-Web), for answers that must be gRPC statuses.
pub fn is_grpc(req_headers: &http::HeaderMap) -> bool {
    req_headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A problem in the caller's protocol: problem+json, or a gRPC status, in gRPC-Web's own
/// content type for a gRPC-Web caller (`content_type` is the request's). For answers
/// made outside tonic and tonic-web: an unknown service, a shed request, a deadline.
pub fn reply(problem: Problem, content_type: Option<&http::HeaderValue>) -> Response {
    let Some(ct) = content_type.filter(|ct| ct.as_bytes().starts_with(b"application/grpc")) else {
        return problem.into_response();
    };
    let mut response = problem.into_grpc_response();
    if ct.as_bytes().starts_with(b"application/grpc-web") {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, ct.clone());
    }
    response
}

/// `page_size`/`page_token` validated like REST's `limit`/`cursor`.
pub fn page(
    page_size: i32,
    page_token: &str,
    field_prefix: &str,
) -> Result<crate::rest::PageRequest, Problem> {
    let query = crate::rest::PageQuery {
        limit: (page_size != 0).then_some(i64::from(page_size)),
        cursor: (!page_token.is_empty()).then(|| page_token.to_owned()),
    };
    query.parse().map_err(|p| {
        // Name the proto fields, not the REST ones.
        let errors = p
            .errors()
            .iter()
            .map(|e| {
                let field = if e.field == "limit" {
                    "page_size"
                } else {
                    "page_token"
                };
                problem::FieldError::new(format!("{field_prefix}{field}"), e.reason.clone())
            })
            .collect();
        Problem::invalid_request("invalid paging parameters").with_errors(errors)
    })
}

/// Calling another Brigade service over gRPC, the same way from every service: a channel
/// that connects lazily (the caller starts, and serves what it can, while the callee is
/// down), and requests that carry the attempt's budget (so the callee stops before the
/// caller does) and the caller's correlation ID and trace.
pub mod client {
    use std::time::Duration;

    use settings::{ServiceName, Settings};
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Endpoint;

    use crate::identity::{Signer, Stamp};

    /// A channel to another Brigade service: every call on it carries an identity token
    /// for the client the current request acts for ([`Stamp`]).
    pub type Channel = InterceptedService<tonic::transport::Channel, Stamp>;

    /// Why a client could not be made.
    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        #[error("the {0} address is not a valid URL: {1}")]
        Address(ServiceName, tonic::transport::Error),
        #[error("the internal identity key could not be read or made: {0}")]
        Identity(std::io::Error),
    }

    /// A lazily connected channel to `service` at its configured address.
    pub fn channel(settings: &Settings, service: ServiceName) -> Result<Channel, ClientError> {
        let signer = Signer::for_settings(settings).map_err(ClientError::Identity)?;
        let channel = Endpoint::from_shared(settings.service_url(service))
            .map_err(|e| ClientError::Address(service, e))?
            .connect_timeout(settings.outbound.timeout)
            .connect_lazy();
        Ok(InterceptedService::new(channel, Stamp::new(signer)))
    }

    /// `message` as a request with `budget` as its `grpc-timeout` and the current
    /// request context's outbound headers as metadata.
    pub fn request<T>(message: T, budget: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(budget);
        for (name, value) in telemetry::context::outbound_headers() {
            if let Ok(value) = value.parse() {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }
}

/// A gRPC call that failed on the server's side: a trailers-only answer (what tonic
/// sends for a handler's error) whose `grpc-status` is one of the codes a server owns
/// (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS). A status sent in the
/// trailers after a streamed body is not seen here; unary errors are trailers-only.
pub fn server_fault(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|code| matches!(code.as_bytes(), b"2" | b"4" | b"13" | b"14" | b"15"))
}
