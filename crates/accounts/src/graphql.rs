//! Accounts' subgraph (`POST /graphql`): `User`, the entity it owns
//! (`@key(fields: "id")`), which catalog's reviews and orders' orders name by id. Each
//! resolver translates to a use case of [`Accounts`].

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, EmptyMutation, ID, Object};
use problem::{GraphqlError, Problem};
use server::graphql::shaped_error;

use crate::app::{Accounts, MAX_BATCH};
use crate::domain::{self, UserId};

/// `POST /graphql`, serving the subgraph over `accounts`.
pub fn router(accounts: Accounts, settings: &settings::Settings) -> axum::Router {
    let schema = server::graphql::subgraph_schema(Query, EmptyMutation, settings);
    let accounts = Arc::new(accounts);
    let per_operation: server::graphql::PerOperation = Arc::new(move |operation| {
        operation.data(
            DataLoader::new(
                UsersLoader(Arc::clone(&accounts)),
                server::graphql::spawn_in_context,
            )
            .max_batch_size(MAX_BATCH),
        )
    });
    server::graphql::subgraph(schema, per_operation, settings.gateway.graphql.timeout)
}

/// The subgraph's SDL, as a router composes it (`graphql/subgraphs/accounts.graphql`).
pub fn sdl() -> String {
    server::graphql::subgraph_sdl(Query, EmptyMutation)
}

/// Users by id, batched: every author a router asks this subgraph to resolve at once
/// (`_entities`, a page of reviews' authors) in one read.
struct UsersLoader(Arc<Accounts>);

impl Loader<i64> for UsersLoader {
    type Value = User;
    type Error = GraphqlError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let ids: Vec<UserId> = keys.iter().copied().map(UserId).collect();
        let found = self
            .0
            .users_by_id(&ids)
            .await
            .map_err(|e| GraphqlError::from(Problem::from(e)))?;
        Ok(found.found.into_iter().map(|u| (u.id.0, User(u))).collect())
    }
}

/// A user of the shop.
#[derive(Clone)]
pub struct User(domain::User);

/// A user of the shop. An answer holding a user is private: no shared cache keeps it.
#[Object(cache_control(private))]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.0.to_string())
    }

    async fn name(&self) -> &str {
        self.0.name.as_str()
    }

    async fn email(&self) -> &str {
        self.0.email.as_str()
    }
}

pub struct Query;

#[Object]
impl Query {
    /// One user; null if there is none with this id.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<User>> {
        // Accounts' ids are positive integers; anything else names nothing.
        let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
            return Ok(None);
        };
        let loader = ctx.data::<DataLoader<UsersLoader>>()?;
        loader.load_one(id).await.map_err(shaped_error)
    }

    /// A user a router asks for by its key.
    #[graphql(entity)]
    async fn find_user_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<User>> {
        self.user(ctx, id).await
    }
}
