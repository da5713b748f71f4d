//! The gateway's use cases: what a client may ask of the services behind it, each
//! answered by the service that owns the data, over gRPC, through `resilience::Downstream`
//! (a deadline under the operation's, a budgeted retry where the call may be repeated, a
//! breaker per service). The gateway keeps no copy of catalog's or accounts' data.
//!
//! The batch methods (`products_by_id`, `reviews_of`, `users`) are what the GraphQL
//! face's DataLoaders call: one call per kind of thing per operation, however many
//! products a page holds.

use std::collections::HashMap;

use problem::{FieldError, Problem};
use proto::v1::operations_service_client::OperationsServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::review_service_client::ReviewServiceClient;
use proto::v1::user_service_client::UserServiceClient;
use proto::v1::{
    BatchGetProductsRequest, BatchGetUsersRequest, BatchListReviewsRequest, CancelOrderRequest,
    CreateOrderItem, CreateOrderRequest, CreateProductRequest, GetOrderRequest, ListOrdersRequest,
    ListProductsRequest, ProductRequest, ProductResponse, RedriveDeadLettersRequest,
};
use resilience::downstream::{Downstream, Policy};
use server::grpc::client::Channel;
use server::grpc::client::{channel, request};
use settings::{ServiceName, Settings};

/// Most products one `products` call lists (catalog's batch size).
pub const MAX_PRODUCTS: u32 = 200;

/// A product as catalog has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub price: f64,
    pub stock: i64,
}

impl From<ProductResponse> for Product {
    fn from(p: ProductResponse) -> Self {
        Self {
            id: i64::from(p.id),
            name: p.name,
            price: p.price,
            stock: i64::from(p.stock),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: i64,
    pub product_id: i64,
    pub user_id: i64,
    pub rating: i32,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
}

/// A product to create, as the client gave it (catalog validates it).
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub name: String,
    pub price: f64,
    pub stock: i64,
}

/// Where an order is in its life (orders' own states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Paid,
    Cancelled,
}

impl OrderStatus {
    fn from_wire(status: i32) -> Result<Self, Problem> {
        use proto::v1::order::Status;
        match Status::try_from(status) {
            Ok(Status::Pending) => Ok(Self::Pending),
            Ok(Status::Confirmed) => Ok(Self::Confirmed),
            Ok(Status::Rejected) => Ok(Self::Rejected),
            Ok(Status::Paid) => Ok(Self::Paid),
            Ok(Status::Cancelled) => Ok(Self::Cancelled),
            _ => Err(Problem::unavailable(format!(
                "orders answered an order status the gateway does not know ({status})"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: i64,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: OrderStatus,
    pub at_unix_ms: i64,
    pub reason: Option<String>,
}

/// An order as orders has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub user_id: i64,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub total_minor: i64,
    pub currency: String,
    pub history: Vec<Transition>,
}

impl TryFrom<proto::v1::Order> for Order {
    type Error = Problem;

    fn try_from(o: proto::v1::Order) -> Result<Self, Problem> {
        Ok(Self {
            status: OrderStatus::from_wire(o.status)?,
            history: o
                .history
                .into_iter()
                .map(|t| {
                    Ok(Transition {
                        status: OrderStatus::from_wire(t.status)?,
                        at_unix_ms: t.at_unix_ms,
                        reason: (!t.reason.is_empty()).then_some(t.reason),
                    })
                })
                .collect::<Result<_, Problem>>()?,
            items: o
                .items
                .into_iter()
                .map(|i| OrderItem {
                    product_id: i64::from(i.product_id),
                    quantity: i64::from(i.quantity),
                    unit_price_minor: i.unit_price_minor,
                })
                .collect(),
            id: o.id,
            user_id: o.user_id,
            total_minor: o.total_minor,
            currency: o.currency,
        })
    }
}

/// One page of a user's orders, oldest first, and where the next begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    pub next_cursor: Option<String>,
}

/// An order to place: a user and the lines (product, quantity) they asked for; orders
/// checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: i64,
    pub lines: Vec<(i64, i64)>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    products: ProductServiceClient<Channel>,
    reviews: ReviewServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    orders_client: OrderServiceClient<Channel>,
    /// Orders' operator actions (the dead letters of the queue it consumes).
    orders_operations_client: OperationsServiceClient<Channel>,
    catalog: Downstream,
    accounts: Downstream,
    orders: Downstream,
    /// Operator calls to orders: their own call site, so an operator's failures (the
    /// broker down) never open the breaker customers' calls go through, with the
    /// 20 s timeout and no retry (the owner claims the key first, so a
    /// retry of a call still running would only hear 409).
    orders_operations: Downstream,
}

/// An operator's call: moving up to a thousand messages may take seconds. Shorter than
/// the owner's idempotency lock (30 s by default), so a repeat after this call gave up
/// finds the key still held (409) rather than taking it over while the move runs.
const OPERATIONS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Whether a call may be made again after a failure.
enum Repeat<'a> {
    /// Always: a read, or a write that done twice is done once (a cancel).
    Always,
    /// A write: only under an idempotency key (the owner answers a repeat with the first
    /// answer), which goes with every attempt; without one it is made once.
    Write(Option<&'a IdempotencyKey>),
}

type IdempotencyKey = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// A client's idempotency key as gRPC metadata.
fn key_metadata(raw: &str) -> Result<IdempotencyKey, Problem> {
    IdempotencyKey::try_from(raw).map_err(|_| {
        Problem::validation(vec![FieldError::new(
            "idempotencyKey",
            "must be printable ASCII",
        )])
    })
}

/// One unary call through `downstream`: `rpc` sends `message` (with the attempt's budget,
/// correlation ID, trace and, for a keyed write, its idempotency key) on a clone of
/// `client`; a failure is `callee`'s problem.
async fn call<C, M, R, Fut>(
    downstream: &Downstream,
    callee: &'static str,
    client: &C,
    message: M,
    repeat: Repeat<'_>,
    rpc: impl Fn(C, tonic::Request<M>) -> Fut,
) -> Result<R, Problem>
where
    C: Clone,
    M: Clone,
    Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let (retry, key) = match repeat {
        Repeat::Always => (true, None),
        Repeat::Write(key) => (key.is_some(), key),
    };
    downstream
        .call(retry, |attempt| {
            let mut asked = request(message.clone(), attempt.budget);
            if let Some(key) = key {
                asked.metadata_mut().insert("idempotency-key", key.clone());
            }
            let call = rpc(client.clone(), asked);
            async move {
                call.await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| Problem::from_downstream(callee, &status))
            }
        })
        .await
}

