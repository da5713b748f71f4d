//! Orders' subgraph (`POST /graphql`): `Order`, the entity it owns (`@key(fields:
//! "id")`), `User.orders` on accounts' `User` entity, and an order line's product as a
//! reference to catalog's `Product`. `placeOrder` keeps its `idempotencyKey` as REST
//! keeps its header. Each resolver translates to a use case of [`Orders`].
//! (`orderUpdated` stays at Brigade's gateway: a subscription through a router needs
//! the router's own subscription support.)

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use idempotency::GraphqlWrite;
use problem::{FieldError, Problem};
use server::graphql::{HttpExtensions, field_error};

use crate::app::{Orders, OrdersError};
use crate::domain::{self, OrderId, OrderRequest, UserId};

/// Most orders one page holds.
const MAX_PAGE: i32 = 200;

/// `POST /graphql`, serving the subgraph over `orders`.
pub fn router(orders: Arc<Orders>, settings: &settings::Settings) -> axum::Router {
    let schema = server::graphql::subgraph_schema(Query, Mutation, settings);
    let per_operation: server::graphql::PerOperation =
        Arc::new(move |operation| operation.data(Arc::clone(&orders)));
    server::graphql::subgraph(schema, per_operation, settings.gateway.graphql.timeout)
}

/// The subgraph's SDL, as a router composes it (`graphql/subgraphs/orders.graphql`).
pub fn sdl() -> String {
    server::graphql::subgraph_sdl(Query, Mutation)
}

fn orders<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Orders>> {
    ctx.data::<Arc<Orders>>()
}

/// Where an order is: accepted (`PENDING`), stock reserved (`CONFIRMED`) or refused
/// (`REJECTED`), charged (`PAID`), or called off (`CANCELLED`, its stock given back and
/// a charge refunded).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Paid,
    Cancelled,
}

impl From<domain::Status> for OrderStatus {
    fn from(status: domain::Status) -> Self {
        match status {
            domain::Status::Pending => Self::Pending,
            domain::Status::Confirmed => Self::Confirmed,
            domain::Status::Rejected => Self::Rejected,
            domain::Status::Paid => Self::Paid,
            domain::Status::Cancelled => Self::Cancelled,
        }
    }
}

/// An order as this face shows it (and a key keeps it for a replay).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Order {
    id: String,
    user_id: i64,
    status: OrderStatus,
    total_minor: i64,
    currency: String,
    items: Vec<OrderItem>,
    history: Vec<OrderTransition>,
}

impl From<domain::Order> for Order {
    fn from(o: domain::Order) -> Self {
        Self {
            id: o.id.to_string(),
            user_id: o.user_id.0,
            status: o.status.into(),
            total_minor: o.total_minor,
            currency: o.currency,
            items: o
                .lines
                .iter()
                .map(|l| OrderItem {
                    product_id: l.product_id.0,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            history: o
                .history
                .into_iter()
                .map(|t| OrderTransition {
                    status: t.status.into(),
                    at: t.at,
                    reason: (!t.reason.is_empty()).then_some(t.reason),
                })
                .collect(),
        }
    }
}

/// Integer cents as the decimal amount clients read.
fn money_of(minor: i64) -> f64 {
    minor as f64 / 100.0
}

/// An order: accepted at once, then processed behind the scenes; its `history` says
/// how far it got, and when. An answer holding an order is never cached.
#[Object(cache_control(private, no_cache))]
impl Order {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }

    async fn status(&self) -> OrderStatus {
        self.status
    }

    /// What it costs, in `currency`.
    async fn total(&self) -> f64 {
        money_of(self.total_minor)
    }

    async fn currency(&self) -> &str {
        &self.currency
    }

    async fn items(&self) -> &[OrderItem] {
        &self.items
    }

    /// Every state it has been in, oldest first.
    async fn history(&self) -> &[OrderTransition] {
        &self.history
    }

    /// Who placed it.
    async fn user(&self) -> User {
        User { id: self.user_id }
    }
}

/// One line of an order, priced when it was placed.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderItem {
    product_id: i64,
    quantity: i64,
    unit_price_minor: i64,
}

#[Object]
impl OrderItem {
    /// The product as catalog has it now (null if it has since been deleted).
    async fn product(&self) -> Option<Product> {
        Some(Product {
            id: ID(self.product_id.to_string()),
        })
    }

    async fn quantity(&self) -> i32 {
        i32::try_from(self.quantity).unwrap_or(i32::MAX)
    }

    /// Its price per unit when the order was placed.
    async fn unit_price(&self) -> f64 {
        money_of(self.unit_price_minor)
    }
}

/// One state an order entered.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderTransition {
    status: OrderStatus,
    /// Unix milliseconds.
    at: i64,
    reason: Option<String>,
}

#[Object]
impl OrderTransition {
    async fn status(&self) -> OrderStatus {
        self.status
    }

    /// When, in RFC 3339 (UTC, milliseconds).
    async fn at(&self) -> String {
        server::rest::rfc3339(self.at)
    }

