//! Analytics: a second consumer group (`analytics`) on `order-events` that keeps its own
//! projection — orders and revenue per product — in its own tables of billing's database
//! (`analytics_*`, migration `0002_analytics.sql`). It lives in billing because it is the
//! money side, but shares nothing with billing's payments: it could move to a service of
//! its own with its tables and this module.
//!
//! **What it counts.** `OrderCreated` remembers the order's lines; `OrderPaid` adds them to
//! each product (`orders_paid` +1, `units_paid`, `revenue_minor` += quantity × unit price);
//! `OrderRefunded` takes them away again. An order whose `OrderCreated` has no items (a
//! producer that only knows the seed's shape) counts for nothing. The projection keeps
//! each order's furthest status (created < paid < refunded) and counts an order while it
//! has lines and is `paid`, so its state depends on *which* events were applied, not on
//! the order they came in — which is what makes the replay race below harmless.
//!
//! **Once per event.** Each event's transaction records its id in `analytics_applied` (the
//! projection's own inbox) with the projection's change: an event delivered again, or
//! replayed into an unchanged projection, is skipped.
//!
//! **Replay** ([`replay`], `brigade replay analytics --from earliest`): empty the three
//! tables in one transaction, then move the group back to the stream's start; the
//! members apply everything again to the same result. The race: a member of a *running*
//! billing may hold an event it took before the reset and commit it after the clear.
//! - In the database that is harmless. Every write of the projection first updates the one
//!   row of `analytics_state`, so the clear and an event's transaction never interleave
//!   (PostgreSQL queues them on that row's lock; SQLite has one writer at a time anyway):
//!   the event lands either before the clear (and is cleared, then replayed) or after it
//!   (and its id is kept, so the replayed copy is skipped). Since the projection depends
//!   only on the set of events applied, either way ends at the same result.
//! - On the stream the member's late commit does not move the group back past the
//!   reset: the embedded store and RabbitMQ fence it by the reset's epoch, NATS sends it
//!   to the consumer the reset deleted, and Kafka refuses to reset a group that has a
//!   member in another process (the command then fails *after* the clear: the projection
//!   is incomplete until it is run again with billing stopped).
//!
//! Running it with billing stopped is the plain way; with billing running it is safe on
//! the embedded store, RabbitMQ and NATS.

use std::collections::BTreeMap;

use messaging::worker::{self, HandleError, WorkerOptions};
use messaging::{Broker, Envelope, StartFrom};
use orders::events::{
    ANALYTICS_GROUP, ORDER_CREATED, ORDER_EVENTS, ORDER_PAID, ORDER_REFUNDED, OrderCreated,
    OrderLine, OrderPaid, OrderRefunded,
};
use serde::de::DeserializeOwned;
use settings::Settings;
use sqlx::AnyConnection;
use storage::{Database, StoreError, now_millis};
use tokio_util::sync::CancellationToken;

use crate::SERVICE;

/// The group's name on `order-events`.
pub const GROUP: &str = ANALYTICS_GROUP;

/// The payload versions this projection reads.
const SCHEMA_VERSION: u32 = 1;

/// One product's paid orders, as the projection holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductSales {
    pub product_id: i64,
    /// Paid (and not refunded) orders with at least one line of this product.
    pub orders_paid: i64,
    /// Units of it in those orders.
    pub units_paid: i64,
    /// What those units were sold for, in minor units (cents).
    pub revenue_minor: i64,
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now (which may change no product: an order without lines, say).
    Applied,
    /// Its id was applied already: nothing changed.
    Duplicate,
    /// Not an event the projection reads (confirmations, cancellations, ...).
    Ignored,
}

/// What a clear removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleared {
    pub orders: u64,
    pub products: u64,
    pub applied: u64,
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The event is not the contract's: it never will be applied.
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AnalyticsError {
    fn from(err: sqlx::Error) -> Self {
        AnalyticsError::Store(err.into())
    }
}

/// The projection over `db` (billing's database, migrated).
pub fn projection(db: Database) -> Analytics {
    Analytics { db }
}

/// Reads and writes the projection.
#[derive(Debug, Clone)]
pub struct Analytics {
    db: Database,
}

/// How far an order got; the order of the variants is the order of the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Created,
    Paid,
    Refunded,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Paid => "paid",
            Status::Refunded => "refunded",
        }
    }

    fn parse(raw: &str) -> Option<Status> {
        match raw {
            "created" => Some(Status::Created),
            "paid" => Some(Status::Paid),
            "refunded" => Some(Status::Refunded),
            _ => None,
        }
    }
}