/// Each work queue and the service that consumes it — the one that redrives its dead
/// letters.
pub const QUEUE_OWNERS: [(&str, ServiceName); 1] = [("order_processing", ServiceName::Orders)];

/// What a redrive moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    pub queue: String,
    pub owner: ServiceName,
    pub moved: u32,
}

/// A gRPC id (`int32`) from a client's id: `None` when it cannot name anything.
fn id32(id: i64) -> Option<i32> {
    i32::try_from(id).ok().filter(|id| *id > 0)
}

impl Gateway {
    /// Clients of catalog and accounts at their configured addresses; they connect
    /// lazily, so the gateway starts while either is down.
    pub fn new(settings: &Settings) -> Result<Self, server::grpc::client::ClientError> {
        let catalog = channel(settings, ServiceName::Catalog)?;
        let orders = channel(settings, ServiceName::Orders)?;
        let policy = Policy::from_outbound(&settings.outbound);
        Ok(Self {
            products: ProductServiceClient::new(catalog.clone()),
            reviews: ReviewServiceClient::new(catalog),
            users: UserServiceClient::new(channel(settings, ServiceName::Accounts)?),
            orders_client: OrderServiceClient::new(orders.clone()),
            orders_operations_client: OperationsServiceClient::new(orders),
            catalog: Downstream::of_service(crate::SERVICE.as_str(), "catalog", policy.clone()),
            accounts: Downstream::of_service(crate::SERVICE.as_str(), "accounts", policy.clone()),
            orders_operations: Downstream::of_service(
                crate::SERVICE.as_str(),
                "orders-operations",
                Policy {
                    timeout: OPERATIONS_TIMEOUT,
                    retry: resilience::retry::RetryPolicy {
                        max_attempts: 1,
                        ..policy.retry.clone()
                    },
                    ..policy.clone()
                },
            ),
            orders: Downstream::of_service(crate::SERVICE.as_str(), "orders", policy),
        })
    }

    /// The downstreams of catalog, accounts and orders: REST forwarding shares them, so
    /// each service has one breaker whichever face calls it.
    pub fn downstreams(&self) -> [Downstream; 3] {
        [
            self.catalog.clone(),
            self.accounts.clone(),
            self.orders.clone(),
        ]
    }

    /// One order, or `None` if orders has no such order (or the id could not be one).
    pub async fn order(&self, id: &str) -> Result<Option<Order>, Problem> {
        let asked = GetOrderRequest {
            order_id: id.to_owned(),
        };
        let found = call(
            &self.orders,
            "orders",
            &self.orders_client,
            asked,
            Repeat::Always,
            |mut c, r| async move { c.get_order(r).await },
        )
        .await;
        match found {
            Ok(order) => Order::try_from(order).map(Some),
            Err(problem) if problem.kind() == problem::Kind::NotFound => Ok(None),
            Err(problem) => Err(problem),
        }
    }

