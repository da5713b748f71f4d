//! Billing's own database: the `payments` table (one row per order: the provider's answer
//! to its charge, and its refund). [`BillingStore`] is the store's one door: reads on its
//! pool, writes inside a caller's transaction (`*_in`), where the inbox record of the
//! event being handled commits with them. A payment write puts its event in the outbox
//! in the same transaction and wakes the relay once it commits, whoever commits it.

use messaging::outbox::{self, Destination, Outbox};
use sqlx::{AnyConnection, FromRow};
use storage::{Database, Migrations, StoreError, WriteTx, now_millis};

use crate::domain::{Currency, OrderId, Payment, PaymentStatus};
use crate::events;

pub static MIGRATIONS: Migrations = Migrations {
    owner: "billing",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

const PAYMENT_COLUMNS: &str = "order_id, amount_minor, currency, status, charge_id, \
     decline_code, decline_reason, refund_id, created_at, updated_at";

#[derive(FromRow)]
struct PaymentRow {
    order_id: String,
    amount_minor: i64,
    currency: String,
    status: String,
    charge_id: Option<String>,
    decline_code: Option<String>,
    decline_reason: Option<String>,
    refund_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;

    fn try_from(row: PaymentRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("payment of {}: {what}", row.order_id));
        Ok(Payment {
            order_id: OrderId::parse(&row.order_id)
                .map_err(|r| corrupt(format!("order id {r}")))?,
            amount: money::Money::from_minor(row.amount_minor)
                .map_err(|r| corrupt(format!("amount {r}")))?,
            currency: Currency::parse(&row.currency)
                .map_err(|r| corrupt(format!("currency {r}")))?,
            status: PaymentStatus::parse(&row.status)
                .map_err(|r| corrupt(format!("status {r}")))?,
            charge_id: row.charge_id,
            decline_code: row.decline_code,
            decline_reason: row.decline_reason,
            refund_id: row.refund_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

async fn get_payment(
    conn: &mut AnyConnection,
    order: &OrderId,
) -> Result<Option<Payment>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1"
    )))
    .bind(order.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(Payment::try_from).transpose()
}

/// Inserts `payment` unless its order has one already; `true` when it did.
async fn insert_payment(conn: &mut AnyConnection, payment: &Payment) -> Result<bool, StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (order_id) DO NOTHING"
    )))
    .bind(payment.order_id.as_str())
    .bind(payment.amount.minor())
    .bind(payment.currency.as_str())
    .bind(payment.status.as_str())
    .bind(payment.charge_id.clone())
    .bind(payment.decline_code.clone())
    .bind(payment.decline_reason.clone())
    .bind(payment.refund_id.clone())
    .bind(payment.created_at)
    .bind(payment.updated_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the succeeded payment of `order` refunded by `refund_id`; the refunded payment,
/// or `None` when there is no succeeded payment to mark (none, declined, or refunded
/// already).
async fn mark_refunded(
    conn: &mut AnyConnection,
    order: &OrderId,
    refund_id: &str,
) -> Result<Option<Payment>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE payments SET status = 'refunded', refund_id = $1, updated_at = $2 \
         WHERE order_id = $3 AND status = 'succeeded' RETURNING {PAYMENT_COLUMNS}"
    )))
    .bind(refund_id)
    .bind(now_millis())
    .bind(order.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(Payment::try_from).transpose()
}

/// The pool- and transaction-backed face of the repository functions above.
#[derive(Debug, Clone)]
pub struct BillingStore {
    db: Database,
    /// Payment writes put their events here; it is rung after they commit.
    outbox: Outbox,
}

impl BillingStore {
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The outbox billing's writes fill; its relay runs in `billing::build`.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub async fn payment(&self, order: &OrderId) -> Result<Option<Payment>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        get_payment(&mut conn, order).await
    }

    /// A write transaction, for a payment write and the inbox record of the event it
    /// handles.
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        Ok(self.db.begin_write().await?)
    }

    /// Records `payment` and its event (`OrderPaid` or `PaymentFailed`) in `tx`; `false`,
    /// writing nothing, when the order has a payment already.
    pub async fn insert_payment_in(
        &self,
        tx: &mut WriteTx,
        payment: &Payment,
    ) -> Result<bool, StoreError> {
        let event = events::of_payment(payment)?;
        if !insert_payment(tx, payment).await? {
            return Ok(false);
        }
        self.enqueue_in(tx, &event).await?;
        Ok(true)
    }

    /// Marks the order's succeeded payment refunded, with its `OrderRefunded` event, in
    /// `tx`; `None`, writing nothing, when it has no succeeded payment.
    pub async fn refund_in(
        &self,
        tx: &mut WriteTx,
        order: &OrderId,
        refund_id: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let Some(payment) = mark_refunded(tx, order, refund_id).await? else {
            return Ok(None);
        };
        let event = events::of_payment(&payment)?;
        self.enqueue_in(tx, &event).await?;
        Ok(Some(payment))
    }

    async fn enqueue_in(
        &self,
        tx: &mut WriteTx,
        event: &messaging::Envelope,
    ) -> Result<(), StoreError> {
        outbox::enqueue(tx, Destination::Stream(events::STREAM), event).await?;
        let outbox = self.outbox.clone();
        tx.after_commit(move || outbox.notify());
        Ok(())
    }
}
