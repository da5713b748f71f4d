//! The GraphQL face: the tutorial's schema (`Product`, `Review`, `User`,
//! `Query.product`, `Query.products`, `Mutation.createProduct`) over the gateway's use
//! cases. It only translates: every field is answered by `app::Gateway`, which asks the
//! service that owns the data.
//!
//! N+1: `Product.reviews` and `Review.user` go through per-operation DataLoaders, so a
//! page of products costs one call for the products, one for all their reviews and one
//! for all the reviews' authors, however long the page.
//!
//! Errors: a field that fails carries the error table's `extensions` (`code`, `type`,
//! `status`, ...) from `problem::GraphqlError`, and its siblings still resolve (partial
//! data where the schema allows null).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Enum, ID, InputObject, Object, Schema, SimpleObject};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use problem::Problem;

use crate::app::{self, Gateway};
use crate::keys::{Caller, Scope};

pub mod answers;
pub mod cost;
pub mod limits;
pub mod persisted;

pub type GatewaySchema = Schema<Query, Mutation, Subscription>;

/// async-graphql's recursion guard over a parsed document (its selections, fragments
/// followed): set above `max_depth`, so that a deep operation is refused by the depth
/// limit, saying so (the parser keeps a fixed nesting limit of its own, 64).
const PARSER_NESTING: usize = 128;

/// The persisted queries' text kept, in all (oldest forgotten first).
const PERSISTED_BYTES: usize = 16 << 20;

/// Most ids one batch call asks for: catalog's and accounts' batch RPCs take 200.
pub const MAX_LOAD_BATCH: usize = 200;

/// Reviews of each product a page shows (`Product.reviews`).
pub const REVIEWS_PER_PRODUCT: u32 = 20;

