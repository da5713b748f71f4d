//! Orders' own database: `orders`, their `order_items` (priced when accepted) and their
//! `order_transitions` (the history a client reads). The store is the one door: writes
//! happen inside a caller's transaction (`*_in`) with the messages they imply, and what
//! must follow a commit — waking the outbox relay, telling watchers — is registered on
//! that transaction, run only once it commits.

use messaging::outbox::Outbox;
use sqlx::AnyConnection;
use storage::{Database, Migrations, StoreError, WriteTx, now_millis};
use tokio::sync::broadcast;

use crate::domain::{Line, Order, OrderId, ProductId, Status, Transition, UserId};

pub static MIGRATIONS: Migrations = Migrations {
    owner: "orders",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

const ORDER_COLUMNS: &str =
    "seq, id, user_id, status, total_minor, currency, correlation_id, created_at";

type OrderRow = (i64, String, i64, String, i64, String, String, i64);

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

/// The statements of an order's insert, shared by sqlx ([`insert_order`]) and the SQLite
/// file's rusqlite writer ([`insert_order_local`]); parameters in order.
const INSERT_ORDER: &str = "INSERT INTO orders (id, user_id, status, total_minor, currency, \
     correlation_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING seq";
const INSERT_ITEM: &str = "INSERT INTO order_items (order_id, line, product_id, quantity, \
     unit_price_minor) VALUES ($1, $2, $3, $4, $5)";
const INSERT_TRANSITION: &str = "INSERT INTO order_transitions (order_id, step, status, at, \
     reason) VALUES ($1, $2, $3, $4, $5)";

async fn insert_order(conn: &mut AnyConnection, order: &Order) -> Result<i64, StoreError> {
    let (seq,): (i64,) = sqlx::query_as(INSERT_ORDER)
        .bind(order.id.as_str().to_owned())
        .bind(order.user_id.0)
        .bind(order.status.as_str())
        .bind(order.total_minor)
        .bind(order.currency.clone())
        .bind(order.correlation_id.clone())
        .bind(order.created_at)
        .fetch_one(&mut *conn)
        .await?;
    for (line, item) in order.lines.iter().enumerate() {
        sqlx::query(INSERT_ITEM)
            .bind(order.id.as_str().to_owned())
            .bind(i64::try_from(line).unwrap_or(i64::MAX))
            .bind(item.product_id.0)
            .bind(item.quantity)
            .bind(item.unit_price_minor)
            .execute(&mut *conn)
            .await?;
    }
    for (step, t) in order.history.iter().enumerate() {
        insert_transition(conn, &order.id, i64::try_from(step).unwrap_or(0) + 1, t).await?;
    }
    Ok(seq)
}

async fn insert_transition(
    conn: &mut AnyConnection,
    id: &OrderId,
    step: i64,
    t: &Transition,
) -> Result<(), StoreError> {
    sqlx::query(INSERT_TRANSITION)
        .bind(id.as_str().to_owned())
        .bind(step)
        .bind(t.status.as_str())
        .bind(t.at)
        .bind(t.reason.clone())
        .execute(conn)
        .await?;
    Ok(())
}

/// [`insert_order`] on a SQLite file's rusqlite writer (inside its transaction, with the
/// idempotency key's record), with the order's messages: the accept's one synchronous
/// call under the file's write lock. The caller rings the relay once it returns.
pub fn insert_order_local(
    conn: &storage::rusqlite::Connection,
    order: &Order,
    messages: &[(messaging::outbox::Destination<'_>, messaging::Envelope)],
) -> Result<i64, StoreError> {
    use storage::rusqlite::params;
    let sqlite = |e: storage::rusqlite::Error| StoreError::from(storage::SqliteError::from(e));
    let seq: i64 = conn
        .prepare_cached(INSERT_ORDER)
        .and_then(|mut s| {
            s.query_row(
                params![
                    order.id.as_str(),
                    order.user_id.0,
                    order.status.as_str(),
                    order.total_minor,
                    order.currency,
                    order.correlation_id,
                    order.created_at,
                ],
                |row| row.get(0),
            )
        })
        .map_err(sqlite)?;
    for (line, item) in order.lines.iter().enumerate() {
        conn.prepare_cached(INSERT_ITEM)
            .and_then(|mut s| {
                s.execute(params![
                    order.id.as_str(),
                    i64::try_from(line).unwrap_or(i64::MAX),
                    item.product_id.0,
                    item.quantity,
                    item.unit_price_minor,
                ])
            })
            .map_err(sqlite)?;
    }
    for (step, t) in order.history.iter().enumerate() {
        conn.prepare_cached(INSERT_TRANSITION)
            .and_then(|mut s| {
                s.execute(params![
                    order.id.as_str(),
                    i64::try_from(step).unwrap_or(0) + 1,
                    t.status.as_str(),
                    t.at,
                    t.reason,
                ])
            })
            .map_err(sqlite)?;
    }
    for (to, envelope) in messages {
        messaging::outbox::enqueue_local(conn, *to, envelope)?;
    }
    Ok(seq)
}

async fn complete(conn: &mut AnyConnection, row: OrderRow) -> Result<Order, StoreError> {
    let (seq, id, user_id, status, total_minor, currency, correlation_id, created_at) = row;
    let status = Status::parse(&status).ok_or_else(|| corrupt(format!("order {id}: {status}")))?;
    let items: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT product_id, quantity, unit_price_minor FROM order_items \
         WHERE order_id = $1 ORDER BY line",
    )
    .bind(id.clone())
    .fetch_all(&mut *conn)
    .await?;
    let steps: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT status, at, reason FROM order_transitions WHERE order_id = $1 ORDER BY step",
    )
    .bind(id.clone())
    .fetch_all(&mut *conn)
    .await?;
    let history = steps
        .into_iter()
        .map(|(s, at, reason)| {
            Ok(Transition {
                status: Status::parse(&s)
                    .ok_or_else(|| corrupt(format!("order {id} transition {s}")))?,
                at,
                reason,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // The status is the last transition's: the row and its history are read by separate
    // statements, and a move committing between them must not pair an old status with a
    // new history (a move writes both in one transaction; the history is append-only).
    let status = history.last().map_or(status, |t| t.status);
    Ok(Order {
        seq,
        id: OrderId::parse(&id).map_err(|_| corrupt(format!("order id {id:?}")))?,
        user_id: UserId(user_id),
        status,
        lines: items
            .into_iter()
            .map(|(product, quantity, unit_price_minor)| Line {
                product_id: ProductId(product),
                quantity,
                unit_price_minor,
            })
            .collect(),
        total_minor,
        currency,
        correlation_id,
        history,
        created_at,
    })
}

async fn get_order(conn: &mut AnyConnection, id: &OrderId) -> Result<Option<Order>, StoreError> {
    let row: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
    )))
    .bind(id.as_str().to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(Some(complete(conn, row).await?)),
        None => Ok(None),
    }
}

async fn list_orders(
    conn: &mut AnyConnection,
    user: UserId,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<Order>, StoreError> {
    let rows: Vec<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3"
    )))
    .bind(user.0)
    .bind(after.unwrap_or(0))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        orders.push(complete(conn, row).await?);
    }
    Ok(orders)
}

