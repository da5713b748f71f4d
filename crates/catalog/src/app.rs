//! Catalog's application layer: one method per use case, each deciding the order of its
//! steps (the idempotency key's decisions, the call to accounts, the write and what
//! follows its commit) once for every face. Faces (REST, gRPC) parse the wire into domain
//! values, call a method here, and render what it returns; a refusal is a
//! [`CatalogError`], which becomes a [`Problem`] at exactly one place.

use std::sync::Arc;

use idempotency::{Idempotency, Keyed};
use problem::{FieldError, Kind, Problem};
use storage::{Found, StoreError};

use crate::accounts::Accounts;
use crate::domain::{
    NewProduct, NewReservation, NewReview, OrderId, Product, ProductId, ProductPatch, Reservation,
    Review, ReviewId, UserId,
};
use crate::store::CatalogStore;
use crate::store::reservations::ReserveError;

/// Most ids one batched lookup may ask for.
pub const MAX_BATCH: usize = 200;

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("Product {} not found", .0.0)]
    ProductNotFound(ProductId),
    #[error("Review {} of product {} not found", .review.0, .product.0)]
    ReviewNotFound {
        product: ProductId,
        review: ReviewId,
    },
    /// An update's precondition (`If-Match`) names a version the product no longer has.
    #[error("the product changed since the If-Match tag was read; fetch it again")]
    Stale,
    #[error("at most {MAX_BATCH} ids per call")]
    TooManyIds,
    /// A review's author must be a user of the accounts service.
    #[error("no user {} exists", .0.0)]
    UnknownAuthor(UserId),
    /// Accounts could not say whether the author exists (down, slow, its breaker open).
    #[error("accounts could not be asked: {0}")]
    Accounts(Problem),
    #[error("Requested {requested} units of {}; only {available} available.", sku(*.product_id))]
    InsufficientStock {
        product_id: i64,
        requested: i64,
        available: i64,
    },
    /// The order's id was reserved before with other lines.
    #[error("order {0} was already reserved with different lines")]
    ReservedOtherwise(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A product's stock-keeping unit as problems name it (the seed's `SKU-1234`): catalog
/// keeps no separate SKU, so it is the product id.
pub fn sku(product_id: i64) -> String {
    format!("SKU-{product_id}")
}

impl From<ReserveError> for CatalogError {
    fn from(err: ReserveError) -> Self {
        match err {
            ReserveError::UnknownProduct(id) => CatalogError::ProductNotFound(ProductId(id)),
            ReserveError::InsufficientStock {
                product_id,
                requested,
                available,
            } => CatalogError::InsufficientStock {
                product_id,
                requested,
                available,
            },
            ReserveError::DifferentLines(order) => CatalogError::ReservedOtherwise(order),
            ReserveError::Store(err) => CatalogError::Store(err),
        }
    }
}

impl From<CatalogError> for Problem {
    fn from(err: CatalogError) -> Self {
        let detail = err.to_string();
        match err {
            CatalogError::ProductNotFound(id) => {
                Problem::not_found(detail).with_extension("product_id", id.0)
            }
            CatalogError::ReviewNotFound { product, review } => Problem::not_found(detail)
                .with_extension("product_id", product.0)
                .with_extension("review_id", review.0),
            CatalogError::Stale => Problem::new(Kind::PreconditionFailed).with_detail(detail),
            CatalogError::TooManyIds => {
                Problem::validation(vec![FieldError::new("product_ids", detail)])
            }
            CatalogError::UnknownAuthor(_) => {
                Problem::validation(vec![FieldError::new("user_id", detail)])
            }
            CatalogError::Accounts(problem) => problem,
            CatalogError::InsufficientStock {
                product_id,
                requested,
                available,
            } => Problem::new(Kind::InsufficientStock)
                .with_detail(detail)
                .with_extension("sku", sku(product_id))
                .with_extension("product_id", product_id)
                .with_extension("requested", requested)
                .with_extension("available", available)
                .with_extension("available_stock", available),
            CatalogError::ReservedOtherwise(_) => {
                Problem::new(Kind::BusinessRuleViolated).with_detail(detail)
            }
            CatalogError::Store(err) => err.into(),
        }
    }
}

/// The catalog's use cases over its store, its idempotency keys and accounts.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: CatalogStore,
    idempotency: Idempotency,
    accounts: Accounts,
}

impl Catalog {
    pub fn new(store: CatalogStore, idempotency: Idempotency, accounts: Accounts) -> Self {
        Self {
            store,
            idempotency,
            accounts,
        }
    }

    pub fn store(&self) -> &CatalogStore {
        &self.store
    }

    /// One product (from the read cache when it holds it).
    pub async fn product(&self, id: ProductId) -> Result<Arc<Product>, CatalogError> {
        self.store
            .product(id)
            .await?
            .ok_or(CatalogError::ProductNotFound(id))
    }