/// The schema, with the gateway's use cases and its live order feed as its data, `settings`' limits, the
/// clients' cost `buckets`, and introspection as `settings` and `profile` say.
pub fn schema(
    gateway: Arc<Gateway>,
    feed: Arc<crate::live::OrderFeed>,
    settings: &settings::GraphqlSettings,
    profile: settings::Profile,
    buckets: Arc<limits::Buckets>,
) -> GatewaySchema {
    let list_sizes = HashMap::from([(("Product", "reviews"), u64::from(REVIEWS_PER_PRODUCT))]);
    let builder = Schema::build(Query, Mutation, Subscription)
        .data(gateway)
        .data(feed)
        // See PARSER_NESTING (the default, 32, came before the depth limit).
        .limit_recursive_depth(PARSER_NESTING.max(settings.max_depth as usize * 2))
        // First, so outermost: the spec's field order and null propagation over what the
        // cost measure saw as resolved (see server::graphql::Conform). `Limits` bounds
        // fragment expansion itself.
        .extension(server::graphql::Conform::unbounded())
        .extension(limits::Limits::new(settings.clone(), list_sizes, buckets))
        // Automatic persisted queries (see `persisted`).
        .extension(persisted::PersistedQueries::new(PERSISTED_BYTES));
    if settings.introspection(profile) {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The SDL the schema serves (what `graphql/schema.graphql` holds).
pub fn sdl() -> String {
    Schema::build(Query, Mutation, Subscription).finish().sdl()
}

/// One operation's DataLoaders and the batches they have asked to run.
pub struct Loaders {
    pub reviews: DataLoader<ReviewsLoader>,
    pub users: DataLoader<UsersLoader>,
    pub products: DataLoader<ProductsLoader>,
    batches: Batches,
}

/// Batches queued by an operation's loaders, run by [`execute`] in the operation's own
/// task.
type Batches = Arc<std::sync::Mutex<Vec<BoxFuture<'static, ()>>>>;

/// Fresh loaders for one operation (nothing is cached between operations: every answer
/// is the owning service's current one).
/// `max_batch`: most ids per backend call ([`MAX_LOAD_BATCH`], or 1 to measure N+1).
pub fn loaders(gateway: &Arc<Gateway>, max_batch: usize) -> Loaders {
    let batches = Batches::default();
    let queue = |batches: &Batches| {
        let batches = Arc::clone(batches);
        move |batch: BoxFuture<'static, ()>| {
            batches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(batch);
        }
    };
    Loaders {
        reviews: DataLoader::new(ReviewsLoader(Arc::clone(gateway)), queue(&batches))
            .delay(Duration::ZERO)
            .max_batch_size(max_batch),
        users: DataLoader::new(UsersLoader(Arc::clone(gateway)), queue(&batches))
            .delay(Duration::ZERO)
            .max_batch_size(max_batch),
        products: DataLoader::new(ProductsLoader(Arc::clone(gateway)), queue(&batches))
            .delay(Duration::ZERO)
            .max_batch_size(max_batch),
        batches,
    }
}

/// Loaders for a subscription's connection: no [`execute`] runs their batches, so each
/// batch is spawned, inside the connection's context, after DataLoader's usual 1 ms.
pub fn spawned_loaders(gateway: &Arc<Gateway>, max_batch: usize) -> async_graphql::Data {
    let spawn = server::graphql::spawn_in_context;
    let mut data = async_graphql::Data::default();
    data.insert(
        DataLoader::new(ReviewsLoader(Arc::clone(gateway)), spawn).max_batch_size(max_batch),
    );
    data.insert(DataLoader::new(UsersLoader(Arc::clone(gateway)), spawn).max_batch_size(max_batch));
    data.insert(
        DataLoader::new(ProductsLoader(Arc::clone(gateway)), spawn).max_batch_size(max_batch),
    );
    data
}

/// Runs `request` with `loaders`, dispatching their batches the way graphql-js's
/// DataLoader does at the end of a tick: a batch starts only once the execution can make
/// no more progress without it, so every key one level of the query asks for is in it,
/// however many objects that level holds and however busy the machine is. (DataLoader's
/// own scheme — a batch per timer window, in a task of its own — splits a level into
/// several batches when the execution is slower than the window, and a separate task
/// would lose the request's context.) Batches run inside this task, so their calls carry
/// the request's correlation ID, trace and deadline; the execution runs unconstrained by
/// tokio's cooperative budget, which would otherwise stop a pass halfway through a level.
pub async fn execute(
    schema: &GatewaySchema,
    request: async_graphql::Request,
    loaders: Loaders,
) -> async_graphql::Response {
    let Loaders {
        reviews,
        users,
        products,
        batches,
    } = loaders;
    let request = request.data(reviews).data(users).data(products);
    let execution = tokio::task::unconstrained(schema.execute(request));
    let mut execution = std::pin::pin!(execution);
    let mut running = FuturesUnordered::new();
    std::future::poll_fn(move |cx| {
        // The execution polled with a waker that notes a wake during its own poll.
        // async-graphql resolves an object's fields, and a list of more than 30 items,
        // in a FuturesUnordered, which wakes itself and returns once it has polled its
        // last pending child (a long list: every two children that yield), so a pass over
        // a level climbs one step per poll. Such a Pending is not "blocked on loaders":
        // starting the level's batches then split them (what the benchmark found under
        // load). The whole level now runs within this poll (it is unconstrained), its
        // size bounded by the operation's cost limit.
        let woken = Arc::new(Woken {
            flag: std::sync::atomic::AtomicBool::new(false),
            outer: cx.waker().clone(),
        });
        let waker = futures::task::waker(Arc::clone(&woken));
        let mut inner = std::task::Context::from_waker(&waker);
        // Bounded, should something keep waking itself without progress: past it the
        // batches start anyway (at worst a split batch, never a stall).
        let mut passes = 0;
        loop {
            woken
                .flag
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if let Poll::Ready(response) = execution.as_mut().poll(&mut inner) {
                return Poll::Ready(response);
            }
            passes += 1;
            if woken.flag.load(std::sync::atomic::Ordering::Relaxed) && passes < MAX_PASSES {
                continue;
            }
            passes = 0;
            running.extend(
                batches
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .drain(..),
            );
            // A finished batch has handed its results to the fields waiting on them:
            // run the execution again before waiting for anything else.
            let mut finished = false;
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {
                finished = true;
            }
            if !finished {
                return Poll::Pending;
            }
        }
    })
    .await
}

use server::graphql::{field_error, shaped_error};

/// Most passes over the execution, woken by itself, before [`execute`] starts the batches
/// queued so far (a pass over a list of 200 yields a few dozen times).
const MAX_PASSES: u32 = 10_000;

/// The waker [`execute`] polls the execution with: it passes every wake on and notes it.
struct Woken {
    flag: std::sync::atomic::AtomicBool,
    outer: std::task::Waker,
}

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(this: &Arc<Self>) {
        this.flag.store(true, std::sync::atomic::Ordering::Relaxed);
        this.outer.wake_by_ref();
    }
}