/// What one event tells the projection about its order.
#[derive(Debug)]
enum Fact {
    /// Created, with its lines (`None`: the producer gave none that can be counted).
    Created(Option<Vec<OrderLine>>),
    Paid,
    Refunded,
}

/// Per product: (units, revenue) of one order's lines; `None` if a sum overflows.
fn per_product(lines: &[OrderLine]) -> Option<BTreeMap<i64, (i64, i64)>> {
    let mut sums = BTreeMap::new();
    for line in lines {
        let revenue = line.quantity.checked_mul(line.unit_price_minor)?;
        let (units, money) = sums.entry(line.product_id).or_insert((0i64, 0i64));
        *units = units.checked_add(line.quantity)?;
        *money = money.checked_add(revenue)?;
    }
    Some(sums)
}

/// The lines of an `OrderCreated`, if they can be counted: at least one, each with a
/// positive quantity and a price that is not negative, and sums that fit.
fn countable(order_id: &str, items: Vec<OrderLine>) -> Option<Vec<OrderLine>> {
    if items.is_empty() {
        tracing::debug!(
            order_id,
            "OrderCreated without items (a foreign producer?): the order counts for nothing"
        );
        return None;
    }
    let valid = items
        .iter()
        .all(|l| l.quantity > 0 && l.unit_price_minor >= 0);
    if !valid || per_product(&items).is_none() {
        tracing::warn!(
            order_id,
            "OrderCreated with lines that cannot be counted: the order counts for nothing"
        );
        return None;
    }
    Some(items)
}

/// The order and what the event tells about it; `None` for an event the projection does
/// not read.
fn fact_of(envelope: &Envelope) -> Result<Option<(String, Fact)>, AnalyticsError> {
    Ok(Some(match envelope.kind.as_str() {
        ORDER_CREATED => {
            let created: OrderCreated = payload(envelope)?;
            let lines = countable(&created.order_id, created.items);
            (created.order_id, Fact::Created(lines))
        }
        ORDER_PAID => (payload::<OrderPaid>(envelope)?.order_id, Fact::Paid),
        ORDER_REFUNDED => (payload::<OrderRefunded>(envelope)?.order_id, Fact::Refunded),
        _ => return Ok(None),
    }))
}

fn payload<T: DeserializeOwned>(envelope: &Envelope) -> Result<T, AnalyticsError> {
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(AnalyticsError::Unreadable(format!(
            "{} schema version {} is not one analytics reads ({SCHEMA_VERSION})",
            envelope.kind, envelope.schema_version
        )));
    }
    serde_json::from_value(envelope.payload.clone()).map_err(|e| {
        AnalyticsError::Unreadable(format!(
            "{} payload is not the contract's: {e}",
            envelope.kind
        ))
    })
}

/// An order as the projection holds it.
#[derive(Debug, Default)]
struct OrderState {
    lines: Option<Vec<OrderLine>>,
    status: Option<Status>,
}

impl OrderState {
    fn with(self, fact: Fact) -> OrderState {
        let (lines, status) = match fact {
            // The first lines stay: an order's lines never change.
            Fact::Created(lines) => (self.lines.or(lines), Status::Created),
            Fact::Paid => (self.lines, Status::Paid),
            Fact::Refunded => (self.lines, Status::Refunded),
        };
        OrderState {
            lines,
            status: Some(self.status.map_or(status, |s| s.max(status))),
        }
    }

    /// The lines it contributes to the products: a paid order's, and only those.
    fn counted(&self) -> Option<&[OrderLine]> {
        match self.status {
            Some(Status::Paid) => self.lines.as_deref(),
            _ => None,
        }
    }
}

/// Takes the projection's lock row first (see the module doc): what follows in this
/// transaction never interleaves with a clear.
async fn lock(conn: &mut AnyConnection, set: &'static str) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE analytics_state SET {set} WHERE id = 1"
    )))
    .execute(conn)
    .await?;
    Ok(())
}

