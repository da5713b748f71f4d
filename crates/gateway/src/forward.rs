//! `/v1/*` at the gateway: each request forwarded to the service that owns the path,
//! after the edge has checked who is asking and whether they may.
//!
//! | path | owner | reads | writes |
//! |---|---|---|---|
//! | `/v1/products…` | catalog | public | `catalog:write` |
//! | `/v1/users…` | accounts | `accounts:read` | `accounts:write` |
//! | `/v1/orders…` | orders | `orders:read` | `orders:write` |
//! | `/v1/payments…`, `/v1/analytics…` | billing | `billing:read` | – |
//!
//! gRPC and gRPC-Web calls to the public services (`GRPC_METHODS`: catalog's
//! `ProductService` and `ReviewService`, accounts' `UserService`, orders'
//! `OrderService`) are forwarded the same way, native gRPC over HTTP/2 (h2c) and gRPC-Web
//! over HTTP/1.1, trailers and streams passed through, the key in `authorization`
//! metadata. Internal RPCs (`InventoryService`: reserving and releasing stock;
//! `OperationsService`: an operator's redrive, which the dashboard calls itself) have no
//! route here: from outside they are UNIMPLEMENTED.
//!
//! The upstream call goes through the owner's `resilience::Downstream` (the same breaker
//! as the gateway's gRPC calls to it) on pooled keep-alive HTTP/1.1 connections
//! (hyper-util's client); bodies stream both ways, never buffered here. Hop-by-hop
//! headers are dropped (RFC 9110 §7.6.1), and so are the client's `Authorization` and any
//! identity token it sent: the service gets the gateway's token for the caller instead,
//! the correlation ID and trace of this request, and `x-request-timeout-ms` from what is
//! left of its budget. A read (no body) may be retried; anything else is sent once. An
//! owner's own failure (a 5xx, a gRPC server code) is a failed call — the breaker counts
//! it — and the client hears the gateway's 503, never the owner's 500.
//! Before any of it, the caller is admitted (`crate::admit`: rate, concurrency, shedding).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use problem::{Kind, Problem};
use resilience::downstream::Downstream;
use settings::{ServiceName, Settings};

use crate::edge::Edge;
use crate::keys::Scope;

/// A service `/v1/*` paths are forwarded to.
#[derive(Debug, Clone)]
struct Upstream {
    service: ServiceName,
    /// `http://host:port`, no trailing slash.
    base: String,
    /// Its address, when a request may go to it in process (`server::local`) if this
    /// process serves it.
    local: Option<std::net::SocketAddr>,
    forwarded: Forwarded,
    downstream: Downstream,
    read: Option<Scope>,
    write: Option<Scope>,
}

/// `brigade_forwarded_total` of one upstream, by how the request went.
#[derive(Clone)]
struct Forwarded {
    in_process: metrics::Counter,
    socket: metrics::Counter,
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarded")
    }
}

impl Forwarded {
    fn of(service: ServiceName) -> Self {
        let counter = |transport: &'static str| {
            metrics::counter!(
                "brigade_forwarded_total",
                "service" => "gateway",
                "downstream" => service.as_str(),
                "transport" => transport
            )
        };
        Self {
            in_process: counter("in_process"),
            socket: counter("socket"),
        }
    }
}

/// Every method of the public gRPC services, with the scope it needs (`None`: public).
/// A test holds it equal to the descriptors, so a new RPC cannot be left out.
pub const GRPC_METHODS: &[(&str, &str, Option<Scope>)] = &[
    ("ecommerce.v1.ProductService", "GetProduct", None),
    ("ecommerce.v1.ProductService", "ListProducts", None),
    ("ecommerce.v1.ProductService", "BatchGetProducts", None),
    (
        "ecommerce.v1.ProductService",
        "CreateProduct",
        Some(Scope::CatalogWrite),
    ),
    ("ecommerce.v1.ReviewService", "ListReviews", None),
    ("ecommerce.v1.ReviewService", "BatchListReviews", None),
    (
        "ecommerce.v1.ReviewService",
        "CreateReview",
        Some(Scope::CatalogWrite),
    ),
    (
        "ecommerce.v1.UserService",
        "GetUser",
        Some(Scope::AccountsRead),
    ),
    (
        "ecommerce.v1.UserService",
        "BatchGetUsers",
        Some(Scope::AccountsRead),
    ),
    (
        "ecommerce.v1.UserService",
        "CreateUser",
        Some(Scope::AccountsWrite),
    ),
    (
        "ecommerce.v1.OrderService",
        "CreateOrder",
        Some(Scope::OrdersWrite),
    ),
    (
        "ecommerce.v1.OrderService",
        "GetOrder",
        Some(Scope::OrdersRead),
    ),
    (
        "ecommerce.v1.OrderService",
        "ListOrders",
        Some(Scope::OrdersRead),
    ),
    (
        "ecommerce.v1.OrderService",
        "CancelOrder",
        Some(Scope::OrdersWrite),
    ),
    (
        "ecommerce.v1.OrderService",
        "WatchOrder",
        Some(Scope::OrdersRead),
    ),
];