/// An id the client sent: catalog's and accounts' ids are positive integers; anything
/// else names nothing.
fn parse_id(id: &ID) -> Option<i64> {
    id.parse::<i64>().ok().filter(|id| *id > 0)
}

/// `Product.reviews`, batched: every product of an operation in one call.
pub struct ReviewsLoader(Arc<Gateway>);

impl Loader<i64> for ReviewsLoader {
    type Value = Vec<app::Review>;
    /// Shaped (and logged) once for the batch; every field that waited on it gets a copy.
    type Error = problem::GraphqlError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        self.0
            .reviews_of(keys, REVIEWS_PER_PRODUCT)
            .await
            .map_err(problem::GraphqlError::from)
    }
}

/// `Review.user`, batched: every author of an operation in one call.
pub struct UsersLoader(Arc<Gateway>);

impl Loader<i64> for UsersLoader {
    type Value = app::User;
    type Error = problem::GraphqlError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        self.0
            .users(keys)
            .await
            .map_err(problem::GraphqlError::from)
    }
}

/// `OrderItem.product`, batched: every product an operation's orders name, in one call.
pub struct ProductsLoader(Arc<Gateway>);

impl Loader<i64> for ProductsLoader {
    type Value = app::Product;
    type Error = problem::GraphqlError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        self.0
            .products_by_id(keys)
            .await
            .map_err(problem::GraphqlError::from)
    }
}

fn gateway<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Gateway>> {
    ctx.data::<Arc<Gateway>>()
}

/// A product in the catalog.
pub struct Product(app::Product);

/// A product in the catalog. An answer holding products may be cached for 5 s.
#[Object(cache_control(max_age = 5))]
impl Product {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn price(&self) -> f64 {
        self.0.price
    }

    async fn stock(&self) -> i32 {
        i32::try_from(self.0.stock).unwrap_or(i32::MAX)
    }

    /// Its first reviews, oldest first (at most 20).
    async fn reviews(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Review>> {
        let loader = ctx.data::<DataLoader<ReviewsLoader>>()?;
        let reviews = loader.load_one(self.0.id).await.map_err(shaped_error)?;
        Ok(reviews
            .unwrap_or_default()
            .into_iter()
            .map(Review)
            .collect())
    }
}

/// A user's review of a product.
pub struct Review(app::Review);

/// A user's review of a product.
#[Object(cache_control(max_age = 5))]
impl Review {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn rating(&self) -> i32 {
        self.0.rating
    }

    async fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }

    /// Its author.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let loader = ctx.data::<DataLoader<UsersLoader>>()?;
        match loader
            .load_one(self.0.user_id)
            .await
            .map_err(shaped_error)?
        {
            Some(user) => Ok(User(user)),
            None => Err(field_error(Problem::not_found(format!(
                "review {}'s author, user {}, does not exist",
                self.0.id, self.0.user_id
            )))),
        }
    }
}

/// A user of the shop.
pub struct User(app::User);

/// A user of the shop. An answer holding a user is private: no shared cache keeps it.
#[Object(cache_control(private, max_age = 5))]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Needs an API key with `accounts:read`.
    async fn email(&self, ctx: &Context<'_>) -> async_graphql::Result<&str> {
        require(ctx, Scope::AccountsRead)?;
        Ok(&self.0.email)
    }

    /// Their orders, oldest first, a page at a time (`first` 1 to 200; `after` the
    /// `pageInfo.endCursor` of the page before).
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<OrderConnection> {
        require(ctx, Scope::OrdersRead)?;
        let first = u32::try_from(first).unwrap_or(0);
        let page = gateway(ctx)?
            .orders_of(self.0.id, first, after.as_deref())
            .await
            .map_err(field_error)?;
        Ok(OrderConnection {
            nodes: page.orders.into_iter().map(Order).collect(),
            page_info: PageInfo {
                has_next_page: page.next_cursor.is_some(),
                end_cursor: page.next_cursor,
            },
        })
    }
}

/// Where an order is: accepted (`PENDING`), stock reserved (`CONFIRMED`) or refused
/// (`REJECTED`), charged (`PAID`), or called off (`CANCELLED`, its stock given back and
/// a charge refunded).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Paid,
    Cancelled,
}

