//! The gateway's HTTP routes: `POST /graphql` (a GraphQL request as JSON), executed with
//! per-operation DataLoaders.

use std::sync::Arc;

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::routing::post;

use crate::app::Gateway;
use crate::graphql::{self, GatewaySchema};

#[derive(Clone)]
struct Face {
    gateway: Arc<Gateway>,
    schema: GatewaySchema,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let schema = graphql::schema(Arc::clone(&gateway));
    Router::new()
        .route("/graphql", post(execute))
        .with_state(Face { gateway, schema })
}

async fn execute(State(face): State<Face>, request: GraphQLRequest) -> GraphQLResponse {
    let loaders = graphql::loaders(&face.gateway);
    graphql::execute(&face.schema, request.into_inner(), loaders)
        .await
        .into()
}