async fn delete_all(conn: &mut AnyConnection, table: &'static str) -> Result<u64, StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

async fn load_order(conn: &mut AnyConnection, order_id: &str) -> Result<OrderState, StoreError> {
    let row: Option<(Option<String>, String)> =
        sqlx::query_as("SELECT lines, status FROM analytics_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    let Some((lines, status)) = row else {
        return Ok(OrderState::default());
    };
    let corrupt = |what: String| StoreError::Corrupt(format!("analytics order {order_id}: {what}"));
    let lines = lines
        .map(|json| serde_json::from_str::<Vec<OrderLine>>(&json))
        .transpose()
        .map_err(|e| corrupt(format!("lines {e}")))?;
    let status = Status::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
    Ok(OrderState {
        lines,
        status: Some(status),
    })
}

async fn save_order(
    conn: &mut AnyConnection,
    order_id: &str,
    state: &OrderState,
) -> Result<(), StoreError> {
    let lines = state
        .lines
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("analytics order {order_id}: lines {e}")))?;
    let status = state.status.unwrap_or(Status::Created);
    sqlx::query(
        "INSERT INTO analytics_orders (order_id, lines, status, updated_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (order_id) DO UPDATE SET lines = excluded.lines, \
         status = excluded.status, updated_at = excluded.updated_at",
    )
    .bind(order_id)
    .bind(lines)
    .bind(status.as_str())
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds (`sign` 1) or takes away (`sign` -1) one order's lines from its products.
async fn count(
    conn: &mut AnyConnection,
    order_id: &str,
    lines: &[OrderLine],
    sign: i64,
) -> Result<(), StoreError> {
    let sums = per_product(lines).ok_or_else(|| {
        StoreError::Corrupt(format!("analytics order {order_id}: its sums overflow"))
    })?;
    for (product_id, (units, revenue)) in sums {
        if sign > 0 {
            sqlx::query(
                "INSERT INTO analytics_products (product_id, orders_paid, units_paid, revenue_minor) \
                 VALUES ($1, 1, $2, $3) \
                 ON CONFLICT (product_id) DO UPDATE SET \
                 orders_paid = analytics_products.orders_paid + 1, \
                 units_paid = analytics_products.units_paid + excluded.units_paid, \
                 revenue_minor = analytics_products.revenue_minor + excluded.revenue_minor",
            )
            .bind(product_id)
            .bind(units)
            .bind(revenue)
            .execute(&mut *conn)
            .await?;
        } else {
            // A plain UPDATE (the order was added, so the row is there): an upsert's
            // proposed row would break the CHECK before the conflict is seen.
            sqlx::query(
                "UPDATE analytics_products SET orders_paid = orders_paid - 1, \
                 units_paid = units_paid - $2, revenue_minor = revenue_minor - $3 \
                 WHERE product_id = $1",
            )
            .bind(product_id)
            .bind(units)
            .bind(revenue)
            .execute(&mut *conn)
            .await?;
            // No paid order left, no row: the same as a product never paid for, so the
            // result does not depend on the order events were applied in.
            sqlx::query("DELETE FROM analytics_products WHERE product_id = $1 AND orders_paid = 0")
                .bind(product_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

impl Analytics {
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every product with a paid order, by id.
    pub async fn products(&self) -> Result<Vec<ProductSales>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT product_id, orders_paid, units_paid, revenue_minor \
             FROM analytics_products ORDER BY product_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(product_id, orders_paid, units_paid, revenue_minor)| ProductSales {
                    product_id,
                    orders_paid,
                    units_paid,
                    revenue_minor,
                },
            )
            .collect())
    }

    /// Applies one event of `order-events`: its id and the projection's change commit
    /// together, once.
    pub async fn apply(&self, envelope: &Envelope) -> Result<Applied, AnalyticsError> {
        let Some((order_id, fact)) = fact_of(envelope)? else {
            return Ok(Applied::Ignored);
        };
        let mut tx = self.db.begin_write().await?;
        lock(&mut tx, "events_applied = events_applied + 1").await?;
        let first = sqlx::query(
            "INSERT INTO analytics_applied (event_id, order_id, applied_at) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(envelope.id.to_string())
        .bind(order_id.as_str())
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            tx.rollback().await?;
            return Ok(Applied::Duplicate);
        }
        let before = load_order(&mut tx, &order_id).await?;
        let was = before.counted().map(<[OrderLine]>::to_vec);
        let after = before.with(fact);
        save_order(&mut tx, &order_id, &after).await?;
        match (was.as_deref(), after.counted()) {
            (None, Some(lines)) => count(&mut tx, &order_id, lines, 1).await?,
            (Some(lines), None) => count(&mut tx, &order_id, lines, -1).await?,
            (None, None) if after.status == Some(Status::Paid) => {
                tracing::debug!(
                    order_id,
                    kind = %envelope.kind,
                    "a paid order without known lines counts for nothing"
                );
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(Applied::Applied)
    }

    /// Empties the projection — orders, products and applied ids — in one transaction.
    pub async fn rebuild_from_scratch(&self) -> Result<Cleared, StoreError> {
        rebuild_from_scratch(&self.db).await
    }
}

/// Empties the projection in `db` — orders, products and applied ids — in one
/// transaction, which waits for an event's transaction under way (and holds off the next)
/// on the projection's lock row.
pub async fn rebuild_from_scratch(db: &Database) -> Result<Cleared, StoreError> {
    let mut tx = db.begin_write().await?;
    lock(&mut tx, "events_applied = 0").await?;
    sqlx::query("UPDATE analytics_state SET cleared_at = $1 WHERE id = 1")
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
    let cleared = Cleared {
        applied: delete_all(&mut tx, "analytics_applied").await?,
        orders: delete_all(&mut tx, "analytics_orders").await?,
        products: delete_all(&mut tx, "analytics_products").await?,
    };
    tx.commit().await?;
    Ok(cleared)
}

/// Handles one event for the group: the one conversion of a failure into a message
/// outcome.
pub async fn handle(analytics: &Analytics, envelope: Envelope) -> Result<(), HandleError> {
    match analytics.apply(&envelope).await {
        Ok(_) => Ok(()),
        Err(err @ AnalyticsError::Unreadable(_)) => Err(HandleError::Permanent(err.to_string())),
        Err(err @ AnalyticsError::Store(StoreError::Corrupt(_))) => {
            Err(HandleError::Permanent(err.to_string()))
        }
        Err(err @ AnalyticsError::Store(_)) => Err(HandleError::Transient(err.to_string())),
    }
}

/// The group's member in this process: joins `analytics` (a new group starts at the
/// stream's earliest event) and serves it with `run_stream` until `stop`, joining again
/// after a backoff if its consumer fails.
pub async fn run_member(
    broker: Broker,
    analytics: Analytics,
    options: WorkerOptions,
    stop: CancellationToken,
) {
    worker::supervise("order-events/analytics", stop, move |stop| {
        let (broker, analytics) = (broker.clone(), analytics.clone());
        async move {
            let consumer = broker
                .streams
                .subscribe(ORDER_EVENTS, GROUP, StartFrom::Earliest)
                .await?;
            let handler = |envelope| {
                let analytics = analytics.clone();
                async move { handle(&analytics, envelope).await }
            };
            worker::run_stream(ORDER_EVENTS, GROUP, consumer, options, handler, stop).await
        }
    })
    .await;
}

/// What [`replay`] did.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    pub cleared: Cleared,
    pub from: StartFrom,
}

/// Why [`replay`] failed, and how far it got.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("opening billing's database: {0}")]
    Database(#[from] storage::StorageError),
    #[error("connecting to the messaging backend: {0}")]
    Broker(messaging::MessagingError),
    #[error("clearing the analytics projection (nothing changed): {0}")]
    Clear(StoreError),
    #[error(
        "the analytics projection was cleared ({cleared:?}) but group {GROUP} could not be \
         moved: {source}; the projection is incomplete until the replay is run again \
         (with billing stopped)"
    )]
    Reset {
        cleared: Cleared,
        #[source]
        source: messaging::MessagingError,
    },
}