/// Moves `id` to `to` if it stands in one of the states `to` is reached from, recording
/// the transition. `Ok(Moved)` or, when it stands elsewhere, `Ok(Stays(current))`.
async fn move_order(
    conn: &mut AnyConnection,
    id: &OrderId,
    to: Status,
    reason: &str,
) -> Result<Move, StoreError> {
    let from = to.reached_from();
    let now = now_millis();
    // Conditional on the state read in the same statement: two movers race, one wins.
    let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ({})",
        if placeholders.is_empty() {
            "NULL".to_owned()
        } else {
            placeholders.join(", ")
        }
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(now)
        .bind(id.as_str().to_owned());
    for s in from {
        query = query.bind(s.as_str());
    }
    let moved = query.execute(&mut *conn).await?;
    if moved.rows_affected() == 1 {
        let (step,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(step), 0) + 1 FROM order_transitions WHERE order_id = $1",
        )
        .bind(id.as_str().to_owned())
        .fetch_one(&mut *conn)
        .await?;
        let t = Transition {
            status: to,
            at: now,
            reason: reason.to_owned(),
        };
        insert_transition(conn, id, step, &t).await?;
        return Ok(Move::Moved);
    }
    let current: Option<(String,)> = sqlx::query_as("SELECT status FROM orders WHERE id = $1")
        .bind(id.as_str().to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    match current {
        None => Err(StoreError::NotFound(format!("order {id}"))),
        Some((s,)) => Status::parse(&s)
            .map(Move::Stays)
            .ok_or_else(|| corrupt(format!("order {id}: {s}"))),
    }
}