/// The gRPC services the gateway forwards (no other is reachable through it).
pub const PUBLIC_GRPC_SERVICES: [&str; 4] = [
    "ecommerce.v1.ProductService",
    "ecommerce.v1.ReviewService",
    "ecommerce.v1.UserService",
    "ecommerce.v1.OrderService",
];

#[derive(Clone)]
struct Forward {
    edge: Edge,
    client: Client<HttpConnector, Body>,
    /// HTTP/2 without a handshake (h2c prior knowledge), for native gRPC.
    h2: Client<HttpConnector, Body>,
    catalog: Upstream,
    accounts: Upstream,
    orders: Upstream,
    billing: Upstream,
}

/// The `/v1/*` routes. `downstreams` are the gateway's own for catalog, accounts and
/// orders (one breaker per service, whichever face calls it).
pub fn router(settings: &Settings, edge: Edge, downstreams: [Downstream; 3]) -> Router {
    let [catalog, accounts, orders] = downstreams;
    // Each owner's scopes are `owner_of`'s, read from one of its paths.
    let upstream = |service, downstream, path: &str| {
        let (_, read, write) = owner_of(path).unwrap_or((service, None, None));
        Upstream {
            service,
            base: settings.service_url(service),
            local: settings
                .gateway
                .forward_in_process
                .then(|| settings.services.get(service).addr()),
            forwarded: Forwarded::of(service),
            downstream,
            read,
            write,
        }
    };
    let billing = Downstream::of_service(
        crate::SERVICE.as_str(),
        "billing",
        resilience::downstream::Policy::from_outbound(&settings.outbound),
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.outbound.timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector.clone());
    let h2 = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .http2_only(true)
        .build(connector);
    let forward = Forward {
        edge,
        client,
        h2,
        catalog: upstream(ServiceName::Catalog, catalog, "/v1/products"),
        accounts: upstream(ServiceName::Accounts, accounts, "/v1/users"),
        orders: upstream(ServiceName::Orders, orders, "/v1/orders"),
        billing: upstream(ServiceName::Billing, billing, "/v1/payments"),
    };
    let mut router = Router::new().route("/v1/{*rest}", any(pass));
    for service in PUBLIC_GRPC_SERVICES {
        router = router.route(
            &format!("/{service}/{{method}}"),
            axum::routing::post(pass_grpc),
        );
    }
    router.with_state(Arc::new(forward))
}

impl Forward {
    /// The owner of a public gRPC service.
    fn grpc_upstream(&self, service: &str) -> Option<&Upstream> {
        match service {
            "ecommerce.v1.ProductService" | "ecommerce.v1.ReviewService" => Some(&self.catalog),
            "ecommerce.v1.UserService" => Some(&self.accounts),
            "ecommerce.v1.OrderService" => Some(&self.orders),
            _ => None,
        }
    }

    fn upstream(&self, path: &str) -> Option<&Upstream> {
        match owner_of(path)?.0 {
            ServiceName::Catalog => Some(&self.catalog),
            ServiceName::Accounts => Some(&self.accounts),
            ServiceName::Orders => Some(&self.orders),
            ServiceName::Billing => Some(&self.billing),
            _ => None,
        }
    }
}