/// `brigade replay analytics`: opens billing's database (migrated), empties the
/// projection, then moves group `analytics` on `order-events` to `from`; the group's
/// members (billing's, running now or started later) rebuild the projection from there.
/// Clear first, then reset: the other way round, an event applied between the two would
/// be cleared after the group had passed it. See the module doc for a running billing.
pub async fn replay(settings: &Settings, from: StartFrom) -> Result<Replayed, ReplayError> {
    let broker = messaging::connect(settings)
        .await
        .map_err(ReplayError::Broker)?;
    // Declared as billing declares it, so a replay before billing ever ran has a stream to
    // reset (idempotent).
    let order_events: Vec<_> = orders::events::channels()
        .into_iter()
        .filter(|c| c.address == ORDER_EVENTS)
        .collect();
    messaging::declare(&broker, &order_events, &settings.messaging)
        .await
        .map_err(ReplayError::Broker)?;
    let db = Database::open(
        &settings.database_url(SERVICE),
        &settings.database,
        crate::ALL_MIGRATIONS,
    )
    .await?;
    let cleared = rebuild_from_scratch(&db).await.map_err(ReplayError::Clear);
    db.close().await;
    let cleared = cleared?;
    broker
        .streams
        .reset(ORDER_EVENTS, GROUP, from)
        .await
        .map_err(|source| ReplayError::Reset { cleared, source })?;
    tracing::info!(stream = ORDER_EVENTS, group = GROUP, from = ?from, ?cleared, "analytics projection cleared and its group reset");
    Ok(Replayed { cleared, from })
}
