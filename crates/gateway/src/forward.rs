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
//! The upstream call goes through the owner's `resilience::Downstream` (the same breaker
//! as the gateway's gRPC calls to it) on pooled keep-alive HTTP/1.1 connections
//! (hyper-util's client); bodies stream both ways, never buffered here. Hop-by-hop
//! headers are dropped (RFC 9110 §7.6.1), and so are the client's `Authorization` and any
//! identity token it sent: the service gets the gateway's token for the caller instead,
//! the correlation ID and trace of this request, and `x-request-timeout-ms` from what is
//! left of its budget. A read (no body) may be retried; anything else is sent once.

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
    downstream: Downstream,
    read: Option<Scope>,
    write: Option<Scope>,
}

#[derive(Clone)]
struct Forward {
    edge: Edge,
    client: Client<HttpConnector, Body>,
    catalog: Upstream,
    accounts: Upstream,
    orders: Upstream,
    billing: Upstream,
}

/// The `/v1/*` routes. `downstreams` are the gateway's own for catalog, accounts and
/// orders (one breaker per service, whichever face calls it).
pub fn router(settings: &Settings, edge: Edge, downstreams: [Downstream; 3]) -> Router {
    let [catalog, accounts, orders] = downstreams;
    let upstream = |service, downstream, read, write| Upstream {
        service,
        base: settings.service_url(service),
        downstream,
        read,
        write,
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
        .build(connector);
    let forward = Forward {
        edge,
        client,
        catalog: upstream(
            ServiceName::Catalog,
            catalog,
            None,
            Some(Scope::CatalogWrite),
        ),
        accounts: upstream(
            ServiceName::Accounts,
            accounts,
            Some(Scope::AccountsRead),
            Some(Scope::AccountsWrite),
        ),
        orders: upstream(
            ServiceName::Orders,
            orders,
            Some(Scope::OrdersRead),
            Some(Scope::OrdersWrite),
        ),
        billing: upstream(
            ServiceName::Billing,
            billing,
            Some(Scope::BillingRead),
            None,
        ),
    };
    Router::new()
        .route("/v1/{*rest}", any(pass))
        .with_state(Arc::new(forward))
}

impl Forward {
    fn upstream(&self, path: &str) -> Option<&Upstream> {
        let first = path.strip_prefix("/v1/")?.split('/').next()?;
        match first {
            "products" => Some(&self.catalog),
            "users" => Some(&self.accounts),
            "orders" => Some(&self.orders),
            "payments" | "analytics" => Some(&self.billing),
            _ => None,
        }
    }
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
                return Problem::new(Kind::MethodNotAllowed)
                    .with_detail("this resource does not accept that method")
                    .into_response();
            }
        }
    };
    if let Some(scope) = needed
        && let Err(problem) = caller.require(scope)
    {
        return problem.into_response();
    }
    let token = forward.edge.token(&caller);
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let uri: Uri = match format!("{}{target}", upstream.base).parse() {
        Ok(uri) => uri,
        Err(_) => return Problem::not_found("no resource lives at this path").into_response(),
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.insert(server::identity::HEADER, token);
    for (name, value) in telemetry::context::outbound_headers() {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    // Sent once: a body streams through and cannot be replayed, so only a read retries.
    let body = Mutex::new(Some(body));
    let method = parts.method;
    let service = upstream.service;
    let client = &forward.client;
    let answer = Edge::acting_for(
        &caller,
        upstream.downstream.call(read, |attempt| {
            let mut request = http::Request::new(
                body.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .unwrap_or_else(Body::empty),
            );
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            let millis = u64::try_from(attempt.budget.as_millis()).unwrap_or(u64::MAX);
            request.headers_mut().insert(
                HeaderName::from_static(server::REQUEST_TIMEOUT_HEADER),
                HeaderValue::from(millis.max(1)),
            );
            let sent = client.request(request);
            async move {
                sent.await.map_err(|err| {
                    tracing::debug!(%err, %service, "forwarding failed");
                    Problem::unavailable(format!("{service} could not be reached"))
                })
            }
        }),
    )
    .await;
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(problem) => problem.into_response(),
    }
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
