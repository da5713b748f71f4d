//! Catalog's own database: the `products` and `reviews` tables.
//!
//! [`CatalogStore`] is the store's one door: its methods run the repository functions
//! below (which take a connection, `&mut AnyConnection`) on its pool, or inside a
//! caller's transaction (`*_in`: the idempotency record and the outbox share the write's
//! transaction), and each write registers what must follow its commit (forgetting cached
//! rows, ringing the relay), so no caller can forget it. The repository functions stay
//! private, except the two sqlx reads the `grpc-layers` bench times as a layer.

pub mod cache;
mod interned;
mod read;
pub mod reservations;
mod write;

use std::sync::Arc;
use std::time::Duration;

use idempotency::{Idempotency, Keyed};
use messaging::outbox::{self, Destination};
use money::Money;
use problem::Problem;
use sqlx::{AnyConnection, FromRow};
use storage::{Database, Migrations, StoreError, WriteTx, now_millis};

use crate::events;

use crate::domain::{
    Comment, NewProduct, NewReview, Product, ProductId, ProductName, ProductPatch, Rating, Review,
    ReviewId, Stock, UserId,
};

/// Catalog's own tables. Its database also holds the idempotency store's and the
/// outbox's (`messaging::outbox::MIGRATIONS`), which catalog's writes use.
pub static MIGRATIONS: Migrations = Migrations {
    owner: "catalog",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

const PRODUCT_COLUMNS: &str = "id, name, price_minor, stock, version, created_at, updated_at";

#[derive(FromRow)]
struct ProductRow {
    id: i64,
    name: String,
    price_minor: i64,
    stock: i64,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;

    fn try_from(row: ProductRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("product {}: {what}", row.id));
        Ok(Product {
            id: ProductId(row.id),
            name: ProductName::parse_owned(row.name).map_err(|r| corrupt(format!("name {r}")))?,
            price: Money::from_minor(row.price_minor).map_err(|r| corrupt(format!("price {r}")))?,
            stock: Stock::parse(row.stock).map_err(|r| corrupt(format!("stock {r}")))?,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(FromRow)]
struct ReviewRow {
    id: i64,
    product_id: i64,
    user_id: i64,
    rating: i64,
    comment: Option<String>,
    created_at: i64,
}

impl TryFrom<ReviewRow> for Review {
    type Error = StoreError;

    fn try_from(row: ReviewRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("review {}: {what}", row.id));
        Ok(Review {
            id: ReviewId(row.id),
            product_id: ProductId(row.product_id),
            user_id: UserId(row.user_id),
            rating: Rating::parse(row.rating).map_err(|r| corrupt(format!("rating {r}")))?,
            comment: match row.comment.as_deref().map(Comment::parse).transpose() {
                Ok(c) => c.flatten(),
                Err(r) => return Err(corrupt(format!("comment {r}"))),
            },
            created_at: row.created_at,
        })
    }
}

async fn insert_product(conn: &mut AnyConnection, new: &NewProduct) -> Result<Product, StoreError> {
    let now = now_millis();
    let sql = INSERT_PRODUCT.get_or_init(insert_product_sql).as_str();
    let row: ProductRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(new.name.as_str())
        .bind(new.price.minor())
        .bind(new.stock.units())
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    let product: Product = row.try_into()?;
    publish(conn, &events::product_created(&product)).await?;
    Ok(product)
}

/// The statement of `insert_product` (here and in `write`), built once.
static INSERT_PRODUCT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn insert_product_sql() -> String {
    format!(
        "INSERT INTO products (name, price_minor, stock, version, created_at, updated_at) \
         VALUES ($1, $2, $3, 1, $4, $4) RETURNING {PRODUCT_COLUMNS}"
    )
}

/// Puts a catalog event in the outbox, on `conn`: inside the caller's transaction, so the
/// event and the change it describes commit together.
async fn publish(conn: &mut AnyConnection, event: &messaging::Envelope) -> Result<(), StoreError> {
    outbox::enqueue(conn, Destination::Stream(events::STREAM), event).await
}

pub async fn get_product(
    conn: &mut AnyConnection,
    id: ProductId,
) -> Result<Option<Product>, StoreError> {
    let row: Option<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    row.map(Product::try_from).transpose()
}

/// The products among `ids` (unknown ids are simply absent), in id order.
async fn get_products(
    conn: &mut AnyConnection,
    ids: &[ProductId],
) -> Result<Vec<Product>, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
    let rows: Vec<ProductRow> =
        storage::rows_by_id(conn, PRODUCT_COLUMNS, "products", &ids).await?;
    rows.into_iter().map(Product::try_from).collect()
}

/// Products with an id greater than `after`, in id order: a keyset page, so concurrent
/// inserts (which always get larger ids) never shift a page or repeat an item.
pub async fn list_products(
    conn: &mut AnyConnection,
    after: Option<ProductId>,
    limit: u32,
) -> Result<Vec<Product>, StoreError> {
    // The limit is a literal, not a bound parameter: SQLite plans `LIMIT ?` without
    // knowing it and the statement cache then keeps one plan per shape (a bound limit
    // measured 15% slower). It is a u32, so the SQL stays safe.
    let rows: Vec<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id > $1 ORDER BY id LIMIT {limit}"
    )))
    .bind(after.map_or(0, |a| a.0))
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Product::try_from).collect()
}

