//! The shared middleware stack as one hand-written tower layer: correlation, CORS,
//! metrics, the caller's deadline, load shedding and the panic guard.
//!
//! Why not `axum::middleware::from_fn` and tower-http's layers, as this stack first was:
//! axum applies `Router::layer` to every route, and clones the route's whole service for
//! every request. Each `from_fn` layer then boxes the service beneath it into a `Next`
//! and boxes its own future, the CORS layer clones its configuration, and the metrics
//! macros resolved labelled handles through the global recorder. On a cached product
//! read that was most of the request's CPU (BENCHMARKS.md, issue 3). Here one layer does
//! it all: no box or clone of its own (its future, [`GuardFuture`], wraps the route's in
//! place), one pass over the headers, and metric handles resolved once per route and
//! status. The steps, in the order they run:
//!
//! 1. correlation ID and trace context, so every log line, metric and problem below
//!    (even a panic's) can name the request;
//! 2. CORS, on services configured with origins (`services.<name>.cors_origins`): for a
//!    request with an `Origin`, tower-http's `Cors` decides, on the request's head alone:
//!    it answers a preflight itself, and for any other request its headers go on
//!    *whatever* answers — the route's, and the 503 of shedding, the deadline's answer and
//!    the 500 of a panic, which a browser would otherwise hide from the page. Other
//!    requests are not CORS requests and get only `Vary: origin`, so that a shared cache
//!    keeps the two answers apart;
//! 3. metrics, which see the final status, including the 503 of shedding and the 500
//!    made of a panic;
//! 4. on a service behind the gateway (`identity.require_internal_token`), the caller's
//!    identity token (`crate::identity`): without a valid one, 401 / UNAUTHENTICATED;
//!    with one, the client it names is the request's (its `ClientScope`, and what calls
//!    to other services act for). Health, metrics and the API docs need none;
//! 4. load shedding: past `max_in_flight` requests, 503 / UNAVAILABLE at once rather than
//!    an unbounded queue;
//! 5. the caller's deadline: `grpc-timeout` for gRPC and gRPC-Web (tonic's own server,
//!    which would enforce it, is not in the path), `x-request-timeout-ms` for HTTP (the
//!    gateway sets it from its own timeout). The handler sees the deadline
//!    (`telemetry::deadline`); when it passes, the handler's future is dropped (its work
//!    cancelled) and the caller gets a Timeout problem / DEADLINE_EXCEEDED;
//! 6. a panicking handler becomes a 500 problem instead of a dropped connection.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::CatchUnwind;
use http::{HeaderName, HeaderValue, header};
use pin_project_lite::pin_project;
use problem::Problem;
use telemetry::context::RequestContext;
use telemetry::metrics::{RequestMetrics, Served};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::CorsLayer;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::grpc::server_fault as grpc_server_fault;

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
    in_flight: Arc<Semaphore>,
    /// `None`: the service answers no cross-origin request (an internal service).
    cors: Option<CorsLayer>,
    /// `Some`: calls need an identity token this signer made (a service behind the
    /// gateway); `None`: the gateway itself, and the payments sandbox (an outside party).
    /// `required`: a call without a token is refused (`identity.require_internal_token`);
    /// when not, a token that is sent is still checked and names the client.
    identity: Option<crate::identity::Check>,
}

#[derive(Debug, Clone)]
pub(crate) struct GuardLayer {
    shared: Arc<Shared>,
}

