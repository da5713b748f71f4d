//! The gateway's HTTP routes: `POST /graphql`, a GraphQL request (or a batch of them) as
//! JSON. The body is read under the platform's size cap (a larger one is a 413 problem,
//! never parsed), a batch longer than `max_batch` is refused before any of it runs, and
//! each operation runs with loaders of its own, counted against its client's cost bucket
//! (its API key, or for anonymous callers their IP address), acting for that client on
//! every call it makes (`edge`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::BatchRequest;
use async_graphql_axum::GraphQLResponse;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use problem::{FieldError, Kind, Problem};

use crate::app::Gateway;
use crate::edge::Edge;
use crate::graphql::answers;
use crate::graphql::limits::{Client, Mutated, OverGet};
use crate::graphql::{self, GatewaySchema};
use crate::keys::Caller;
use axum::http::{StatusCode, header};
use sha2::Digest;

#[derive(Clone)]
struct Face {
    gateway: Arc<Gateway>,
    edge: Edge,
    schema: GatewaySchema,
    max_batch: usize,
    /// Most ids one loader call asks for (1 when `batch_loads` is off).
    load_batch: usize,
    timeout: Duration,
}

pub fn router(
    gateway: Arc<Gateway>,
    edge: Edge,
    schema: GatewaySchema,
    settings: &settings::GraphqlSettings,
    graphiql: bool,
) -> Router {
    let router = Router::new()
        .route("/graphql", post(execute).get(execute_get))
        .route("/graphql/ws", get(subscribe));
    let router = if graphiql {
        router
            .route("/graphiql", get(graphiql_page))
            .route("/graphiql/{asset}", get(graphiql_asset))
    } else {
        router
    };
    router.with_state(Face {
        gateway,
        edge,
        schema,
        max_batch: usize::try_from(settings.max_batch).unwrap_or(usize::MAX),
        load_batch: if settings.batch_loads {
            graphql::MAX_LOAD_BATCH
        } else {
            1
        },
        timeout: settings.timeout,
    })
}

/// GraphiQL's page: its scripts and styles come from the gateway, never a CDN.
async fn graphiql_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/graphiql/index.html"),
    )
        .into_response()
}