/// Applies `patch`. With `expected_version`, only if the product is still at that
/// version (optimistic concurrency); otherwise [`StoreError::Stale`].
async fn update_product(
    conn: &mut AnyConnection,
    id: ProductId,
    patch: &ProductPatch,
    expected_version: Option<i64>,
) -> Result<Product, StoreError> {
    let row: Option<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET \
           name = COALESCE($1, name), \
           price_minor = COALESCE($2, price_minor), \
           stock = COALESCE($3, stock), \
           version = version + 1, \
           updated_at = $4 \
         WHERE id = $5 AND version = COALESCE($6, version) \
         RETURNING {PRODUCT_COLUMNS}"
    )))
    .bind(patch.name.as_ref().map(|n| n.as_str().to_owned()))
    .bind(patch.price.map(Money::minor))
    .bind(patch.stock.map(Stock::units))
    .bind(now_millis())
    .bind(id.0)
    .bind(expected_version)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => {
            let product: Product = row.try_into()?;
            publish(conn, &events::product_updated(&product)).await?;
            if patch.stock.is_some() {
                let event = events::stock_changed(
                    id,
                    product.stock.units(),
                    None,
                    events::StockReason::Set,
                    None,
                );
                publish(conn, &event).await?;
            }
            Ok(product)
        }
        None => match (get_product(conn, id).await?, expected_version) {
            (Some(current), Some(expected)) => Err(StoreError::Stale {
                expected,
                current: current.version,
            }),
            _ => Err(StoreError::NotFound(format!("product {}", id.0))),
        },
    }
}

/// Deletes a product and its reviews. `false` when there was none.
async fn delete_product(conn: &mut AnyConnection, id: ProductId) -> Result<bool, StoreError> {
    // Reviews go explicitly: ON DELETE CASCADE needs SQLite's foreign_keys pragma, and a
    // repository should not depend on a connection setting for correctness.
    sqlx::query("DELETE FROM reviews WHERE product_id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM products WHERE id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await?;
    let deleted = done.rows_affected() > 0;
    if deleted {
        publish(conn, &events::product_deleted(id)).await?;
    }
    Ok(deleted)
}

const REVIEW_COLUMNS: &str = "id, product_id, user_id, rating, comment, created_at";

/// Adds a review; [`StoreError::NotFound`] when the product does not exist.
async fn insert_review(conn: &mut AnyConnection, new: &NewReview) -> Result<Review, StoreError> {
    let result = sqlx::query_as::<_, ReviewRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reviews (product_id, user_id, rating, comment, created_at) \
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM products WHERE id = $1) \
         RETURNING {REVIEW_COLUMNS}"
    )))
    .bind(new.product_id.0)
    .bind(new.user_id.0)
    .bind(i64::from(new.rating.stars()))
    .bind(new.comment.as_ref().map(|c| c.as_str().to_owned()))
    .bind(now_millis())
    .fetch_optional(conn)
    .await;
    match result {
        Ok(Some(row)) => row.try_into(),
        Ok(None) => Err(StoreError::NotFound(format!(
            "product {}",
            new.product_id.0
        ))),
        Err(e) if storage::is_foreign_key_violation(&e) => Err(StoreError::NotFound(format!(
            "product {}",
            new.product_id.0
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn get_review(
    conn: &mut AnyConnection,
    product_id: ProductId,
    id: ReviewId,
) -> Result<Option<Review>, StoreError> {
    let row: Option<ReviewRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REVIEW_COLUMNS} FROM reviews WHERE product_id = $1 AND id = $2"
    )))
    .bind(product_id.0)
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    row.map(Review::try_from).transpose()
}