impl From<app::OrderStatus> for OrderStatus {
    fn from(status: app::OrderStatus) -> Self {
        match status {
            app::OrderStatus::Pending => Self::Pending,
            app::OrderStatus::Confirmed => Self::Confirmed,
            app::OrderStatus::Rejected => Self::Rejected,
            app::OrderStatus::Paid => Self::Paid,
            app::OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// An order: accepted at once, then processed behind the scenes; its `history` says
/// how far it got, and when.
pub struct Order(app::Order);

/// An order: accepted at once, then processed behind the scenes; its `history` says
/// how far it got, and when. An answer holding an order is never cached.
#[Object(cache_control(private, no_cache))]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }

    /// What it costs, in `currency`.
    async fn total(&self) -> f64 {
        money_of(self.0.total_minor)
    }

    async fn currency(&self) -> &str {
        &self.0.currency
    }

    async fn items(&self) -> Vec<OrderItem> {
        self.0.items.iter().cloned().map(OrderItem).collect()
    }

    /// Every state it has been in, oldest first.
    async fn history(&self) -> Vec<OrderTransition> {
        self.0
            .history
            .iter()
            .cloned()
            .map(OrderTransition)
            .collect()
    }

    /// Who placed it.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let loader = ctx.data::<DataLoader<UsersLoader>>()?;
        match loader
            .load_one(self.0.user_id)
            .await
            .map_err(shaped_error)?
        {
            Some(user) => Ok(User(user)),
            None => Err(field_error(Problem::not_found(format!(
                "order {}'s user, {}, does not exist",
                self.0.id, self.0.user_id
            )))),
        }
    }
}

/// Integer cents as the decimal amount clients read.
fn money_of(minor: i64) -> f64 {
    minor as f64 / 100.0
}

/// One line of an order, priced when it was placed.
pub struct OrderItem(app::OrderItem);

#[Object]
impl OrderItem {
    /// The product as catalog has it now (null if it has since been deleted).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Product>> {
        let loader = ctx.data::<DataLoader<ProductsLoader>>()?;
        Ok(loader
            .load_one(self.0.product_id)
            .await
            .map_err(shaped_error)?
            .map(Product))
    }

    async fn quantity(&self) -> i32 {
        i32::try_from(self.0.quantity).unwrap_or(i32::MAX)
    }

    /// Its price per unit when the order was placed.
    async fn unit_price(&self) -> f64 {
        money_of(self.0.unit_price_minor)
    }
}

/// One state an order entered.
pub struct OrderTransition(app::Transition);

#[Object]
impl OrderTransition {
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }

    /// When, in RFC 3339 (UTC, milliseconds).
    async fn at(&self) -> String {
        server::rest::rfc3339(self.0.at_unix_ms)
    }

    /// Why, for a refusal or a cancellation.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
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
#[derive(InputObject)]
pub struct PlaceOrderInput {
    pub user_id: ID,
    pub items: Vec<OrderLineInput>,
}

/// One product and how many of it.
#[derive(InputObject)]
pub struct OrderLineInput {
    pub product_id: ID,
    pub quantity: i32,
}

pub struct Query;

/// Every operation has a cost, computed before it runs and returned in
/// `extensions.cost` (Shopify's calculated query cost): a scalar or enum field costs 0;
/// an object field 1 plus what it selects; a list field 2 plus, for each item it may
/// return (`limit`, or its maximum: `Product.reviews` 20), 1 plus what the item selects;
/// a mutation 10 more. An operation may cost at most 1,000, and each client has a bucket
/// of 1,000 points refilled at 50 a second: what it cannot afford is refused as
/// THROTTLED, saying when to retry, and what an operation did not use is given back.
#[Object]
impl Query {
    /// One product; null if there is none with this id.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let Some(id) = parse_id(&id) else {
            return Ok(None);
        };
        let found = gateway(ctx)?.product(id).await.map_err(field_error)?;
        Ok(found.map(Product))
    }

    /// One user; null if there is none with this id. Needs `accounts:read` (a review's
    /// author's name is public; looking users up is not).
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<User>> {
        require(ctx, Scope::AccountsRead)?;
        let Some(id) = parse_id(&id) else {
            return Ok(None);
        };
        let loader = ctx.data::<DataLoader<UsersLoader>>()?;
        Ok(loader.load_one(id).await.map_err(shaped_error)?.map(User))
    }

    /// One order; null if there is none with this id.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        require(ctx, Scope::OrdersRead)?;
        let found = gateway(ctx)?.order(&id).await.map_err(field_error)?;
        Ok(found.map(Order))
    }

    /// The first `limit` products (1 to 200), in id order.
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: Option<i32>,
    ) -> async_graphql::Result<Vec<Product>> {
        // An explicit null is the default too (the tutorial's `limit: Int = 20`).
        let limit = u32::try_from(limit.unwrap_or(20)).unwrap_or(0);
        let listed = gateway(ctx)?.products(limit).await.map_err(field_error)?;
        Ok(listed.into_iter().map(Product).collect())
    }
}