/// GraphiQL 3.8.3 and React 18.3.1 (npm, MIT: `assets/graphiql/LICENSES`), kept gzipped
/// in the binary and sent as they are (every browser takes `Content-Encoding: gzip`).
async fn graphiql_asset(axum::extract::Path(asset): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match asset.as_str() {
        "graphiql.min.js" => (
            include_bytes!("../assets/graphiql/graphiql.min.js.gz"),
            "text/javascript",
        ),
        "graphiql.min.css" => (
            include_bytes!("../assets/graphiql/graphiql.min.css.gz"),
            "text/css",
        ),
        "react.production.min.js" => (
            include_bytes!("../assets/graphiql/react.production.min.js.gz"),
            "text/javascript",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../assets/graphiql/react-dom.production.min.js.gz"),
            "text/javascript",
        ),
        _ => return Problem::not_found(format!("no asset {asset}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_ENCODING, "gzip"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// Subscriptions over WebSocket (`graphql-transport-ws`, or the older `graphql-ws`).
/// A message is held to the same cap as a request body, and every operation on the
/// connection is counted against the connecting client's bucket.
async fn subscribe(
    State(face): State<Face>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let caller = match face.edge.caller(&headers) {
        Ok(caller) => caller,
        Err(problem) => return problem.into_response(),
    };
    // The connection counts as one request against the caller's rate (its operations
    // are priced by the cost bucket).
    if let Err(refusal) = face
        .edge
        .admission
        .admit(&caller, Some(peer.ip()), None, false)
    {
        return *refusal;
    }
    let client = client_for(&caller, Some(peer));
    // The connection is served after this handler returns, outside the request's task:
    // its calls act for the caller, in the upgrade request's context.
    let ctx = telemetry::context::current().map(|ctx| ctx.with_client(caller.client()));
    upgrade
        .max_message_size(server::extract::MAX_BODY_BYTES)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let mut data = graphql::spawned_loaders(&face.gateway, face.load_batch);
            data.insert(client);
            data.insert(caller);
            data.insert(graphql::OverWebSocket);
            data.insert(face.edge.keys.clone());
            let edge = face.edge.clone();
            let serve = GraphQLWebSocket::new(stream, face.schema.clone(), protocol)
                .with_data(data)
                .on_connection_init(move |payload| init(edge, payload, peer))
                .serve();
            async move {
                match ctx {
                    Some(ctx) => telemetry::context::scope(ctx, serve).await,
                    None => serve.await,
                }
            }
        })
}

/// A browser cannot set `Authorization` on a WebSocket: it sends the key in the
/// `connection_init` payload instead (`{"Authorization": "Bearer <key>"}`, as Apollo's and
/// graphql-ws's clients do), and the connection's operations are that caller's. A key
/// that is not valid ends the connection (4403 Forbidden, per graphql-transport-ws).
/// (The connection's calls to the services act for the client of the upgrade request,
/// so writes are refused on it: they go over `POST /graphql`, `graphql::OverWebSocket`.)
async fn init(
    edge: Edge,
    payload: serde_json::Value,
    peer: SocketAddr,
) -> async_graphql::Result<async_graphql::Data> {
    let mut data = async_graphql::Data::default();
    let sent = ["Authorization", "authorization"]
        .iter()
        .find_map(|name| payload.get(name))
        .and_then(serde_json::Value::as_str);
    if let Some(sent) = sent {
        let value = axum::http::HeaderValue::from_str(sent)
            .map_err(|_| async_graphql::Error::new("the Authorization value is not valid"))?;
        let caller = edge
            .keys
            .authenticate(Some(&value))
            .map_err(|problem| async_graphql::Error::new(problem.to_string()))?;
        data.insert(client_for(&caller, Some(peer)));
        data.insert(caller);
    }
    Ok(data)
}

/// Who a request is from and the bucket its cost is counted in: its API key's, or for
/// an anonymous caller its peer's IP address.
fn caller_of(face: &Face, request: &Request) -> Result<(Caller, Client), Problem> {
    let caller = face.edge.caller(request.headers())?;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = client_for(&caller, peer);
    Ok((caller, client))
}

fn client_for(caller: &Caller, peer: Option<SocketAddr>) -> Client {
    match caller {
        Caller::Key(principal) => Client(principal.id.to_string()),
        Caller::Anonymous => {
            Client(peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string()))
        }
    }
}

/// One operation under the whole execution's budget (an earlier deadline of the
/// caller's wins); every backend call it makes gets what is left of it, and acts for
/// the caller.
async fn run(
    face: &Face,
    request: async_graphql::Request,
    caller: &Caller,
) -> async_graphql::Response {
    let loaders = graphql::loaders(&face.gateway, face.load_batch);
    let deadline = tokio::time::Instant::now() + face.timeout;
    let execution = graphql::execute(&face.schema, request.data(caller.clone()), loaders);
    let timed = tokio::time::timeout_at(
        deadline,
        Edge::acting_for(caller, telemetry::deadline::scope(deadline, execution)),
    );
    match timed.await {
        Ok(response) => response,
        Err(_) => async_graphql::Response::from_errors(vec![graphql::limits::server_error(
            Problem::new(Kind::Timeout).with_detail(format!(
                "the operation did not finish within {:?}",
                face.timeout
            )),
            None,
        )]),
    }
}

/// An operation's answer: run, or kept from an earlier run (`graphql::answers`).
enum Answered {
    Ran(async_graphql::Response),
    Kept(answers::Hit),
}

/// `request` answered for `client`: from the answers kept for it when one is, else run
/// (and kept, when it is an answer to keep).
async fn answer(
    face: &Face,
    request: async_graphql::Request,
    caller: &Caller,
    client: &Client,
    mutated: &Mutated,
) -> Answered {
    let answers = &face.edge.answers;
    let lookup = answers.lookup(client, &request);
    let request = request.data(client.clone()).data(mutated.clone());
    match lookup {
        answers::Lookup::Hit(hit) => Answered::Kept(hit),
        answers::Lookup::Run => Answered::Ran(run(face, request, caller).await),
        answers::Lookup::Miss(miss) => {
            let response = run(face, request, caller).await;
            answers.keep(miss, &response, mutated);
            Answered::Ran(response)
        }
    }
}

/// A kept answer as `POST /graphql` sends one.
fn kept_response(hit: &answers::Hit) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/graphql-response+json".to_owned(),
            ),
            (header::CACHE_CONTROL, hit.cache_control.clone()),
            (header::AGE, hit.age.to_string()),
        ],
        hit.body(),
    )
        .into_response()
}