/// The service that owns a `/v1/` path, and the scopes its reads and its writes need
/// (`None`: public reads; no writes at all for billing's).
pub fn owner_of(path: &str) -> Option<(ServiceName, Option<Scope>, Option<Scope>)> {
    let first = path.strip_prefix("/v1/")?.split('/').next()?;
    Some(match first {
        "products" => (ServiceName::Catalog, None, Some(Scope::CatalogWrite)),
        "users" => (
            ServiceName::Accounts,
            Some(Scope::AccountsRead),
            Some(Scope::AccountsWrite),
        ),
        "orders" => (
            ServiceName::Orders,
            Some(Scope::OrdersRead),
            Some(Scope::OrdersWrite),
        ),
        "payments" | "analytics" => (ServiceName::Billing, Some(Scope::BillingRead), None),
        _ => return None,
    })
}

/// The scope `method` on `path` needs: `None` for a path no service owns, `Some(None)`
/// for a public read.
pub fn scope_of_rest(path: &str, method: &Method) -> Option<Option<Scope>> {
    let (_, read, write) = owner_of(path)?;
    Some(if reads(method) { read } else { write })
}

/// Whether `method` only reads.
fn reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn pass(State(forward): State<Arc<Forward>>, request: Request) -> Response {
    let caller = match forward.edge.caller(request.headers()) {
        Ok(caller) => caller,
        Err(problem) => return problem.into_response(),
    };
    let Some(upstream) = forward.upstream(request.uri().path()) else {
        return Problem::not_found("no resource lives at this path").into_response();
    };
    let read = reads(request.method());
    let needed = if read {
        upstream.read
    } else {
        match upstream.write {
            Some(scope) => Some(scope),
            None => {
                // Reads only (billing's): RFC 9110 §15.5.6 wants what is allowed.
                let mut refused = Problem::new(Kind::MethodNotAllowed)
                    .with_detail("this resource does not accept that method")
                    .into_response();
                refused
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return refused;
            }
        }
    };
    if let Some(scope) = needed
        && let Err(problem) = caller.require(scope)
    {
        return problem.into_response();
    }
    let peer = Edge::peer(request.extensions());
    let admitted = match forward.edge.admission.admit(&caller, peer, needed, !read) {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let _forget = (!read).then(|| forward.edge.forget_after(None));
    let response = send(&forward, upstream, &caller, request, Protocol::Http(read)).await;
    admitted.hold(response)
}

/// How a request goes upstream.
#[derive(Clone, Copy)]
enum Protocol {
    /// REST; `true` for a read, which may be retried.
    Http(bool),
    Grpc,
    GrpcWeb,
}

/// A gRPC or gRPC-Web call to a public service: the method's scope checked against the
/// `authorization` metadata, then forwarded as it is.
async fn pass_grpc(
    State(forward): State<Arc<Forward>>,
    axum::extract::Path(method): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let reply = |problem: Problem| server::grpc::reply(problem, content_type.as_ref());
    let service = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let Some(&(_, _, needed)) = GRPC_METHODS
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
    else {
        return reply(
            Problem::new(Kind::MethodNotAllowed).with_detail("no such gRPC method at the gateway"),
        );
    };
    let Some(upstream) = forward.grpc_upstream(&service) else {
        return reply(Problem::new(Kind::MethodNotAllowed).with_detail("no such gRPC service"));
    };
    let caller = match forward.edge.caller(request.headers()) {
        Ok(caller) => caller,
        Err(problem) => return reply(problem),
    };
    if let Some(scope) = needed
        && let Err(problem) = caller.require(scope)
    {
        return reply(problem);
    }
    let peer = Edge::peer(request.extensions());
    let write = needed.is_some_and(Scope::writes);
    let admitted = match forward.edge.admission.admit(&caller, peer, needed, write) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            // The refusal in gRPC's terms (shed or over a limit), keeping its RateLimit
            // fields and Retry-After.
            let headers = refusal.headers().clone();
            let problem = if refusal.status() == http::StatusCode::SERVICE_UNAVAILABLE {
                Problem::unavailable("the gateway is busy; reads wait while writes finish")
            } else {
                Problem::new(Kind::RateLimited).with_detail("over the key's rate or concurrency")
            };
            let mut answer = reply(problem);
            for name in [RATELIMIT, RATELIMIT_POLICY, header::RETRY_AFTER] {
                for value in headers.get_all(&name) {
                    answer.headers_mut().append(name.clone(), value.clone());
                }
            }
            return answer;
        }
    };
    let web = content_type
        .as_ref()
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"));
    let protocol = if web {
        Protocol::GrpcWeb
    } else {
        Protocol::Grpc
    };
    let _forget = write.then(|| forward.edge.forget_after(None));
    let response = send(&forward, upstream, &caller, request, protocol).await;
    admitted.hold(response)
}

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `request` to `upstream` for `caller`: the target rewritten, hop-by-hop headers and the
/// caller's credentials replaced by the gateway's token, this request's correlation and
/// trace, and the callee's budget from what is left of this one.
async fn send(
    forward: &Forward,
    upstream: &Upstream,
    caller: &crate::keys::Caller,
    request: Request,
    protocol: Protocol,
) -> Response {
    let token = forward.edge.token(caller);
    let (parts, body) = request.into_parts();
    // The services cap what they read; a body declared larger is refused here, before
    // it travels, and one that streams past the cap is cut off on the way.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > server::extract::MAX_BODY_BYTES) {
        let problem = Problem::new(Kind::PayloadTooLarge).with_detail(format!(
            "the body must be at most {} bytes",
            server::extract::MAX_BODY_BYTES
        ));
        return match protocol {
            Protocol::Http(_) => problem.into_response(),
            Protocol::Grpc | Protocol::GrpcWeb => {
                server::grpc::reply(problem, parts.headers.get(header::CONTENT_TYPE))
            }
        };
    }
    let body = Body::new(http_body_util::Limited::new(
        body,
        server::extract::MAX_BODY_BYTES,
    ));
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    // REST to an owner this process serves: its router, in process (gRPC and gRPC-Web
    // keep the socket, where HTTP/2 framing and trailers are hyper's to get right).
    let local = match protocol {
        Protocol::Http(_) => upstream.local.and_then(server::local::find),
        Protocol::Grpc | Protocol::GrpcWeb => None,
    };
    // In process, the path is all the owner's router reads; over a socket, the owner's
    // address goes with it.
    let uri: Uri = if local.is_some() {
        parts.uri.clone()
    } else {
        match format!("{}{target}", upstream.base).parse() {
            Ok(uri) => uri,
            Err(_) => {
                return Problem::not_found("no resource lives at this path").into_response();
            }
        }
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if matches!(protocol, Protocol::Grpc) {
        // gRPC requires `te: trailers` (the one hop-by-hop value HTTP/2 allows).
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.insert(server::identity::HEADER, token);
    let retryable = matches!(protocol, Protocol::Http(true));
    // Sent once: a body streams through and cannot be replayed, so only a read retries.
    let body = Mutex::new(Some(body));
    let method = parts.method;
    let service = upstream.service;
    let client = match protocol {
        Protocol::Grpc => &forward.h2,
        Protocol::Http(_) | Protocol::GrpcWeb => &forward.client,
    };
    // Counted by handles made once (no registry lookup per request).
    if local.is_some() {
        upstream.forwarded.in_process.increment(1);
    } else {
        upstream.forwarded.socket.increment(1);
    }
    let answer = Edge::acting_for(
        caller,
        upstream.downstream.call(retryable, |attempt| {
            let mut request = http::Request::new(
                body.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .unwrap_or_else(Body::empty),
            );
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            // Inside the call: traced, its `traceparent` names the call's own span.
            for (name, value) in telemetry::context::outbound_headers() {
                if let Ok(value) = HeaderValue::try_from(value) {
                    request
                        .headers_mut()
                        .insert(HeaderName::from_static(name), value);
                }
            }
            let (name, value) = match protocol {
                Protocol::Http(_) => {
                    let millis = u64::try_from(attempt.budget.as_millis()).unwrap_or(u64::MAX);
                    (
                        HeaderName::from_static(server::REQUEST_TIMEOUT_HEADER),
                        HeaderValue::from(millis.max(1)),
                    )
                }
                Protocol::Grpc | Protocol::GrpcWeb => (
                    HeaderName::from_static("grpc-timeout"),
                    HeaderValue::try_from(telemetry::deadline::format_grpc_timeout(attempt.budget))
                        .unwrap_or_else(|_| HeaderValue::from_static("1S")),
                ),
            };
            request.headers_mut().insert(name, value);
            match &local {
                Some(owner) => {
                    // The token tells the owner's shutdown a request is in its hands.
                    let (router, in_flight) = owner.call();
                    // Boxed: the owner's whole stack is one large future, moved by
                    // every future around it otherwise.
                    let answered = Box::pin(tower::ServiceExt::oneshot(router, request));
                    futures::future::Either::Left(async move {
                        let Ok(response) = answered.await;
                        drop(in_flight);
                        if let Some(failed) = owner_failed(service, protocol, &response) {
                            return Err(failed);
                        }
                        // What the owner's own stack left on the response (its error
                        // label) stays there, as over a socket.
                        let (mut parts, body) = response.into_parts();
                        parts.extensions.clear();
                        Ok(Response::from_parts(parts, body))
                    })
                }
                None => {
                    let sent = client.request(request);
                    futures::future::Either::Right(async move {
                        let response =
                            sent.await.map_err(|err| forwarding_failed(&err, service))?;
                        match owner_failed(service, protocol, &response) {
                            Some(failed) => Err(failed),
                            None => Ok(response.map(Body::new)),
                        }
                    })
                }
            }
        }),
    )
    .await;
    match answer {
        // An owner's router in process answers without a connection of its own: nothing
        // hop-by-hop to strip (hyper adds those when it writes, not the services).
        Ok(response) if local.is_some() => response,
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body)
        }
        Err(problem) => match protocol {
            Protocol::Http(_) => problem.into_response(),
            Protocol::Grpc | Protocol::GrpcWeb => {
                server::grpc::reply(problem, content_type.as_ref())
            }
        },
    }
}