/// Set on an operation that came over the WebSocket. Writes go over `POST /graphql`,
/// where each is admitted against its key's rate and acts for its key on every hop: a
/// WebSocket's calls act for the client of its upgrade request.
pub struct OverWebSocket;

/// Whether the operation's caller (its API key, `crate::edge`) has `scope`: a field error
/// with the 401 or 403 problem if not. An operation run without a caller is anonymous.
fn require(ctx: &Context<'_>, scope: Scope) -> async_graphql::Result<()> {
    if scope.writes() && ctx.data_opt::<OverWebSocket>().is_some() {
        return Err(field_error(
            Problem::new(problem::Kind::MethodNotAllowed)
                .with_detail("mutations go over POST /graphql, not the WebSocket"),
        ));
    }
    match ctx.data_opt::<Caller>() {
        Some(caller) => caller.require(scope),
        None => Caller::Anonymous.require(scope),
    }
    .map_err(field_error)
}

pub struct Mutation;

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
        require(ctx, Scope::CatalogWrite)?;
        let created = gateway(ctx)?
            .create_product(
                app::NewProduct {
                    name,
                    price,
                    stock: i64::from(stock),
                },
                idempotency_key.as_deref(),
            )
            .await
            .map_err(field_error)?;
        Ok(Product(created))
    }

    /// Places an order: accepted at once (`PENDING`), then reserved, charged and paid
    /// behind the scenes — follow it with `order(id)`. The same `idempotencyKey` again
    /// answers the same order and places nothing more.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
        idempotency_key: String,
    ) -> async_graphql::Result<Order> {
        require(ctx, Scope::OrdersWrite)?;
        let id = |id: &ID, field: &str| {
            id.parse::<i64>().map_err(|_| {
                field_error(Problem::validation(vec![problem::FieldError::new(
                    field,
                    "must be a positive integer id",
                )]))
            })
        };
        let new = app::NewOrder {
            user_id: id(&input.user_id, "input.userId")?,
            lines: input
                .items
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    Ok((
                        id(&line.product_id, &format!("input.items[{i}].productId"))?,
                        i64::from(line.quantity),
                    ))
                })
                .collect::<async_graphql::Result<_>>()?,
        };
        let placed = gateway(ctx)?
            .place_order(new, &idempotency_key)
            .await
            .map_err(field_error)?;
        Ok(Order(placed))
    }

    /// Cancels a pending, confirmed or paid order (a paid one is refunded); cancelling
    /// twice is cancelling once.
    async fn cancel_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        require(ctx, Scope::OrdersWrite)?;
        let cancelled = gateway(ctx)?.cancel_order(&id).await.map_err(field_error)?;
        Ok(Order(cancelled))
    }
}

pub struct Subscription;

/// Quick reads after a ring that found the order unchanged.
const EAGER_READS: u32 = 5;

/// The longest id an order can have (orders' own bound).
const MAX_ORDER_ID: usize = 64;

/// What a subscription to one order keeps between pushes.
struct Watching {
    gateway: Arc<Gateway>,
    id: String,
    rings: tokio::sync::watch::Receiver<u64>,
    /// The order as first read, still to be pushed.
    first: Option<app::Order>,
    /// How many transitions the subscriber has seen.
    seen: usize,
    /// Reads since a ring that found nothing new yet: an event can come before the
    /// change it announces is visible (billing's `OrderPaid` is on the stream before
    /// orders records PAID), so a ring is followed by a few quick reads.
    eager: u32,
    done: bool,
    /// The keys and the caller: a subscription ends when its key is revoked or expires
    /// (checked before every push, so within `gateway.keys.refresh` of a revocation).
    keys: Option<(crate::keys::Keys, Caller)>,
}