    /// Up to `first` (1 to 200) of a user's orders after the cursor `after`, oldest first.
    pub async fn orders_of(
        &self,
        user_id: i64,
        first: u32,
        after: Option<&str>,
    ) -> Result<OrderPage, Problem> {
        if first == 0 || first > MAX_PRODUCTS {
            return Err(Problem::validation(vec![FieldError::new(
                "first",
                format!("must be between 1 and {MAX_PRODUCTS}"),
            )]));
        }
        let asked = ListOrdersRequest {
            user_id,
            page_size: i32::try_from(first).unwrap_or(i32::MAX),
            page_token: after.unwrap_or_default().to_owned(),
        };
        let page = call(
            &self.orders,
            "orders",
            &self.orders_client,
            asked,
            Repeat::Always,
            |mut c, r| async move { c.list_orders(r).await },
        )
        .await?;
        Ok(OrderPage {
            orders: page
                .orders
                .into_iter()
                .map(Order::try_from)
                .collect::<Result<_, _>>()?,
            next_cursor: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
        })
    }

    /// Places an order under `idempotency_key`: a retry with the same key gets the same
    /// order (accepted: its work goes on behind it, and its status says how far).
    pub async fn place_order(
        &self,
        new: NewOrder,
        idempotency_key: &str,
    ) -> Result<Order, Problem> {
        let key = key_metadata(idempotency_key)?;
        let items = new
            .lines
            .iter()
            .map(|&(product_id, quantity)| CreateOrderItem {
                product_id: i32::try_from(product_id).unwrap_or(-1),
                quantity: i32::try_from(quantity).unwrap_or(-1),
            })
            .collect::<Vec<_>>();
        let asked = CreateOrderRequest {
            user_id: new.user_id,
            items,
        };
        let placed = call(
            &self.orders,
            "orders",
            &self.orders_client,
            asked,
            Repeat::Write(Some(&key)),
            |mut c, r| async move { c.create_order(r).await },
        )
        .await?;
        Order::try_from(placed)
    }

    /// Cancels an order (cancelling twice is cancelling once, so it may be retried).
    pub async fn cancel_order(&self, id: &str) -> Result<Order, Problem> {
        let asked = CancelOrderRequest {
            order_id: id.to_owned(),
        };
        let cancelled = call(
            &self.orders,
            "orders",
            &self.orders_client,
            asked,
            Repeat::Always,
            |mut c, r| async move { c.cancel_order(r).await },
        )
        .await?;
        Order::try_from(cancelled)
    }

    /// One product, or `None` if catalog has no such product.
    pub async fn product(&self, id: i64) -> Result<Option<Product>, Problem> {
        let Some(id) = id32(id) else {
            return Ok(None);
        };
        self.catalog
            .call(true, |attempt| {
                let mut client = self.products.clone();
                async move {
                    let asked = request(ProductRequest { product_id: id }, attempt.budget);
                    match client.get_product(asked).await {
                        Ok(found) => Ok(Some(Product::from(found.into_inner()))),
                        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                        Err(status) => Err(Problem::from_downstream("catalog", &status)),
                    }
                }
            })
            .await
    }

