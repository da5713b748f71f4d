//! The shared middleware stack as one hand-written tower layer: correlation, CORS,
//! metrics, the caller's deadline, load shedding and the panic guard.
//!
//! Why not `axum::middleware::from_fn` and tower-http's layers, as this stack first was:
//! axum applies `Router::layer` to every route, and clones the route's whole service for
//! every request. Each `from_fn` layer then boxes the service beneath it into a `Next`
//! and boxes its own future, the CORS layer clones its configuration, and the metrics
//! macros resolved labelled handles through the global recorder. On a cached product
//! read that was most of the request's CPU (BENCHMARKS.md, issue 3). Here one layer does
//! it all with one boxed future, a clone of two `Arc`s and handles resolved once per
//! route and status. The order of the steps is the order the old stack had:
//!
//! 1. correlation ID and trace context, so every log line, metric and problem below
//!    (even a panic's) can name the request;
//! 2. CORS: a request with an `Origin` goes through tower-http's `Cors`, which answers
//!    preflights and adds the CORS headers; other requests are not CORS requests and get
//!    only `Vary: origin`, so that a shared cache keeps the two answers apart;
//! 3. metrics, which see the final status, including the 503 of shedding and the 500
//!    made of a panic;
//! 4. the caller's deadline: `grpc-timeout` for gRPC and gRPC-Web (tonic's own server,
//!    which would enforce it, is not in the path), `x-request-timeout-ms` for HTTP (the
//!    gateway sets it from its own timeout). The handler sees the deadline
//!    (`telemetry::deadline`); when it passes, the handler's future is dropped (its work
//!    cancelled) and the caller gets a Timeout problem / DEADLINE_EXCEEDED;
//! 5. load shedding: past `max_in_flight` requests, 503 / UNAVAILABLE at once rather than
//!    an unbounded queue;
//! 6. a panicking handler becomes a 500 problem instead of a dropped connection.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http::{HeaderName, HeaderValue, header};
use problem::Problem;
use telemetry::metrics::{RequestMetrics, Served};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::CorsLayer;
use tracing::Instrument;

/// The header an HTTP caller states its remaining budget in, in milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout-ms";
// Looked up on every request: as `HeaderName`s, so the name is not parsed each time.
const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static(REQUEST_TIMEOUT_HEADER);
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

const ORIGIN: HeaderValue = HeaderValue::from_static("origin");

/// What every route's guard shares.
#[derive(Debug)]
struct Shared {
    service: &'static str,
    in_flight: Semaphore,
    cors: CorsLayer,
}

#[derive(Debug, Clone)]
pub(crate) struct GuardLayer {
    shared: Arc<Shared>,
}

impl GuardLayer {
    pub(crate) fn new(service: &'static str, max_in_flight: usize) -> Self {
        let cors = crate::stack::cors();
        GuardLayer {
            shared: Arc::new(Shared {
                service,
                in_flight: Semaphore::new(max_in_flight),
                cors,
            }),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    /// axum calls this once per route and method (and for each fallback), so each gets
    /// its own cache of metric handles.
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            shared: Arc::clone(&self.shared),
            metrics: Arc::new(RequestMetrics::new(self.shared.service)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
    metrics: Arc<RequestMetrics>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> BoxFuture {
        // The service that was polled ready serves this request; its clone stays behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let started = Instant::now();
            let ctx = telemetry::context_of(req.headers(), req.uri().path());
            let span = telemetry::request_span(&ctx, req.method());
            let protocol = telemetry::metrics::protocol_of(req.headers());
            let method = telemetry::metrics::method_label(req.method());
            let route = req.extensions().get::<MatchedPath>().cloned();
            let stamp = telemetry::Stamp::of(&ctx);
            let call = telemetry::context::scope(ctx, serve(&shared, inner, req, protocol));
            let mut response = call.instrument(span.clone()).await;

            let status = response.status();
            metrics.record(Served {
                route: route
                    .as_ref()
                    .map_or(telemetry::metrics::UNMATCHED, MatchedPath::as_str),
                protocol,
                method,
                status,
                elapsed: started.elapsed(),
                error: telemetry::metrics::error_kind(&response),
            });
            // The access log is debug: at info it would cost every request a formatted line.
            span.in_scope(|| {
                tracing::debug!(
                    status = status.as_u16(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "request served"
                );
            });
            stamp.apply(response.headers_mut());
            Ok(response)
        })
    }
}

/// Steps 2, 4, 5 and 6, inside the request's context.
async fn serve<S>(shared: &Shared, inner: S, req: Request, protocol: &'static str) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Kept only for answers made here, in the caller's protocol.
    let content_type = (protocol != "http")
        .then(|| req.headers().get(header::CONTENT_TYPE).cloned())
        .flatten();
    let Ok(_permit) = shared.in_flight.try_acquire() else {
        let service = shared.service;
        metrics::counter!("brigade_shed_total", "service" => service).increment(1);
        tracing::warn!(service, "saturated; shedding a request");
        let problem = Problem::unavailable("the service is saturated; retry shortly")
            .with_retry_after(Duration::from_secs(1));
        return crate::grpc::reply(problem, content_type.as_ref());
    };
    let timeout = deadline_of(req.headers(), protocol);
    let cross_origin = req.headers().contains_key(header::ORIGIN);
    let call = async move {
        if cross_origin {
            let cors = shared.cors.clone().layer(inner);
            // The panic guard covers `call` itself too: a service may panic before its
            // future exists.
            guarded(|| Box::pin(cors.oneshot(req))).await
        } else {
            // Boxed: the route's future is large, and every layer of this one (context,
            // span, deadline) would otherwise copy it as it wraps it.
            let mut response = guarded(|| Box::pin(inner.oneshot(req))).await;
            if protocol != "grpc" {
                // Without an `Origin` this is no CORS request and needs no CORS headers
                // (no browser speaks native gRPC at all). `Vary` tells a shared cache
                // that a browser's request, which carries one, gets a different answer.
                response.headers_mut().append(header::VARY, ORIGIN);
            }
            response
        }
    };
    let Some(timeout) = timeout else {
        return call.await;
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let call = telemetry::deadline::scope(deadline, call);
    match tokio::time::timeout_at(deadline, call).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("brigade_deadline_exceeded_total", "protocol" => protocol)
                .increment(1);
            tracing::info!(?timeout, protocol, "deadline exceeded; call cancelled");
            let problem = Problem::new(problem::Kind::Timeout)
                .with_detail(format!("the call's deadline ({timeout:?}) passed"));
            crate::grpc::reply(problem, content_type.as_ref())
        }
    }
}

/// The caller's budget: `grpc-timeout` on a gRPC call, `x-request-timeout-ms` otherwise.
fn deadline_of(headers: &http::HeaderMap, protocol: &str) -> Option<Duration> {
    if protocol != "http"
        && let Some(timeout) = headers
            .get(&GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(telemetry::deadline::parse_grpc_timeout)
    {
        return Some(timeout);
    }
    headers
        .get(&REQUEST_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Calls a service and awaits its answer, turning a panic in either into a 500 problem.
async fn guarded<F>(call: impl FnOnce() -> F) -> Response
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let future = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(future) => future,
        Err(panic) => return panic_to_problem(panic),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(panic) => panic_to_problem(panic),
    }
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