impl GuardLayer {
    pub(crate) fn new(
        service: &'static str,
        max_in_flight: usize,
        cors: Option<CorsLayer>,
        identity: Option<crate::identity::Check>,
    ) -> Self {
        // `quanta` calibrates its clock on first use: here, not in the first request.
        let _ = quanta::Instant::now();
        GuardLayer {
            shared: Arc::new(Shared {
                service,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                cors,
                identity,
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

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Does the request's bookkeeping and calls the route here, synchronously, and
    /// returns a hand-written future around the route's. Async blocks did this before;
    /// every one of them moved the request and the route's future into a larger future
    /// of its own, and those copies were the largest single cost of the stack
    /// (BENCHMARKS.md, issue 3).
    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = quanta::Instant::now();
        let inbound = Inbound::of(req.headers());
        let route = req.extensions().get::<MatchedPath>().cloned();
        let verdict = self.shared.identity.as_ref().and_then(|check| {
            if needs_no_identity(req.uri().path()) {
                return None;
            }
            match inbound.identity {
                Some(token) => Some(check.signer.verify(token)),
                None if check.required => Some(Err(crate::identity::Refused::Missing)),
                None => None,
            }
        });
        let mut ctx = telemetry::context_from(
            inbound.correlation_id,
            inbound.traceparent,
            req.method(),
            req.uri(),
        )
        .with_route(route.clone())
        .with_service(self.shared.service);
        let span = telemetry::request_span();
        let protocol = telemetry::metrics::protocol_from(inbound.content_type);
        let start = inbound.into_owned(protocol);
        let finish = Finish {
            metrics: Arc::clone(&self.metrics),
            route,
            protocol,
            method: telemetry::metrics::method_label(req.method()),
            started,
            span: span.clone(),
            client_deadline: start.timeout,
        };
        let refused = match verdict {
            Some(Ok(client)) => {
                req.extensions_mut()
                    .insert(crate::identity::ClientScope(client.to_string()));
                ctx = ctx.with_client(client);
                None
            }
            Some(Err(reason)) => Some(reason),
            None => None,
        };
        let cors = self.cors_of(&req, start.cross_origin);
        let mut start_or_refuse = |req, start: Start| match refused {
            Some(reason) => Call::Refused {
                reason,
                content_type: start.content_type,
            },
            None => self.start(req, start),
        };
        let (call, cors) = match cors {
            Cors::None => (start_or_refuse(req, start), None),
            Cors::Headers(headers) => (start_or_refuse(req, start), Some(headers)),
            Cors::Preflight(answer) => (
                Call::Answered {
                    response: Some(answer),
                },
                None,
            ),
        };
        GuardFuture {
            call: telemetry::context::scope(ctx, call).instrument(span),
            finish: Some(finish),
            cors,
        }
    }
}

/// The request headers the guard reads, found in one pass over the headers instead of a
/// hashed lookup for each (six lookups, four of custom names, were a visible share of a
/// cached read's CPU). Each is the first value of its name, as `HeaderMap::get` gives.
#[derive(Default)]
struct Inbound<'a> {
    correlation_id: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
    content_type: Option<&'a HeaderValue>,
    origin: bool,
    grpc_timeout: Option<&'a HeaderValue>,
    request_timeout: Option<&'a HeaderValue>,
    identity: Option<&'a HeaderValue>,
}

impl<'a> Inbound<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        let mut found = Inbound::default();
        for (name, value) in headers {
            let slot = if name == header::CONTENT_TYPE {
                &mut found.content_type
            } else if name == header::ORIGIN {
                found.origin = true;
                continue;
            } else if name == telemetry::CORRELATION {
                &mut found.correlation_id
            } else if name == telemetry::TRACEPARENT {
                &mut found.traceparent
            } else if name == GRPC_TIMEOUT {
                &mut found.grpc_timeout
            } else if name == REQUEST_TIMEOUT {
                &mut found.request_timeout
            } else if name == crate::identity::HEADER {
                &mut found.identity
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        found
    }

    /// What [`Guard::start`] needs once the request has moved on.
    fn into_owned(self, protocol: &'static str) -> Start {
        Start {
            protocol,
            // Kept only for answers made here, in the caller's protocol.
            content_type: (protocol != "http")
                .then(|| self.content_type.cloned())
                .flatten(),
            cross_origin: self.origin,
            timeout: deadline_of(self.grpc_timeout, self.request_timeout, protocol),
        }
    }
}

/// Paths any caller may read on any port: probes, metrics and the API's documents
/// (OpenAPI, Swagger UI, gRPC reflection: the contracts, which are public anyway).
fn needs_no_identity(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/slo" | "/openapi.json"
    ) || path.starts_with("/docs")
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
}

struct Start {
    protocol: &'static str,
    content_type: Option<HeaderValue>,
    cross_origin: bool,
    timeout: Option<Duration>,
}

/// What CORS makes of a request.
enum Cors {
    /// Not a CORS request, or the service takes none.
    None,
    /// A preflight, answered here.
    Preflight(Response),
    /// The CORS headers every answer to this request carries.
    Headers(http::HeaderMap),
}

impl<S> Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// Step 2: tower-http's `Cors` on a copy of the request's head, in front of a service
    /// that answers at once, so its rules (origins, preflights, exposed headers) are the
    /// one source of the CORS headers, added to every answer in [`GuardFuture`].
    fn cors_of(&self, req: &Request, cross_origin: bool) -> Cors {
        let Some(cors) = self.shared.cors.as_ref().filter(|_| cross_origin) else {
            return Cors::None;
        };
        let preflight = req.method() == http::Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut head = Request::new(axum::body::Body::empty());
        // tower-http takes every OPTIONS for a preflight; one without
        // Access-Control-Request-Method is an ordinary request, and gets the ordinary
        // headers (a GET's, whose rules are the same).
        *head.method_mut() = if req.method() == http::Method::OPTIONS && !preflight {
            http::Method::GET
        } else {
            req.method().clone()
        };
        *head.uri_mut() = req.uri().clone();
        *head.headers_mut() = req.headers().clone();
        let answer = cors
            .clone()
            .layer(tower::service_fn(|_: Request| {
                std::future::ready(Ok::<_, Infallible>(
                    Response::new(axum::body::Body::empty()),
                ))
            }))
            .oneshot(head)
            .now_or_never();
        match answer {
            Some(Ok(answer)) if preflight => Cors::Preflight(answer),
            Some(Ok(answer)) => Cors::Headers(answer.into_parts().0.headers),
            // The inner service answers at once, so CORS does too.
            Some(Err(never)) => match never {},
            None => Cors::None,
        }
    }