/// What [`OrdersStore::move_in`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Moved,
    /// It was not in a state the move starts from; here is where it stands.
    Stays(Status),
}

/// The store: its pool, its outbox, and the bell watchers of orders listen to.
#[derive(Debug, Clone)]
pub struct OrdersStore {
    db: Database,
    outbox: Outbox,
    changed: broadcast::Sender<OrderId>,
}

impl OrdersStore {
    pub fn new(db: Database) -> Self {
        let outbox = Outbox::new(db.clone(), "orders");
        Self::with_outbox(db, outbox)
    }

    pub fn with_outbox(db: Database, outbox: Outbox) -> Self {
        let (changed, _) = broadcast::channel(1024);
        Self {
            db,
            outbox,
            changed,
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// After a write the rusqlite writer committed (not a `WriteTx`): ring the relay. (A
    /// new order has no watchers yet.)
    pub fn committed_locally(&self) {
        self.outbox.notify();
    }

    /// Ids of orders this process changed, as each change commits (a watcher re-reads
    /// the order; changes made by other processes are seen by polling).
    pub fn changes(&self) -> broadcast::Receiver<OrderId> {
        self.changed.subscribe()
    }

    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        Ok(self.db.begin_write().await?)
    }

    /// Records a new order in `tx`; returns its `seq`. Once `tx` commits, the relay wakes
    /// and watchers hear of it.
    pub async fn insert_in(&self, tx: &mut WriteTx, order: &Order) -> Result<i64, StoreError> {
        let seq = insert_order(tx, order).await?;
        self.after_commit(tx, order.id.clone());
        Ok(seq)
    }

    /// Moves an order in `tx` (see [`Move`]); once `tx` commits, the relay wakes and
    /// watchers hear of it.
    pub async fn move_in(
        &self,
        tx: &mut WriteTx,
        id: &OrderId,
        to: Status,
        reason: &str,
    ) -> Result<Move, StoreError> {
        let moved = move_order(tx, id, to, reason).await?;
        if moved == Move::Moved {
            self.after_commit(tx, id.clone());
        }
        Ok(moved)
    }

    fn after_commit(&self, tx: &mut WriteTx, id: OrderId) {
        let (changed, outbox) = (self.changed.clone(), self.outbox.clone());
        tx.after_commit(move || {
            outbox.notify();
            // Nobody watching is fine.
            let _ = changed.send(id);
        });
    }

    pub async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        get_order(&mut conn, id).await
    }

    /// An order read in `tx` (what a use case decides on before it moves it).
    pub async fn order_in(
        &self,
        tx: &mut WriteTx,
        id: &OrderId,
    ) -> Result<Option<Order>, StoreError> {
        get_order(tx, id).await
    }

    pub async fn orders_of(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        list_orders(&mut conn, user, after, limit).await
    }

    /// Orders by status, for `/metrics`.
    pub async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
                .fetch_all(&mut *conn)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Status::parse(&s).map(|s| (s, n)))
            .collect())
    }
}
