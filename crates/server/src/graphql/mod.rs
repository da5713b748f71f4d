//! A service's own GraphQL face: its **subgraph** (Apollo Federation 2, through
//! async-graphql's federation support), so that a router that is not ours — Apollo
//! Router, `@apollo/gateway`, Cosmo, Hive Gateway — can compose catalog, accounts and
//! orders in place of Brigade's gateway. Each owning service serves `POST /graphql` with
//! its types, `@key` on the entities it owns, `_service { sdl }` and `_entities`.
//!
//! The gateway's own schema (in the `gateway` crate) stays the public face with the
//! cost model, buckets and subscriptions; a subgraph carries simpler guards — depth,
//! a field count (async-graphql's complexity, one per field), the body cap and a time
//! limit — as a router in front brings its own demand control.

mod conform;

use std::sync::Arc;

use async_graphql::{EmptySubscription, ObjectType, Schema, SchemaBuilder};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use problem::{GraphqlError, Kind, Problem};

pub use conform::{Conform, MAX_VISITS, conform};

/// What the edge set on the HTTP request a GraphQL operation came in (the client's
/// identity and scope among them), for resolvers that need it.
pub struct HttpExtensions(pub http::Extensions);

/// A subgraph's schema: federation on, the gateway's depth and cost settings as its
/// depth and field-count limits, introspection as the profile says. (`_service` answers
/// in every profile: a router needs it to compose.)
pub fn subgraph_schema<Q, M>(
    query: Q,
    mutation: M,
    settings: &settings::Settings,
) -> Schema<Q, M, EmptySubscription>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    let graphql = &settings.gateway.graphql;
    let builder = Schema::build(query, mutation, EmptySubscription)
        // First: outermost (see `Conform`).
        .extension(Conform::bounded())
        .enable_federation()
        .limit_depth(graphql.max_depth as usize)
        .limit_complexity(graphql.max_cost as usize)
        .limit_recursive_depth((graphql.max_depth as usize * 2).max(32));
    finish(builder, graphql.introspection(settings.profile))
}

fn finish<Q, M>(
    builder: SchemaBuilder<Q, M, EmptySubscription>,
    introspection: bool,
) -> Schema<Q, M, EmptySubscription>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    if introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The subgraph SDL a router composes (what `_service { sdl }` answers).
pub fn subgraph_sdl<Q, M>(query: Q, mutation: M) -> String
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    Schema::build(query, mutation, EmptySubscription)
        .enable_federation()
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().federation())
}

/// What a subgraph adds to each operation before it runs (its fresh DataLoaders).
pub type PerOperation = Arc<dyn Fn(async_graphql::Request) -> async_graphql::Request + Send + Sync>;

struct Face<Q, M>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    schema: Schema<Q, M, EmptySubscription>,
    per_operation: PerOperation,
    timeout: std::time::Duration,
}

impl<Q, M> Clone for Face<Q, M>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    fn clone(&self) -> Self {
        Self {
            schema: self.schema.clone(),
            per_operation: Arc::clone(&self.per_operation),
            timeout: self.timeout,
        }
    }
}

/// `POST /graphql` serving `schema`, each operation under `timeout`.
pub fn subgraph<Q, M>(
    schema: Schema<Q, M, EmptySubscription>,
    per_operation: PerOperation,
    timeout: std::time::Duration,
) -> Router
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    Router::new()
        .route("/graphql", post(execute::<Q, M>))
        .with_state(Face {
            schema,
            per_operation,
            timeout,
        })
}

async fn execute<Q, M>(State(face): State<Face<Q, M>>, request: Request) -> Response
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
{
    let (parts, body) = request.into_parts();
    let bytes = match crate::extract::body_bytes(Request::from_parts(parts.clone(), body)).await {
        Ok(bytes) => bytes,
        Err(problem) => return refused(problem),
    };
    let operation: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(operation) => operation,
        Err(err) => {
            return refused(Problem::invalid_request(format!(
                "the body is not a GraphQL request: {err}"
            )));
        }
    };
    let operation = (face.per_operation)(operation.data(HttpExtensions(parts.extensions)));
    let deadline = tokio::time::Instant::now() + face.timeout;
    let execution = telemetry::deadline::scope(deadline, face.schema.execute(operation));
    let response = match tokio::time::timeout_at(deadline, execution).await {
        Ok(response) => response,
        Err(_) => async_graphql::Response::from_errors(vec![server_error(
            Problem::new(Kind::Timeout).with_detail(format!(
                "the operation did not finish within {:?}",
                face.timeout
            )),
        )]),
    };
    axum::Json(response).into_response()
}

/// A request that is not a GraphQL operation: GraphQL-over-HTTP's 4xx with an `errors`
/// list, each error carrying the error table's extensions.
fn refused(problem: Problem) -> Response {
    let status = problem.kind().http_status();
    let response = async_graphql::Response::from_errors(vec![server_error(problem)]);
    (status, axum::Json(response)).into_response()
}

/// A problem as a request-level GraphQL error.
pub fn server_error(problem: Problem) -> async_graphql::ServerError {
    let error = field_error(problem);
    let mut server = async_graphql::ServerError::new(error.message, None);
    server.extensions = error.extensions;
    server
}

/// A problem as a GraphQL field error, with the error table's extensions (logged once,
/// here, as every face logs its problems).
pub fn field_error(problem: Problem) -> async_graphql::Error {
    shaped_error(GraphqlError::from(problem))
}

/// An already shaped problem as a GraphQL field error.
pub fn shaped_error(shaped: GraphqlError) -> async_graphql::Error {
    let mut error = async_graphql::Error::new(shaped.message);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    for (name, value) in shaped.extensions {
        if let Ok(value) = async_graphql::Value::from_json(value) {
            extensions.set(name, value);
        }
    }
    error.extensions = Some(extensions);
    error
}

/// DataLoader's spawner for batches that run in a task of their own: the task keeps the
/// operation's context (correlation ID, trace, deadline), so the batch's calls carry it.
pub fn spawn_in_context(batch: BoxFuture<'static, ()>) {
    let context = telemetry::context::current();
    tokio::spawn(async move {
        match context {
            Some(context) => telemetry::context::scope(context, batch).await,
            None => batch.await,
        }
    });
}