    /// Steps 4, 5 and 6. Answers made here (shedding, a panic in `call`) are built on
    /// the first poll, inside the request's context, so they carry its correlation ID.
    fn start(&mut self, req: Request, start: Start) -> Call<S::Future> {
        let Start {
            protocol,
            content_type,
            cross_origin,
            timeout,
        } = start;
        let Ok(permit) = Arc::clone(&self.shared.in_flight).try_acquire_owned() else {
            return Call::Shed {
                service: self.shared.service,
                content_type,
            };
        };
        let deadline = timeout.map(|timeout| Deadline {
            timeout,
            protocol,
            at: tokio::time::Instant::now() + timeout,
            content_type,
            sleep: None,
        });
        // The panic guard covers `call` itself too: a service may panic before its future
        // exists. (`poll_ready` was called on this service: it serves the request itself.)
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        match called {
            Ok(future) => Call::Run {
                future: AssertUnwindSafe(future).catch_unwind(),
                // Without an `Origin` this is no CORS request and needs no CORS headers
                // (no browser speaks native gRPC at all). `Vary` tells a shared cache that
                // a browser's request, which carries one, gets a different answer.
                vary: !cross_origin && protocol != "grpc",
                deadline,
                _permit: permit,
            },
            Err(panic) => Call::Panicked { panic: Some(panic) },
        }
    }
}

/// What happens once the route has answered: step 3 (metrics), the access log and the
/// correlation headers on the response.
struct Finish {
    metrics: Arc<RequestMetrics>,
    route: Option<MatchedPath>,
    protocol: &'static str,
    method: &'static str,
    /// From `quanta`'s TSC clock: the latency histogram reads the clock twice per request,
    /// and the OS clock was a visible share of a cached read.
    started: quanta::Instant,
    span: tracing::Span,
    /// The deadline the caller set (`grpc-timeout`, `x-request-timeout-ms`), if any.
    client_deadline: Option<Duration>,
}