/// An owner's own failure — a 5xx, or a gRPC server code in a trailers-only answer — as
/// the gateway's problem, as a gRPC callee's is (`Problem::from_downstream`: a
/// dependency's 500 never surfaces as ours). As an error it is the owner's breaker's to
/// count, and a read's to retry; passed through as an answer it was neither.
fn owner_failed<B>(
    service: ServiceName,
    protocol: Protocol,
    response: &http::Response<B>,
) -> Option<Problem> {
    let headers = response.headers();
    match protocol {
        Protocol::Http(_) => {
            let status = response.status();
            if !status.is_server_error() {
                return None;
            }
            if status == http::StatusCode::GATEWAY_TIMEOUT {
                return Some(
                    Problem::new(Kind::Timeout)
                        .with_detail(format!("{service} did not answer in time")),
                );
            }
            let mut problem =
                Problem::unavailable(format!("{service} is unavailable ({})", status.as_u16()));
            if let Some(after) = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(resilience::retry::parse_retry_after)
            {
                problem = problem.with_retry_after(after);
            }
            Some(problem)
        }
        Protocol::Grpc | Protocol::GrpcWeb => {
            if !server::grpc::server_fault(headers) {
                return None;
            }
            let status = problem::grpc_status_of(headers)?;
            Some(Problem::from_downstream(service.as_str(), &status))
        }
    }
}

/// What a failed forward tells the client. A body that went past the cap or broke on
/// the client's side is the client's problem (413, 400: not counted against the
/// downstream's breaker); anything else is the downstream being out of reach.
fn forwarding_failed(err: &(dyn std::error::Error + 'static), service: ServiceName) -> Problem {
    let causes = || std::iter::successors(Some(err), |e| e.source());
    if causes().any(|c| c.is::<http_body_util::LengthLimitError>()) {
        return Problem::new(Kind::PayloadTooLarge).with_detail(format!(
            "the body must be at most {} bytes",
            server::extract::MAX_BODY_BYTES
        ));
    }
    if causes().any(|c| c.is::<axum::Error>()) {
        return Problem::invalid_request("the request body could not be read to its end");
    }
    tracing::debug!(%err, %service, "forwarding failed");
    Problem::unavailable(format!("{service} could not be reached"))
}

/// Drops the headers that belong to one connection, not to the message (RFC 9110
/// §7.6.1): the fixed list and whatever `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("idempotency-key", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "idempotency-key"]);
    }
}
