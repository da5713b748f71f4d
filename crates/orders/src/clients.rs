//! What orders asks of other services, over gRPC, each call through
//! `resilience::Downstream` (a deadline under the caller's, a budgeted retry where the
//! call may be repeated, a breaker): accounts (does the user exist), catalog (the
//! products and their prices; reserve and release stock per order id). Orders never
//! reads their databases.

use problem::Problem;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::user_service_client::UserServiceClient;
use proto::v1::{
    BatchGetProductsRequest, GetUserRequest, ReleaseStockRequest, ReservationLine,
    ReserveStockRequest,
};
use resilience::downstream::{Downstream, Policy};
use server::grpc::client::Channel;
use server::grpc::client::{channel, request};
use settings::{ServiceName, Settings};

use crate::domain::{Line, LineRequest, OrderId, ProductId, UserId};

/// What the catalog answered for an order's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Priced {
    /// Every line, priced.
    All(Vec<Line>),
    /// These products do not exist (by index of the line asked).
    Missing(Vec<(usize, ProductId)>),
}

/// Users accounts said exist, remembered: accounts never deletes a user, so a yes stays
/// true (a no is never kept: the user may be created next). Bounded: forgotten all at
/// once when full, which costs only calls.
#[derive(Debug, Default)]
struct KnownUsers(std::sync::Mutex<std::collections::HashSet<i64>>);

impl KnownUsers {
    const MAX: usize = 100_000;

    fn knows(&self, user: UserId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&user.0)
    }

    fn remember(&self, user: UserId) {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= Self::MAX {
            known.clear();
        }
        known.insert(user.0);
    }
}

#[derive(Debug, Clone)]
pub struct Clients {
    users: UserServiceClient<Channel>,
    known_users: std::sync::Arc<KnownUsers>,
    products: ProductServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    accounts: Downstream,
    catalog: Downstream,
}

impl Clients {
    /// Clients of accounts and catalog at their configured addresses. They connect lazily,
    /// so orders starts (and serves reads) while either is down.
    pub fn new(settings: &Settings) -> Result<Self, server::grpc::client::ClientError> {
        let catalog = channel(settings, ServiceName::Catalog)?;
        let policy = Policy::from_outbound(&settings.outbound);
        Ok(Self {
            users: UserServiceClient::new(channel(settings, ServiceName::Accounts)?),
            known_users: std::sync::Arc::default(),
            products: ProductServiceClient::new(catalog.clone()),
            inventory: InventoryServiceClient::new(catalog),
            accounts: Downstream::of_service(crate::SERVICE.as_str(), "accounts", policy.clone()),
            catalog: Downstream::of_service(crate::SERVICE.as_str(), "catalog", policy),
        })
    }

    /// Whether `user` exists (a read: retried). A user accounts confirmed once is not
    /// asked about again (see `KnownUsers`).
    pub async fn user_exists(&self, user: UserId) -> Result<bool, Problem> {
        if self.known_users.knows(user) {
            return Ok(true);
        }
        let exists = self.ask_user(user).await?;
        if exists {
            self.known_users.remember(user);
        }
        Ok(exists)
    }

    async fn ask_user(&self, user: UserId) -> Result<bool, Problem> {
        self.accounts
            .call(true, |attempt| {
                let mut client = self.users.clone();
                async move {
                    let asked = request(GetUserRequest { user_id: user.0 }, attempt.budget);
                    match client.get_user(asked).await {
                        Ok(_) => Ok(true),
                        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
                        Err(status) => Err(Problem::from_downstream("accounts", &status)),
                    }
                }
            })
            .await
    }

    /// The lines priced by the catalog now, or which products it does not know.
    pub async fn price(&self, lines: &[LineRequest]) -> Result<Priced, Problem> {
        let ids: Vec<i32> = lines
            .iter()
            .map(|l| i32::try_from(l.product_id.0).unwrap_or(i32::MAX))
            .collect();
        let found = self
            .catalog
            .call(true, |attempt| {
                let mut client = self.products.clone();
                let ids = ids.clone();
                async move {
                    let asked =
                        request(BatchGetProductsRequest { product_ids: ids }, attempt.budget);
                    client
                        .batch_get_products(asked)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|status| Problem::from_downstream("catalog", &status))
                }
            })
            .await?;
        let mut priced = Vec::with_capacity(lines.len());
        let mut missing = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            match found
                .products
                .iter()
                .find(|p| i64::from(p.id) == line.product_id.0)
            {
                Some(product) => {
                    // A price that is not money is catalog's fault, never a free line.
                    let price = money::Money::from_decimal(product.price).map_err(|e| {
                        Problem::unavailable(format!(
                            "catalog priced product {} at {}: {e}",
                            product.id, product.price
                        ))
                    })?;
                    priced.push(Line {
                        product_id: line.product_id,
                        quantity: line.quantity,
                        unit_price_minor: price.minor(),
                    });
                }
                None => missing.push((i, line.product_id)),
            }
        }
        Ok(if missing.is_empty() {
            Priced::All(priced)
        } else {
            Priced::Missing(missing)
        })
    }

    /// Reserves an order's stock, all or nothing, idempotent per order id (so retried).
    /// `Ok(true)`: reserved; `Ok(false)`: the order's reservation was released before
    /// (it was cancelled), so nothing was taken.
    pub async fn reserve(&self, order: &OrderId, lines: &[Line]) -> Result<bool, Problem> {
        let asked = ReserveStockRequest {
            order_id: order.as_str().to_owned(),
            lines: lines
                .iter()
                .map(|l| ReservationLine {
                    product_id: i32::try_from(l.product_id.0).unwrap_or(i32::MAX),
                    quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
                })
                .collect(),
        };
        self.catalog
            .call(true, |attempt| {
                let mut client = self.inventory.clone();
                let asked = asked.clone();
                async move {
                    client
                        .reserve_stock(request(asked, attempt.budget))
                        .await
                        .map(|r| {
                            r.into_inner().state == proto::v1::reservation::State::Reserved as i32
                        })
                        .map_err(|status| Problem::from_downstream("catalog", &status))
                }
            })
            .await
    }

    /// Gives an order's stock back (idempotent; also fences a reserve still to come).
    pub async fn release(&self, order: &OrderId) -> Result<(), Problem> {
        let order_id = order.as_str().to_owned();
        self.catalog
            .call(true, |attempt| {
                let mut client = self.inventory.clone();
                let asked = ReleaseStockRequest {
                    order_id: order_id.clone(),
                };
                async move {
                    client
                        .release_stock(request(asked, attempt.budget))
                        .await
                        .map(|_| ())
                        .map_err(|status| Problem::from_downstream("catalog", &status))
                }
            })
            .await
    }
}