/// A keyset page of one product's reviews, in id order.
async fn list_reviews(
    conn: &mut AnyConnection,
    product_id: ProductId,
    after: Option<ReviewId>,
    limit: u32,
) -> Result<Vec<Review>, StoreError> {
    let rows: Vec<ReviewRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REVIEW_COLUMNS} FROM reviews WHERE product_id = $1 AND id > $2 \
         ORDER BY id LIMIT {limit}"
    )))
    .bind(product_id.0)
    .bind(after.map_or(0, |a| a.0))
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Review::try_from).collect()
}

/// The first `per_product` reviews of each product (`ROW_NUMBER` over each product's
/// reviews: SQLite and PostgreSQL alike), by product then review.
pub(crate) fn reviews_of_sql(ids: &str, per_product: u32) -> String {
    format!(
        "SELECT {REVIEW_COLUMNS} FROM (\
           SELECT {REVIEW_COLUMNS}, ROW_NUMBER() OVER (PARTITION BY product_id ORDER BY id) AS n \
           FROM reviews WHERE product_id IN ({ids})\
         ) AS ranked WHERE n <= {per_product} ORDER BY product_id, id"
    )
}

async fn list_reviews_of(
    conn: &mut AnyConnection,
    ids: &[i64],
    per_product: u32,
) -> Result<Vec<Review>, StoreError> {
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = reviews_of_sql(&placeholders.join(", "), per_product);
    let mut query = sqlx::query_as::<_, ReviewRow>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(*id);
    }
    query
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(Review::try_from)
        .collect()
}

async fn count_products(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM products")
        .fetch_one(conn)
        .await?;
    Ok(n)
}

async fn count_reviews(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM reviews")
        .fetch_one(conn)
        .await?;
    Ok(n)
}

/// The pool-backed face of the repository functions above, with the single-product read
/// cache ([`cache`]) that every product write made through it keeps fresh.
#[derive(Debug, Clone)]
pub struct CatalogStore {
    db: Database,
    cache: Arc<cache::ProductCache>,
    /// The products lists last read from SQLite, reused while their rows are unchanged.
    interned: Arc<interned::Interned>,
    /// Writes put their events in the outbox table; ringing it after a commit gets them
    /// published at once instead of at the relay's next poll.
    outbox: outbox::Outbox,
}

/// Rows read on the SQLite readers, as domain values (validated like sqlx's rows).
fn rows<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

macro_rules! with_conn {
    ($self:ident, |$conn:ident| $body:expr) => {{
        let mut $conn = $self.db.pool().acquire().await?;
        $body
    }};
}

impl CatalogStore {
    /// A store without the read cache: every read goes to the database.
    pub fn new(db: Database) -> Self {
        Self::with_read_cache(db, Duration::ZERO, 0)
    }

