//! Catalog's subgraph (`POST /graphql`): the products and reviews it owns, with
//! `Product` an entity (`@key(fields: "id")`) other subgraphs name, and a review's author
//! a reference to accounts' `User`. Composed with accounts' and orders' subgraphs it
//! serves the gateway's schema (see `graphql/subgraphs/` and ARCHITECTURE.md); each
//! resolver translates to a use case of [`Catalog`].

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, ID, Object, SimpleObject};
use idempotency::GraphqlWrite;
use problem::{FieldError, GraphqlError, Problem};
use server::graphql::{HttpExtensions, field_error, shaped_error};

use crate::app::Catalog;
use crate::domain::{self, NewProduct, ProductId};

/// Reviews per product, as the gateway's `Product.reviews` (its first 20).
pub const REVIEWS_PER_PRODUCT: u32 = 20;
/// Most products one `products` call lists.
const MAX_LIST: i32 = 200;
/// Most ids one batch asks for (catalog's batch reads take 200).
const MAX_BATCH: usize = 200;

/// `POST /graphql`, serving the subgraph over `catalog`.
pub fn router(catalog: Catalog, settings: &settings::Settings) -> axum::Router {
    let schema = server::graphql::subgraph_schema(Query, Mutation, settings);
    let catalog = Arc::new(catalog);
    let per_operation: server::graphql::PerOperation = Arc::new(move |operation| {
        operation
            .data(Arc::clone(&catalog))
            .data(
                DataLoader::new(
                    ProductsLoader(Arc::clone(&catalog)),
                    server::graphql::spawn_in_context,
                )
                .max_batch_size(MAX_BATCH),
            )
            .data(
                DataLoader::new(
                    ReviewsLoader(Arc::clone(&catalog)),
                    server::graphql::spawn_in_context,
                )
                .max_batch_size(MAX_BATCH),
            )
    });
    server::graphql::subgraph(schema, per_operation, settings.gateway.graphql.timeout)
}

/// The subgraph's SDL, as a router composes it (`graphql/subgraphs/catalog.graphql`).
pub fn sdl() -> String {
    server::graphql::subgraph_sdl(Query, Mutation)
}

fn catalog<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Catalog>> {
    ctx.data::<Arc<Catalog>>()
}

/// Products by id, batched: every product a router asks this subgraph to resolve at
/// once (`_entities`) in one read.
struct ProductsLoader(Arc<Catalog>);

impl Loader<i64> for ProductsLoader {
    type Value = Product;
    type Error = GraphqlError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let ids: Vec<ProductId> = keys.iter().copied().map(ProductId).collect();
        let found = self
            .0
            .products_by_id(&ids)
            .await
            .map_err(|e| GraphqlError::from(Problem::from(e)))?;
        Ok(found
            .found
            .into_iter()
            .map(|p| (p.id.0, Product::from(&p)))
            .collect())
    }
}

/// `Product.reviews`, batched: every product of an operation in one read.
struct ReviewsLoader(Arc<Catalog>);

impl Loader<i64> for ReviewsLoader {
    type Value = Vec<domain::Review>;
    type Error = GraphqlError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let ids: Vec<ProductId> = keys.iter().copied().map(ProductId).collect();
        let found = self
            .0
            .reviews_of(&ids, REVIEWS_PER_PRODUCT)
            .await
            .map_err(|e| GraphqlError::from(Problem::from(e)))?;
        Ok(found
            .found
            .into_iter()
            .map(|(id, reviews)| (id.0, reviews))
            .collect())
    }
}

/// An id the client sent: catalog's ids are positive integers; anything else names
/// nothing.
fn parse_id(id: &ID) -> Option<i64> {
    id.parse::<i64>().ok().filter(|id| *id > 0)
}

/// A product in the catalog, as this face shows it (and a key keeps it for a replay).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Product {
    id: i64,
    name: String,
    price: f64,
    stock: i32,
}