impl Watching {
    /// The next push: the order each time its history grows, until it is final (PAID,
    /// REJECTED or CANCELLED, as orders' own `WatchOrder`) or gone. A failed read is
    /// tried again at the next ring or [`crate::live::RECHECK`]: an orders outage
    /// pauses a subscription, it does not end it.
    async fn next(mut self) -> Option<(async_graphql::Result<Order>, Self)> {
        if self.done {
            return None;
        }
        if let Some((keys, caller)) = &self.keys
            && !keys.is_live(caller)
        {
            self.done = true;
            let ended = Problem::new(problem::Kind::Unauthenticated)
                .with_detail("the API key of this subscription was revoked or has expired");
            return Some((Err(field_error(ended)), self));
        }
        if let Some(order) = self.first.take() {
            return Some(self.push(order));
        }
        loop {
            if self.eager > 0 && self.eager <= EAGER_READS {
                // Each read 50, 100, 200, 400 ms after the one before, unless rung again.
                let wait = Duration::from_millis(25 << self.eager);
                tokio::select! {
                    // Rung again: the quick reads start over.
                    changed = self.rings.changed() => {
                        self.eager = 1;
                        if changed.is_err() {
                            tokio::time::sleep(crate::live::RECHECK).await;
                        }
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            } else {
                // Rung (quick reads follow if it finds nothing), or the periodic read.
                self.eager = tokio::select! {
                    changed = self.rings.changed() => match changed {
                        Ok(()) => 1,
                        Err(_) => {
                            tokio::time::sleep(crate::live::RECHECK).await;
                            0
                        }
                    },
                    () = tokio::time::sleep(crate::live::RECHECK) => 0,
                };
            }
            match self.gateway.order(&self.id).await {
                Ok(Some(order)) if order.history.len() > self.seen => {
                    self.eager = 0;
                    return Some(self.push(order));
                }
                // Gone (it cannot be, but a subscription must not outlive its order).
                Ok(None) => return None,
                Ok(_) if self.eager > 0 => self.eager += 1,
                Ok(_) => {}
                Err(problem) => {
                    tracing::info!(order_id = %self.id, error = %problem, "a subscription could not read its order; trying again");
                }
            }
        }
    }

    fn push(mut self, order: app::Order) -> (async_graphql::Result<Order>, Self) {
        self.seen = order.history.len();
        self.done = matches!(
            order.status,
            app::OrderStatus::Paid | app::OrderStatus::Rejected | app::OrderStatus::Cancelled
        );
        (Ok(Order(order)), self)
    }
}

#[async_graphql::Subscription]
impl Subscription {
    /// The order now, then again each time it moves (every transition, in order), until
    /// it is final (PAID, REJECTED or CANCELLED). Fed by orders' `order-events` stream;
    /// over WebSocket (`graphql-transport-ws`) at `/graphql/ws`.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl futures::Stream<Item = async_graphql::Result<Order>>> {
        require(ctx, Scope::OrdersRead)?;
        let gateway = Arc::clone(gateway(ctx)?);
        // An id that cannot be an order's is not watched (the feed keeps each id watched).
        if id.len() > MAX_ORDER_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(field_error(Problem::not_found(format!(
                "no order {} exists",
                id.chars().take(MAX_ORDER_ID).collect::<String>()
            ))));
        }
        // Watched before the first read, so no move between the two is missed.
        let rings = ctx.data::<Arc<crate::live::OrderFeed>>()?.watch(&id);
        let first = gateway
            .order(&id)
            .await
            .map_err(field_error)?
            .ok_or_else(|| {
                field_error(Problem::not_found(format!(
                    "no order {} exists",
                    id.as_str()
                )))
            })?;
        let watching = Watching {
            gateway,
            id: id.to_string(),
            rings,
            first: Some(first),
            seen: 0,
            eager: 0,
            done: false,
            keys: ctx
                .data_opt::<crate::keys::Keys>()
                .cloned()
                .zip(ctx.data_opt::<Caller>().cloned()),
        };
        Ok(futures::stream::unfold(watching, Watching::next))
    }
}