impl Finish {
    /// `ctx` is the request's context, taken back from its scope: its correlation ID
    /// moves into the response.
    fn apply(self, response: &mut Response, ctx: Option<RequestContext>) {
        let status = response.status();
        let elapsed = self.started.elapsed();
        let error = telemetry::metrics::error_kind(response).or_else(|| {
            // A gRPC handler's error: its kind is in the status's details.
            (self.protocol != "http")
                .then(|| problem::kind_of_grpc_response(response.headers()))
                .flatten()
                .map(problem::Kind::slug)
        });
        let route = self
            .route
            .as_ref()
            .map_or(telemetry::metrics::UNMATCHED, MatchedPath::as_str);
        let server_fault = telemetry::metrics::is_server_fault(status, error)
            || (self.protocol != "http" && grpc_server_fault(response.headers()));
        self.metrics.record(Served {
            route,
            protocol: self.protocol,
            method: self.method,
            status,
            elapsed,
            error,
            server_fault,
            client_deadline: self.client_deadline,
        });
        if let Some(ctx) = &ctx
            && telemetry::trace::enabled()
            && telemetry::metrics::judged(route)
        {
            // Its span: the request's own, a child of the caller's call (or a root).
            let started = std::time::SystemTime::now()
                .checked_sub(elapsed)
                .unwrap_or(std::time::UNIX_EPOCH);
            let name = if self.protocol == "http" {
                format!("{} {route}", self.method)
            } else {
                route.trim_start_matches('/').to_owned()
            };
            let mut span =
                telemetry::trace::Span::of(ctx, telemetry::trace::Kind::Server, name, started);
            span.attributes.extend([
                ("http.request.method", self.method.to_owned()),
                ("http.route", route.to_owned()),
                ("http.response.status_code", status.as_u16().to_string()),
                ("network.protocol.name", self.protocol.to_owned()),
            ]);
            if server_fault {
                span.error = Some(error.unwrap_or("server error").to_owned());
            }
            telemetry::trace::record(span);
        }
        // The access log is debug: at info it would cost every request a formatted line.
        // It is written in the request's context (taken back from the route's scope), so
        // it carries the correlation ID like every other line of the request.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let log = || {
                self.span.in_scope(|| {
                    tracing::debug!(
                        status = status.as_u16(),
                        latency_us = elapsed.as_micros() as u64,
                        "request served"
                    );
                })
            };
            match &ctx {
                Some(ctx) => telemetry::context::sync_scope(ctx.clone(), log),
                None => log(),
            }
        }
        if let Some(ctx) = ctx {
            telemetry::Stamp::from_context(ctx).apply(response.headers_mut());
        }
    }
}

pin_project! {
    /// The future of a guarded request: the route's answer, inside the request's context
    /// and span, then [`Finish`].
    pub(crate) struct GuardFuture<F> {
        #[pin]
        call: Instrumented<TaskLocalFuture<RequestContext, Call<F>>>,
        finish: Option<Finish>,
        // The CORS headers of a CORS request, for whatever answers it.
        cors: Option<http::HeaderMap>,
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = std::task::ready!(this.call.as_mut().poll(cx));
        if let Some(cors) = this.cors.take() {
            let headers = response.headers_mut();
            for (name, value) in &cors {
                if name == header::VARY {
                    headers.append(name, value.clone());
                } else if !headers.contains_key(name) {
                    headers.insert(name, value.clone());
                }
            }
        }
        if let Some(finish) = this.finish.take() {
            let ctx = this.call.inner_pin_mut().take_value();
            finish.apply(&mut response, ctx);
        }
        Poll::Ready(Ok(response))
    }
}