    /// Up to `limit` products with ids above `after`, in id order (a page asks for one
    /// more than it shows, to know whether another follows).
    pub async fn products(
        &self,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<Vec<Arc<Product>>, CatalogError> {
        Ok(self.store.products(after, limit).await?)
    }

    /// The products of `ids`, in the order asked, and the ids of those that do not exist.
    pub async fn products_by_id(
        &self,
        ids: &[ProductId],
    ) -> Result<Found<Product, ProductId>, CatalogError> {
        if ids.len() > MAX_BATCH {
            return Err(CatalogError::TooManyIds);
        }
        let rows = self.store.products_by_id(ids).await?;
        Ok(Found::in_order(ids, rows, |p| p.id))
    }

    /// Up to `per_product` reviews of each of `ids` (oldest first), in the order asked,
    /// and the ids of the products that do not exist: a page of products' reviews in
    /// one call (the GraphQL gateway's batched `Product.reviews`).
    pub async fn reviews_of(
        &self,
        ids: &[ProductId],
        per_product: u32,
    ) -> Result<Found<(ProductId, Vec<Review>), ProductId>, CatalogError> {
        let products = self.products_by_id(ids).await?;
        let existing: Vec<ProductId> = products.found.iter().map(|p| p.id).collect();
        // The rows come by product id; the answer goes in the order asked.
        let mut by_product: std::collections::HashMap<ProductId, Vec<Review>> =
            std::collections::HashMap::with_capacity(existing.len());
        for review in self.store.reviews_of(&existing, per_product).await? {
            by_product
                .entry(review.product_id)
                .or_default()
                .push(review);
        }
        Ok(Found {
            found: existing
                .into_iter()
                .map(|id| (id, by_product.get(&id).cloned().unwrap_or_default()))
                .collect(),
            missing: products.missing,
        })
    }

    /// Creates a product under the face's `Idempotency-Key`, answering with `render`'s
    /// answer (which the key keeps for replays). The product and its `ProductCreated`
    /// event commit together; the relay is rung once they have.
    pub async fn create_product<K: Keyed>(
        &self,
        write: &K,
        new: NewProduct,
        render: impl FnOnce(Product) -> Result<K::Answer, Problem> + Send + 'static,
    ) -> K::Output {
        self.store
            .create_product_once(&self.idempotency, write, new, render)
            .await
    }

    /// Changes the fields `patch` holds. `if_match` sees the product as it is in the
    /// database now (not the read cache) and says whether the caller's precondition
    /// holds (`None`: the caller set none); if it holds, the update still requires that
    /// version, so a change in between is refused as [`CatalogError::Stale`] too.
    pub async fn update_product(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        if_match: impl FnOnce(&Product) -> Option<bool>,
    ) -> Result<Product, CatalogError> {
        let current = self
            .store
            .product_fresh(id)
            .await?
            .ok_or(CatalogError::ProductNotFound(id))?;
        let expected = match if_match(&current) {
            Some(false) => return Err(CatalogError::Stale),
            Some(true) => Some(current.version),
            None => None,
        };
        match self.store.update_product(id, patch, expected).await {
            Ok(product) => Ok(product),
            Err(StoreError::Stale { .. }) => Err(CatalogError::Stale),
            Err(StoreError::NotFound(_)) => Err(CatalogError::ProductNotFound(id)),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes a product and its reviews.
    pub async fn delete_product(&self, id: ProductId) -> Result<(), CatalogError> {
        if self.store.delete_product(id).await? {
            Ok(())
        } else {
            Err(CatalogError::ProductNotFound(id))
        }
    }

    /// Up to `limit` reviews of an existing product with ids above `after`, oldest first.
    pub async fn reviews(
        &self,
        product: ProductId,
        after: Option<ReviewId>,
        limit: u32,
    ) -> Result<Vec<Review>, CatalogError> {
        self.product(product).await?;
        Ok(self.store.reviews(product, after, limit).await?)
    }

    pub async fn review(&self, product: ProductId, id: ReviewId) -> Result<Review, CatalogError> {
        self.store
            .review(product, id)
            .await?
            .ok_or(CatalogError::ReviewNotFound {
                product,
                review: id,
            })
    }

    /// Reviews a product under the face's `Idempotency-Key`. The key's replay and
    /// refusal come first (a retry of an answered create gets its answer while accounts
    /// is down), then accounts is asked whether the author exists, holding no claim and
    /// no lock, then the review is written with the key's record.
    pub async fn create_review<K: Keyed>(
        &self,
        write: &K,
        new: NewReview,
        render: impl FnOnce(Review) -> Result<K::Answer, Problem> + Send,
    ) -> K::Output {
        let author = new.user_id;
        let ask = async move {
            match self.accounts.user_exists(author).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(CatalogError::UnknownAuthor(author).into()),
                Err(problem) => Err(CatalogError::Accounts(problem).into()),
            }
        };
        let store = &self.store;
        write
            .run_after(&self.idempotency, ask, |mut tx| async move {
                let result = match store.insert_review_in(&mut tx, &new).await {
                    Ok(review) => render(review),
                    Err(StoreError::NotFound(_)) => {
                        Err(CatalogError::ProductNotFound(new.product_id).into())
                    }
                    Err(err) => Err(CatalogError::from(err).into()),
                };
                (tx, result)
            })
            .await
    }

    /// Takes stock for an order, all or nothing, at most once per order id.
    pub async fn reserve(&self, new: &NewReservation) -> Result<Reservation, CatalogError> {
        Ok(self.store.reserve(new).await?)
    }

    /// Gives an order's stock back, at most once.
    pub async fn release(&self, order: &OrderId) -> Result<Reservation, CatalogError> {
        Ok(self.store.release(order).await?)
    }
}