    /// Why, for a refusal or a cancellation.
    async fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// A product in the catalog, owned by catalog's subgraph: here only its key.
#[derive(SimpleObject)]
#[graphql(unresolvable = "id")]
pub struct Product {
    id: ID,
}

/// A user of the shop (accounts' entity): orders adds their orders.
pub struct User {
    id: i64,
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// Their orders, oldest first, a page at a time (`first` 1 to 200; `after` the
    /// `pageInfo.endCursor` of the page before).
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<OrderConnection> {
        // Refused as the gateway refuses them, naming the arguments as the schema does.
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(field_error(Problem::validation(vec![FieldError::new(
                "first",
                format!("must be between 1 and {MAX_PAGE}"),
            )])));
        }
        let page = server::rest::PageQuery {
            limit: Some(i64::from(first)),
            cursor: after,
        }
        .parse()
        .map_err(|_| {
            field_error(Problem::validation(vec![FieldError::new(
                "after",
                "is not a cursor this API returned",
            )]))
        })?;
        let rows = orders(ctx)?
            .orders_of(UserId(self.id), page.after, page.limit + 1)
            .await
            .map_err(|e| field_error(e.into()))?;
        let listed = server::rest::Page::from_rows(rows, page.limit, |o| o.seq, Order::from);
        Ok(OrderConnection {
            nodes: listed.items,
            page_info: PageInfo {
                has_next_page: listed.next_cursor.is_some(),
                end_cursor: listed.next_cursor,
            },
        })
    }
}

/// A page of orders.
#[derive(SimpleObject)]
pub struct OrderConnection {
    pub nodes: Vec<Order>,
    pub page_info: PageInfo,
}

/// Where a page ends, and whether another follows.
#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass it as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// An order to place.
#[derive(InputObject, serde::Serialize)]
pub struct PlaceOrderInput {
    pub user_id: ID,
    pub items: Vec<OrderLineInput>,
}

/// One product and how many of it.
#[derive(InputObject, serde::Serialize)]
pub struct OrderLineInput {
    pub product_id: ID,
    pub quantity: i32,
}

/// An id the client sent: orders', users' and products' ids; `None` names nothing.
fn order_id(id: &ID) -> Option<OrderId> {
    OrderId::parse(id).ok()
}

pub struct Query;

#[Object]
impl Query {
    /// One order; null if there is none with this id.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let Some(id) = order_id(&id) else {
            return Ok(None);
        };
        match orders(ctx)?.order(&id).await {
            Ok(order) => Ok(Some(order.into())),
            Err(OrdersError::NotFound(_)) => Ok(None),
            Err(err) => Err(field_error(err.into())),
        }
    }

    /// An order a router asks for by its key.
    #[graphql(entity)]
    async fn find_order_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Order>> {
        self.order(ctx, id).await
    }

    /// A user a router asks for by its key, to add their orders.
    #[graphql(entity)]
    async fn find_user_by_id(&self, id: ID) -> Option<User> {
        id.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(|id| User { id })
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Places an order: accepted at once (`PENDING`), then reserved, charged and paid
    /// behind the scenes — follow it with `order(id)`. The same `idempotencyKey` again
    /// answers the same order and places nothing more.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
        idempotency_key: String,
    ) -> async_graphql::Result<Order> {
        let write = GraphqlWrite::<Order>::new(
            ctx.data_opt::<HttpExtensions>().map(|e| &e.0),
            "Mutation.placeOrder",
            &input,
            Some(&idempotency_key),
        )
        .map_err(field_error)?;
        // Ids that are not integers are ids no user or product has: 0 is refused below
        // with the field's name.
        let number = |id: &ID| id.parse::<i64>().unwrap_or(0);
        let lines: Vec<(i64, i64)> = input
            .items
            .iter()
            .map(|line| (number(&line.product_id), i64::from(line.quantity)))
            .collect();
        let asked = OrderRequest::parse(number(&input.user_id), &lines).map_err(|errors| {
            field_error(Problem::validation(
                errors
                    .into_iter()
                    .map(|(field, why)| FieldError::new(graphql_field(&field), why))
                    .collect(),
            ))
        })?;
        orders(ctx)?
            .place(&write, asked, |order| Ok(Order::from(order)))
            .await
            .map_err(field_error)
    }

    /// Cancels a pending, confirmed or paid order (a paid one is refunded); cancelling
    /// twice is cancelling once.
    async fn cancel_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        let Some(parsed) = order_id(&id) else {
            return Err(field_error(Problem::not_found(format!(
                "no order {:?} exists",
                id.as_str()
            ))));
        };
        let cancelled = orders(ctx)?
            .cancel(&parsed)
            .await
            .map_err(|e| field_error(e.into()))?;
        Ok(cancelled.into())
    }
}

/// The domain's field names (`user_id`, `items[2].product_id`) as the mutation's input
/// spells them (`input.userId`, `input.items[2].productId`).
fn graphql_field(field: &str) -> String {
    format!(
        "input.{}",
        field
            .replace("user_id", "userId")
            .replace("product_id", "productId")
    )
}