    /// The first `limit` products (1 to [`MAX_PRODUCTS`]), in id order.
    pub async fn products(&self, limit: u32) -> Result<Vec<Product>, Problem> {
        if limit == 0 || limit > MAX_PRODUCTS {
            return Err(Problem::validation(vec![FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_PRODUCTS}"),
            )]));
        }
        let page_size = i32::try_from(limit).unwrap_or(i32::MAX);
        self.catalog
            .call(true, |attempt| {
                let mut client = self.products.clone();
                async move {
                    let asked = request(
                        ListProductsRequest {
                            page_size,
                            page_token: String::new(),
                        },
                        attempt.budget,
                    );
                    let failed =
                        |status: tonic::Status| Problem::from_downstream("catalog", &status);
                    let mut stream = client
                        .list_products(asked)
                        .await
                        .map_err(failed)?
                        .into_inner();
                    let mut listed = Vec::with_capacity(limit as usize);
                    while let Some(product) = stream.message().await.map_err(failed)? {
                        listed.push(Product::from(product));
                    }
                    Ok(listed)
                }
            })
            .await
    }

    /// The products among `ids` that exist, by id.
    pub async fn products_by_id(&self, ids: &[i64]) -> Result<HashMap<i64, Product>, Problem> {
        let ids: Vec<i32> = ids.iter().copied().filter_map(id32).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let asked = BatchGetProductsRequest { product_ids: ids };
        let found = call(
            &self.catalog,
            "catalog",
            &self.products,
            asked,
            Repeat::Always,
            |mut c, r| async move { c.batch_get_products(r).await },
        )
        .await?;
        Ok(found
            .products
            .into_iter()
            .map(|p| (i64::from(p.id), Product::from(p)))
            .collect())
    }

    /// Up to `per_product` reviews of each of `ids` that exists (oldest first), by
    /// product: one call for them all.
    pub async fn reviews_of(
        &self,
        ids: &[i64],
        per_product: u32,
    ) -> Result<HashMap<i64, Vec<Review>>, Problem> {
        let ids: Vec<i32> = ids.iter().copied().filter_map(id32).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let asked = BatchListReviewsRequest {
            product_ids: ids,
            per_product_limit: i32::try_from(per_product).unwrap_or(i32::MAX),
        };
        let found = call(
            &self.catalog,
            "catalog",
            &self.reviews,
            asked,
            Repeat::Always,
            |mut c, r| async move { c.batch_list_reviews(r).await },
        )
        .await?;
        Ok(found
            .products
            .into_iter()
            .map(|p| {
                let reviews = p
                    .reviews
                    .into_iter()
                    .map(|r| Review {
                        id: r.id,
                        product_id: i64::from(r.product_id),
                        user_id: r.user_id,
                        rating: r.rating,
                        comment: (!r.comment.is_empty()).then_some(r.comment),
                    })
                    .collect();
                (i64::from(p.product_id), reviews)
            })
            .collect())
    }

    /// The users among `ids` that exist, by id: one call for them all.
    pub async fn users(&self, ids: &[i64]) -> Result<HashMap<i64, User>, Problem> {
        let user_ids: Vec<i64> = ids.iter().copied().filter(|id| *id > 0).collect();
        if user_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let asked = BatchGetUsersRequest { user_ids };
        let found = call(
            &self.accounts,
            "accounts",
            &self.users,
            asked,
            Repeat::Always,
            |mut c, r| async move { c.batch_get_users(r).await },
        )
        .await?;
        Ok(found
            .users
            .into_iter()
            .map(|u| {
                (
                    u.id,
                    User {
                        id: u.id,
                        name: u.name,
                        email: u.email,
                    },
                )
            })
            .collect())
    }

    /// Creates a product in catalog. With an idempotency key the call may be retried
    /// (catalog answers a retry with the first answer); without one it is made once.
    pub async fn create_product(
        &self,
        new: NewProduct,
        idempotency_key: Option<&str>,
    ) -> Result<Product, Problem> {
        let stock = i32::try_from(new.stock)
            .map_err(|_| Problem::validation(vec![FieldError::new("stock", "is out of range")]))?;
        let key = idempotency_key.map(key_metadata).transpose()?;
        let asked = CreateProductRequest {
            name: new.name,
            price: new.price,
            stock,
        };
        call(
            &self.catalog,
            "catalog",
            &self.products,
            asked,
            Repeat::Write(key.as_ref()),
            |mut c, r| async move { c.create_product(r).await },
        )
        .await
        .map(Product::from)
    }

    /// An operator's redrive: up to `limit` (0: the owner's default) dead letters of
    /// `queue` back onto it, by the service that consumes it, under `idempotency_key` (a
    /// repeat answers what the first did and moves nothing more).
    pub async fn redrive_dead_letters(
        &self,
        queue: &str,
        limit: u32,
        idempotency_key: &str,
    ) -> Result<Redriven, Problem> {
        let Some((_, owner)) = QUEUE_OWNERS.iter().find(|(q, _)| *q == queue) else {
            return Err(
                Problem::not_found(format!("no service consumes a queue named {queue:?}"))
                    .with_extension("queue", queue),
            );
        };
        let key = key_metadata(idempotency_key)?;
        let asked = RedriveDeadLettersRequest {
            queue: queue.to_owned(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
        };
        let answer = match owner {
            ServiceName::Orders => {
                call(
                    &self.orders_operations,
                    "orders",
                    &self.orders_operations_client,
                    asked,
                    Repeat::Write(Some(&key)),
                    |mut c, r| async move { c.redrive_dead_letters(r).await },
                )
                .await?
            }
            other => {
                return Err(Problem::internal(format!(
                    "the gateway has no operations client for {other}"
                )));
            }
        };
        Ok(Redriven {
            queue: answer.queue,
            owner: *owner,
            moved: u32::try_from(answer.moved).unwrap_or(0),
        })
    }
}
