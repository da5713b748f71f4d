//! The gateway's HTTP routes: `POST /graphql`, a GraphQL request (or a batch of them) as
//! JSON. The body is read under the platform's size cap (a larger one is a 413 problem,
//! never parsed), a batch longer than `max_batch` is refused before any of it runs, and
//! each operation runs with loaders of its own, counted against its client's cost bucket
//! (the client's IP address, until API keys arrive with the edge).

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
use crate::graphql::{self, GatewaySchema, limits::Client};

#[derive(Clone)]
struct Face {
    gateway: Arc<Gateway>,
    schema: GatewaySchema,
    max_batch: usize,
    timeout: Duration,
}

pub fn router(
    gateway: Arc<Gateway>,
    schema: GatewaySchema,
    settings: &settings::GraphqlSettings,
) -> Router {
    Router::new()
        .route("/graphql", post(execute))
        .route("/graphql/ws", get(subscribe))
        .with_state(Face {
            gateway,
            schema,
            max_batch: usize::try_from(settings.max_batch).unwrap_or(usize::MAX),
            timeout: settings.timeout,
        })
}

/// Subscriptions over WebSocket (`graphql-transport-ws`, or the older `graphql-ws`).
async fn subscribe(
    State(face): State<Face>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let data = graphql::spawned_loaders(&face.gateway);
            GraphQLWebSocket::new(stream, face.schema.clone(), protocol)
                .with_data(data)
                .serve()
        })
}

async fn execute(State(face): State<Face>, request: Request) -> Response {
    let client = Client(
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
    );
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
    // Each operation runs under the whole execution's budget (an earlier deadline of the
    // caller's wins), and every backend call it makes gets what is left of it.
    let run = |request: async_graphql::Request| {
        let (face, client) = (&face, client.clone());
        async move {
            let loaders = graphql::loaders(&face.gateway);
            let deadline = tokio::time::Instant::now() + face.timeout;
            let execution = graphql::execute(&face.schema, request.data(client), loaders);
            let timed =
                tokio::time::timeout_at(deadline, telemetry::deadline::scope(deadline, execution));
            match timed.await {
                Ok(response) => response,
                Err(_) => {
                    async_graphql::Response::from_errors(vec![graphql::limits::server_error(
                        Problem::new(Kind::Timeout).with_detail(format!(
                            "the operation did not finish within {:?}",
                            face.timeout
                        )),
                        None,
                    )])
                }
            }
        }
    };
    match batch {
        BatchRequest::Single(request) => GraphQLResponse::from(run(request).await).into_response(),
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