/// `GET /graphql?query=…` or, with automatic persisted queries, `?extensions=` naming
/// the query's hash alone: a read an HTTP cache can keep. The answer carries
/// `Cache-Control` from the types it holds (products public for 5 s, a user private,
/// an order never) and an `ETag` of its data; `If-None-Match` with it is a 304.
async fn execute_get(State(face): State<Face>, request: Request) -> Response {
    let (caller, client) = match caller_of(&face, &request) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    // GET only reads.
    let admitted =
        match face
            .edge
            .admission
            .admit(&caller, Edge::peer(request.extensions()), None, false)
        {
            Ok(admitted) => admitted,
            Err(refusal) => return *refusal,
        };
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let asked = match async_graphql::http::parse_query_string(request.uri().query().unwrap_or("")) {
        Ok(asked) => asked,
        Err(err) => {
            return Problem::invalid_request(format!("not a GraphQL request: {err}"))
                .into_response();
        }
    };
    let mutated = Mutated::default();
    let answered = answer(&face, asked.data(OverGet), &caller, &client, &mutated).await;
    let (status, cache, body, data, ok, age) = match answered {
        Answered::Kept(hit) => {
            let body = hit.body();
            let age = Some(hit.age);
            (
                StatusCode::OK,
                hit.cache_control,
                body,
                hit.data.to_vec(),
                true,
                age,
            )
        }
        Answered::Ran(response) => {
            // GET only reads: a mutation is refused as HTTP 405 (GraphQL over HTTP),
            // saying so.
            let refused_method = response.errors.iter().any(|e| {
                e.extensions
                    .as_ref()
                    .and_then(|x| x.get("status"))
                    .is_some_and(|s| *s == async_graphql::Value::from(405))
            });
            let cache = match response.cache_control.value() {
                _ if !response.is_ok() => "no-store".to_owned(),
                // An order (`no_cache`) is never kept, not even by the browser.
                Some(value) if value.contains("no-cache") => "no-store, private".to_owned(),
                Some(value) => value,
                None => "no-cache".to_owned(),
            };
            let Ok(body) = serde_json::to_vec(&response) else {
                return Problem::internal("the GraphQL response did not serialize").into_response();
            };
            // The ETag is of the data alone, and weak: the body around the data (its
            // cost extension) differs from one answer to the next.
            let Ok(data) = serde_json::to_vec(&response.data) else {
                return Problem::internal("the GraphQL data did not serialize").into_response();
            };
            let status = if refused_method {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::OK
            };
            (status, cache, body, data, response.is_ok(), None)
        }
    };
    let digest = sha2::Sha256::digest(&data);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("W/\"{hex}\"");
    let headers = [(header::CACHE_CONTROL, cache), (header::ETAG, etag.clone())];
    // Compared weakly (RFC 9110 §8.8.3.2): `W/"x"` and `"x"` are the same tag.
    let unchanged = if_none_match.is_some_and(|tags| {
        tags.to_str().is_ok_and(|tags| {
            tags.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.trim_start_matches("W/") == format!("\"{hex}\"")
            })
        })
    });
    let mut answer = if unchanged && ok {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (
            status,
            headers,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::ALLOW, "GET, POST".to_owned()),
            ],
            body,
        )
            .into_response()
    };
    // A kept answer says how old it is: no cache after us keeps it past its max-age.
    if let Some(age) = age {
        answer
            .headers_mut()
            .insert(header::AGE, http::HeaderValue::from(age));
    }
    admitted.hold(answer)
}

async fn execute(State(face): State<Face>, request: Request) -> Response {
    let (caller, client) = match caller_of(&face, &request) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let peer = Edge::peer(request.extensions());
    let body = match server::extract::body_bytes(request).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(err) => {
            return Problem::validation(vec![FieldError::new(
                "body",
                format!("is not a GraphQL request (JSON with a `query`): {err}"),
            )])
            .into_response();
        }
    };
    let admitted = match face
        .edge
        .admission
        .admit(&caller, peer, None, writes(&batch))
    {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    // Whether it wrote is known once its operations are parsed (a persisted one is a hash).
    let mutated = Mutated::default();
    let _forget = face.edge.forget_after(Some(mutated.clone()));
    let response = execute_batch(&face, batch, &caller, &client, &mutated).await;
    admitted.hold(response)
}

/// Whether a request may write, for shedding (reads go first): any operation whose text
/// mentions `mutation` — without parsing it twice, and erring toward the writes'
/// reserve (a field or string that merely says "mutation" counts too).
fn writes(batch: &BatchRequest) -> bool {
    batch.iter().any(|r| r.query.contains("mutation"))
}

async fn execute_batch(
    face: &Face,
    batch: BatchRequest,
    caller: &Caller,
    client: &Client,
    mutated: &Mutated,
) -> Response {
    let run = |request: async_graphql::Request| {
        run(
            face,
            request.data(client.clone()).data(mutated.clone()),
            caller,
        )
    };
    match batch {
        BatchRequest::Single(request) => match answer(face, request, caller, client, mutated).await
        {
            Answered::Ran(response) => GraphQLResponse::from(response).into_response(),
            Answered::Kept(hit) => kept_response(&hit),
        },
        BatchRequest::Batch(requests) if requests.len() > face.max_batch => {
            Problem::validation(vec![FieldError::new(
                "body",
                format!(
                    "a batch of {} operations; at most {} are allowed",
                    requests.len(),
                    face.max_batch
                ),
            )])
            .into_response()
        }
        BatchRequest::Batch(requests) => {
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                responses.push(run(request).await);
            }
            GraphQLResponse::from(async_graphql::BatchResponse::Batch(responses)).into_response()
        }
    }
}