    /// A store whose single-product reads are cached for `ttl` (at most `capacity`
    /// products); see [`cache`] for what that means for freshness. Lists keep up to
    /// `capacity` products they read, for rows read again unchanged (see `interned`; that
    /// is not a cache: every list reads its rows).
    pub fn with_read_cache(db: Database, ttl: Duration, capacity: usize) -> Self {
        Self {
            outbox: outbox::Outbox::new(db.clone(), "catalog"),
            db,
            cache: Arc::new(cache::ProductCache::new(ttl, capacity)),
            interned: Arc::new(interned::Interned::new(capacity)),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn create_product(&self, new: &NewProduct) -> Result<Product, StoreError> {
        // A transaction: the product and its ProductCreated event commit together.
        let mut tx = self.db.begin_write().await?;
        let product = self.insert_product_in(&mut tx, new).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Creates a product under the face's `Idempotency-Key` (see `idempotency`),
    /// answering with `render`'s answer (kept for replays): on a SQLite file in one call
    /// on its rusqlite writer (`write::insert_product`), elsewhere (or for a gRPC call
    /// without a key) in one sqlx transaction. Rings the relay for the `ProductCreated`
    /// event that committed with it.
    pub async fn create_product_once<K: Keyed>(
        &self,
        idempotency: &Idempotency,
        write: &K,
        new: NewProduct,
        render: impl FnOnce(Product) -> Result<K::Answer, Problem> + Send + 'static,
    ) -> K::Output {
        if write.writes_locally(idempotency) {
            let answer = write
                .run_local(idempotency, move |conn| {
                    render(write::insert_product(conn, &new)?)
                })
                .await;
            // The rusqlite writer's commit is not a `WriteTx`: ring the relay here.
            self.outbox.notify();
            return answer;
        }
        write
            .run_after(
                idempotency,
                std::future::ready(Ok(())),
                |mut tx| async move {
                    let result = match self.insert_product_in(&mut tx, &new).await {
                        Ok(product) => render(product),
                        Err(err) => Err(err.into()),
                    };
                    (tx, result)
                },
            )
            .await
    }

    /// Inserts a product (and its `ProductCreated` event) in `tx`, a transaction the
    /// caller commits (e.g. the idempotency layer's); the relay is woken when it has
    /// committed, whoever commits it.
    pub async fn insert_product_in(
        &self,
        tx: &mut WriteTx,
        new: &NewProduct,
    ) -> Result<Product, StoreError> {
        let product = insert_product(tx, new).await?;
        let outbox = self.outbox.clone();
        tx.after_commit(move || outbox.notify());
        Ok(product)
    }

    /// Adds a review in `tx`, a transaction the caller commits;
    /// [`StoreError::NotFound`] when the product does not exist.
    pub async fn insert_review_in(
        &self,
        tx: &mut WriteTx,
        new: &NewReview,
    ) -> Result<Review, StoreError> {
        insert_review(tx, new).await
    }

    /// Reserves stock for an order (see [`reservations::reserve`]); the read cache then
    /// forgets the products whose stock changed, or may have if the outcome is unknown.
    pub async fn reserve(
        &self,
        new: &crate::domain::NewReservation,
    ) -> Result<crate::domain::Reservation, reservations::ReserveError> {
        let result = reservations::reserve(&self.db, new).await;
        self.written(new.lines.iter().map(|l| l.product_id));
        result
    }

    /// Releases an order's reservation (see [`reservations::release`]); the read cache
    /// forgets its products (all of them when which ones is not known).
    pub async fn release(
        &self,
        order: &crate::domain::OrderId,
    ) -> Result<crate::domain::Reservation, StoreError> {
        let result = reservations::release(&self.db, order).await;
        match &result {
            Ok(reservation) => self.written(reservation.lines.iter().map(|l| l.product_id)),
            Err(_) => self.forget_all(),
        }
        result
    }

    /// One product, from the read cache when it holds it.
    pub async fn product(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        let ticket = match self.cache.get(&id) {
            Ok(product) => return Ok(Some(product)),
            Err(ticket) => ticket,
        };
        let found = match self.db.readers() {
            Some(readers) => read::product(readers, id.0)
                .await?
                .map(Product::try_from)
                .transpose()?,
            None => with_conn!(self, |c| get_product(&mut c, id).await)?,
        }
        .map(Arc::new);
        if let Some(product) = &found {
            self.cache.fill(ticket, product.id, Arc::clone(product));
        }
        Ok(found)
    }

    /// One product, from the database whatever the cache holds (for decisions that must
    /// see the latest version, such as PATCH's If-Match); refreshes the cache with it.
    pub async fn product_fresh(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        self.cache.invalidate(&id);
        self.product(id).await
    }

    /// After a write's transaction commits (or may have): forgets `ids` in the read cache
    /// and rings the outbox relay.
    fn written(&self, ids: impl IntoIterator<Item = ProductId>) {
        for id in ids {
            self.cache.invalidate(&id);
        }
        self.outbox.notify();
    }

    /// The same store with `outbox` (its relay's publish policy) in place of the default.
    pub fn with_outbox(mut self, outbox: outbox::Outbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// Forgets every cached product and rings the relay: after a write whose products are
    /// not known one by one (a failed release).
    fn forget_all(&self) {
        self.cache.invalidate_all();
        self.outbox.notify();
    }

    /// The outbox catalog's writes fill; its relay runs in `catalog::build`.
    pub fn outbox(&self) -> &outbox::Outbox {
        &self.outbox
    }

    pub async fn products_by_id(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        match self.db.readers() {
            Some(readers) if !ids.is_empty() => {
                let ids = ids.iter().map(|id| id.0).collect();
                rows(read::products_by_id(readers, ids).await?)
            }
            _ => with_conn!(self, |c| get_products(&mut c, ids).await),
        }
    }

    /// Up to `limit` products with ids above `after`, in id order.
    pub async fn products(
        &self,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<Vec<Arc<Product>>, StoreError> {
        match self.db.readers() {
            Some(readers) => {
                let after = after.map_or(0, |a| a.0);
                let listed =
                    read::products(readers, after, limit, Arc::clone(&self.interned)).await?;
                self.interned.resolve(listed)
            }
            None => Ok(
                with_conn!(self, |c| list_products(&mut c, after, limit).await)?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            ),
        }
    }

    pub async fn update_product(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        expected_version: Option<i64>,
    ) -> Result<Product, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let result = update_product(&mut tx, id, patch, expected_version).await;
        let committed = match result {
            Ok(product) => tx
                .commit()
                .await
                .map(|()| product)
                .map_err(StoreError::from),
            Err(err) => Err(err),
        };
        // Forget the product even when the write failed: a stale-version refusal means
        // someone else changed it, and this process may be caching the older row.
        self.written([id]);
        committed
    }

    pub async fn delete_product(&self, id: ProductId) -> Result<bool, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let deleted = delete_product(&mut tx, id).await?;
        let committed = tx.commit().await;
        // Forget it even if the commit's outcome is unknown: it may have gone through.
        self.written([id]);
        committed?;
        Ok(deleted)
    }

    pub async fn create_review(&self, new: &NewReview) -> Result<Review, StoreError> {
        let mut conn = self.db.write_conn().await?;
        insert_review(&mut conn, new).await
    }

    pub async fn review(
        &self,
        product_id: ProductId,
        id: ReviewId,
    ) -> Result<Option<Review>, StoreError> {
        match self.db.readers() {
            Some(readers) => read::review(readers, product_id.0, id.0)
                .await?
                .map(Review::try_from)
                .transpose(),
            None => with_conn!(self, |c| get_review(&mut c, product_id, id).await),
        }
    }

    pub async fn reviews(
        &self,
        product_id: ProductId,
        after: Option<ReviewId>,
        limit: u32,
    ) -> Result<Vec<Review>, StoreError> {
        match self.db.readers() {
            Some(readers) => {
                rows(read::reviews(readers, product_id.0, after.map_or(0, |a| a.0), limit).await?)
            }
            None => with_conn!(self, |c| list_reviews(&mut c, product_id, after, limit)
                .await),
        }
    }

    /// Up to `per_product` reviews of each of `products`, oldest first, ordered by
    /// product then review: one statement for them all.
    pub async fn reviews_of(
        &self,
        products: &[ProductId],
        per_product: u32,
    ) -> Result<Vec<Review>, StoreError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = products.iter().map(|id| id.0).collect();
        match self.db.readers() {
            Some(readers) => rows(read::reviews_of(readers, ids, per_product).await?),
            None => with_conn!(self, |c| list_reviews_of(&mut c, &ids, per_product).await),
        }
    }

    pub async fn product_count(&self) -> Result<i64, StoreError> {
        with_conn!(self, |c| count_products(&mut c).await)
    }

    pub async fn review_count(&self) -> Result<i64, StoreError> {
        with_conn!(self, |c| count_reviews(&mut c).await)
    }
}