/// The caller's deadline, once it has one.
struct Deadline {
    timeout: Duration,
    protocol: &'static str,
    at: tokio::time::Instant,
    content_type: Option<HeaderValue>,
    /// Made on the first poll that finds the route not yet done: most requests finish in
    /// their first poll and never need a timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

type Guarded<F> = CatchUnwind<AssertUnwindSafe<F>>;

pin_project! {
    #[project = CallProj]
    enum Call<F> {
        Shed { service: &'static str, content_type: Option<HeaderValue> },
        Refused { reason: crate::identity::Refused, content_type: Option<HeaderValue> },
        Panicked { panic: Option<Box<dyn Any + Send>> },
        Answered { response: Option<Response> },
        Run {
            #[pin]
            future: Guarded<F>,
            vary: bool,
            deadline: Option<Deadline>,
            _permit: OwnedSemaphorePermit,
        },
    }
}

impl<F> Future for Call<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.project() {
            CallProj::Shed {
                service,
                content_type,
            } => {
                let service = *service;
                metrics::counter!("brigade_shed_total", "service" => service).increment(1);
                tracing::warn!(service, "saturated; shedding a request");
                let problem = Problem::unavailable("the service is saturated; retry shortly")
                    .with_retry_after(Duration::from_secs(1));
                Poll::Ready(crate::grpc::reply(problem, content_type.as_ref()))
            }
            CallProj::Refused {
                reason,
                content_type,
            } => {
                tracing::info!(%reason, "refused a call that did not come through the gateway");
                let problem = Problem::new(problem::Kind::Unauthenticated).with_detail(
                    "this service takes calls only through the gateway (a valid internal identity token is required)",
                );
                Poll::Ready(crate::grpc::reply(problem, content_type.as_ref()))
            }
            CallProj::Answered { response } => Poll::Ready(response.take().unwrap_or_else(|| {
                Problem::internal(PanicError("polled after completion".to_owned())).into_response()
            })),
            CallProj::Panicked { panic } => Poll::Ready(match panic.take() {
                Some(panic) => panic_to_problem(panic),
                None => Problem::internal(PanicError("polled after completion".to_owned()))
                    .into_response(),
            }),
            CallProj::Run {
                mut future,
                vary,
                deadline,
                _permit,
            } => {
                let polled = match deadline {
                    Some(deadline) => {
                        telemetry::deadline::sync_scope(deadline.at, || future.as_mut().poll(cx))
                    }
                    None => future.as_mut().poll(cx),
                };
                let mut response = match polled {
                    Poll::Ready(Ok(Ok(response))) => response,
                    Poll::Ready(Ok(Err(never))) => match never {},
                    Poll::Ready(Err(panic)) => panic_to_problem(panic),
                    Poll::Pending => {
                        let Some(deadline) = deadline else {
                            return Poll::Pending;
                        };
                        let sleep = deadline
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.at)));
                        std::task::ready!(sleep.as_mut().poll(cx));
                        // The route's future is dropped, its work cancelled, with this one.
                        return Poll::Ready(deadline_exceeded(deadline));
                    }
                };
                // Once: a forwarded answer (the gateway's) may already say it.
                if *vary
                    && !response
                        .headers()
                        .get_all(header::VARY)
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"origin"))
                {
                    response.headers_mut().append(header::VARY, ORIGIN);
                }
                Poll::Ready(response)
            }
        }
    }
}

fn deadline_exceeded(deadline: &Deadline) -> Response {
    let Deadline {
        timeout,
        protocol,
        content_type,
        ..
    } = deadline;
    metrics::counter!("brigade_deadline_exceeded_total", "protocol" => *protocol).increment(1);
    tracing::info!(?timeout, protocol, "deadline exceeded; call cancelled");
    let problem = Problem::new(problem::Kind::Timeout)
        .with_detail(format!("the call's deadline ({timeout:?}) passed"));
    crate::grpc::reply(problem, content_type.as_ref())
}