impl From<&domain::Product> for Product {
    fn from(p: &domain::Product) -> Self {
        Self {
            id: p.id.0,
            name: p.name.as_str().to_owned(),
            price: p.price.to_decimal(),
            // At most i32::MAX by the domain's rule.
            stock: i32::try_from(p.stock.units()).unwrap_or(i32::MAX),
        }
    }
}

/// A product in the catalog. An answer holding products may be cached for 5 s.
#[Object(cache_control(max_age = 5))]
impl Product {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.name
    }

    async fn price(&self) -> f64 {
        self.price
    }

    async fn stock(&self) -> i32 {
        self.stock
    }

    /// Its first reviews, oldest first (at most 20).
    async fn reviews(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Review>> {
        let loader = ctx.data::<DataLoader<ReviewsLoader>>()?;
        let reviews = loader.load_one(self.id).await.map_err(shaped_error)?;
        Ok(reviews
            .unwrap_or_default()
            .into_iter()
            .map(Review)
            .collect())
    }
}

/// A user's review of a product.
pub struct Review(domain::Review);

/// A user's review of a product.
#[Object(cache_control(max_age = 5))]
impl Review {
    async fn id(&self) -> ID {
        ID(self.0.id.0.to_string())
    }

    async fn rating(&self) -> i32 {
        i32::from(self.0.rating.stars())
    }

    async fn comment(&self) -> Option<&str> {
        self.0.comment.as_ref().map(domain::Comment::as_str)
    }

    /// Its author.
    async fn user(&self) -> User {
        User {
            id: ID(self.0.user_id.0.to_string()),
        }
    }
}

/// A user of the shop, owned by accounts' subgraph: here only its key.
#[derive(SimpleObject)]
#[graphql(unresolvable = "id")]
pub struct User {
    id: ID,
}

pub struct Query;

#[Object]
impl Query {
    /// One product; null if there is none with this id.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let Some(id) = parse_id(&id) else {
            return Ok(None);
        };
        let loader = ctx.data::<DataLoader<ProductsLoader>>()?;
        loader.load_one(id).await.map_err(shaped_error)
    }

    /// The first `limit` products (1 to 200), in id order.
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: Option<i32>,
    ) -> async_graphql::Result<Vec<Product>> {
        // An explicit null is the default too (the tutorial's `limit: Int = 20`).
        let limit = limit.unwrap_or(20);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(field_error(Problem::validation(vec![FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_LIST}"),
            )])));
        }
        let listed = catalog(ctx)?
            .products(None, limit.unsigned_abs())
            .await
            .map_err(|e| field_error(e.into()))?;
        Ok(listed.iter().map(|p| Product::from(&**p)).collect())
    }

    /// A product a router asks for by its key.
    #[graphql(entity)]
    async fn find_product_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Product>> {
        self.product(ctx, id).await
    }
}

pub struct Mutation;

/// What `createProduct`'s key covers: every argument but the key.
#[derive(serde::Serialize)]
struct CreateProductArguments<'a> {
    name: &'a str,
    price: f64,
    stock: i32,
}

#[Object]
impl Mutation {
    /// Creates a product. With an `idempotencyKey`, a retry of the same mutation
    /// creates nothing more and answers the first product.
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        name: String,
        price: f64,
        stock: i32,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Product> {
        let write = GraphqlWrite::<Product>::new(
            ctx.data_opt::<HttpExtensions>().map(|e| &e.0),
            "Mutation.createProduct",
            &CreateProductArguments {
                name: &name,
                price,
                stock,
            },
            idempotency_key.as_deref(),
        )
        .map_err(field_error)?;
        let new = NewProduct::parse(&name, price, i64::from(stock))
            .map_err(|errors| field_error(Problem::validation(errors)))?;
        catalog(ctx)?
            .create_product(&write, new, |product| Ok(Product::from(&product)))
            .await
            .map_err(field_error)
    }
}