/// The caller's budget: `grpc-timeout` on a gRPC call, `x-request-timeout-ms` otherwise.
fn deadline_of(
    grpc_timeout: Option<&HeaderValue>,
    request_timeout: Option<&HeaderValue>,
    protocol: &str,
) -> Option<Duration> {
    if protocol != "http"
        && let Some(timeout) = grpc_timeout
            .and_then(|v| v.to_str().ok())
            .and_then(telemetry::deadline::parse_grpc_timeout)
    {
        return Some(timeout);
    }
    request_timeout
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What spends a service's availability budget: its own failures, in either face.
    #[test]
    fn only_the_servers_own_failures_spend_availability() {
        use telemetry::metrics::is_server_fault;
        assert!(is_server_fault(http::StatusCode::SERVICE_UNAVAILABLE, None));
        assert!(is_server_fault(http::StatusCode::OK, Some("timeout")));
        assert!(!is_server_fault(
            http::StatusCode::NOT_FOUND,
            Some("not-found")
        ));
        assert!(!is_server_fault(
            http::StatusCode::TOO_MANY_REQUESTS,
            Some("rate-limited")
        ));
        let grpc = |code: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", HeaderValue::from_static(code));
            grpc_server_fault(&headers)
        };
        // INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED are the server's; NOT_FOUND,
        // INVALID_ARGUMENT, OK are not.
        assert!(grpc("13") && grpc("14") && grpc("4"));
        assert!(!grpc("5") && !grpc("3") && !grpc("0"));
        assert!(!grpc_server_fault(&http::HeaderMap::new()));
    }

    /// The one pass finds what six `HeaderMap::get`s found: the first value of each name.
    #[test]
    fn one_pass_over_the_headers_finds_what_lookups_would() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example"));
        headers.append("x-correlation-id", HeaderValue::from_static("first"));
        headers.append("x-correlation-id", HeaderValue::from_static("second"));
        headers.insert("traceparent", HeaderValue::from_static("00-abc"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-timeout", HeaderValue::from_static("5S"));
        headers.insert(REQUEST_TIMEOUT_HEADER, HeaderValue::from_static("250"));
        let found = Inbound::of(&headers);
        for (name, value) in [
            ("x-correlation-id", found.correlation_id),
            ("traceparent", found.traceparent),
            ("content-type", found.content_type),
            ("grpc-timeout", found.grpc_timeout),
            (REQUEST_TIMEOUT_HEADER, found.request_timeout),
        ] {
            assert_eq!(value, headers.get(name), "{name}");
        }
        assert!(!found.origin);
        let start = found.into_owned("grpc");
        assert_eq!(start.timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            start.content_type,
            Some(HeaderValue::from_static("application/grpc"))
        );

        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://shop.example"),
        );
        let found = Inbound::of(&headers);
        assert!(found.origin);
        // Plain HTTP reads its budget from `x-request-timeout-ms`, never `grpc-timeout`.
        let start = found.into_owned("http");
        assert_eq!(start.timeout, Some(Duration::from_millis(250)));
        assert_eq!(start.content_type, None);
    }

    /// A service that panics in `call`, before it has a future to poll.
    #[derive(Clone)]
    struct PanicsInCall;

    impl Service<Request> for PanicsInCall {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            panic!("boom in call");
        }
    }

    /// The panic becomes a 500 problem that carries the request's correlation ID, in the
    /// body and the header, and names no panic message on the wire.
    #[tokio::test]
    async fn a_panic_in_call_is_a_500_problem_with_the_correlation_id() {
        let guard = GuardLayer::new("test", 8, None, None).layer(PanicsInCall);
        let req = Request::builder()
            .uri("/boom")
            .header("x-correlation-id", "panic-in-call-1")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = guard.oneshot(req).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-correlation-id"], "panic-in-call-1");
        assert!(response.headers().contains_key("traceparent"));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["status"], 500);
        assert_eq!(problem["correlation_id"], "panic-in-call-1");
        assert_eq!(problem["instance"], "/boom");
        assert!(!String::from_utf8_lossy(&body).contains("boom in call"));
    }
}
