//! The sandbox's own database: the ledger, `charges` and `refunds`. [`PaymentsStore`] is
//! the store's one door: its methods run the private repository functions below on its
//! pool, or inside a caller's transaction (`*_in`: the idempotency key's).

use sqlx::{AnyConnection, FromRow};
use storage::{Database, Migrations, StoreError, WriteTx};

use crate::domain::{
    Amount, Charge, ChargeId, Currency, Decline, Description, OrderRef, Outcome, Refund, RefundId,
};

pub static MIGRATIONS: Migrations = Migrations {
    owner: "payments",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

const CHARGE_COLUMNS: &str = "id, amount, currency, order_id, description, status, \
     failure_code, failure_message, decline_code, amount_refunded, created_at";

const REFUND_COLUMNS: &str = "id, charge_id, amount, created_at";

#[derive(FromRow)]
struct ChargeRow {
    id: String,
    amount: i64,
    currency: String,
    order_id: String,
    description: Option<String>,
    status: String,
    failure_code: Option<String>,
    failure_message: Option<String>,
    decline_code: Option<String>,
    amount_refunded: i64,
    created_at: i64,
}

impl TryFrom<ChargeRow> for Charge {
    type Error = StoreError;

    fn try_from(row: ChargeRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("charge {}: {what}", row.id));
        let outcome = match (row.status.as_str(), row.failure_code) {
            ("succeeded", None) => Outcome::Succeeded,
            ("failed", Some(failure_code)) => Outcome::Failed(Decline {
                failure_code,
                failure_message: row.failure_message.unwrap_or_default(),
                decline_code: row.decline_code.unwrap_or_default(),
            }),
            (status, _) => return Err(corrupt(format!("status {status}"))),
        };
        let amount = Amount::parse(row.amount).map_err(|r| corrupt(format!("amount {r}")))?;
        if !(0..=amount.cents()).contains(&row.amount_refunded) {
            return Err(corrupt(format!("amount_refunded {}", row.amount_refunded)));
        }
        Ok(Charge {
            id: ChargeId::parse(&row.id).map_err(|r| corrupt(format!("id {r}")))?,
            amount,
            currency: Currency::parse(&row.currency)
                .map_err(|r| corrupt(format!("currency {r}")))?,
            order_id: OrderRef::parse(&row.order_id)
                .map_err(|r| corrupt(format!("order_id {r}")))?,
            description: row
                .description
                .as_deref()
                .map(Description::parse)
                .transpose()
                .map_err(|r| corrupt(format!("description {r}")))?,
            outcome,
            amount_refunded: row.amount_refunded,
            created_at: row.created_at,
        })
    }
}

#[derive(FromRow)]
struct RefundRow {
    id: String,
    charge_id: String,
    amount: i64,
    created_at: i64,
}

impl TryFrom<RefundRow> for Refund {
    type Error = StoreError;

    fn try_from(row: RefundRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("refund {}: {what}", row.id));
        Ok(Refund {
            id: RefundId::parse(&row.id).map_err(|r| corrupt(format!("id {r}")))?,
            charge: ChargeId::parse(&row.charge_id)
                .map_err(|r| corrupt(format!("charge_id {r}")))?,
            amount: Amount::parse(row.amount).map_err(|r| corrupt(format!("amount {r}")))?,
            created_at: row.created_at,
        })
    }
}

async fn insert_charge(conn: &mut AnyConnection, charge: &Charge) -> Result<(), StoreError> {
    let (status, decline) = match &charge.outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Failed(decline) => ("failed", Some(decline)),
    };
    sqlx::query(
        "INSERT INTO charges (id, amount, currency, order_id, description, status, \
           failure_code, failure_message, decline_code, amount_refunded, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(charge.id.as_str())
    .bind(charge.amount.cents())
    .bind(charge.currency.as_str())
    .bind(charge.order_id.as_str())
    .bind(charge.description.as_ref().map(|d| d.as_str().to_owned()))
    .bind(status)
    .bind(decline.map(|d| d.failure_code.clone()))
    .bind(decline.map(|d| d.failure_message.clone()))
    .bind(decline.map(|d| d.decline_code.clone()))
    .bind(charge.amount_refunded)
    .bind(charge.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn get_charge(conn: &mut AnyConnection, id: &ChargeId) -> Result<Option<Charge>, StoreError> {
    let row: Option<ChargeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHARGE_COLUMNS} FROM charges WHERE id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(Charge::try_from).transpose()
}

/// Takes the charge's row lock until the transaction ends.
async fn lock_charge(conn: &mut AnyConnection, id: &ChargeId) -> Result<(), StoreError> {
    sqlx::query("UPDATE charges SET amount_refunded = amount_refunded WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Every charge of an order, oldest first.
async fn list_charges(
    conn: &mut AnyConnection,
    order_id: &OrderRef,
) -> Result<Vec<Charge>, StoreError> {
    let rows: Vec<ChargeRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHARGE_COLUMNS} FROM charges WHERE order_id = $1 ORDER BY seq"
    )))
    .bind(order_id.as_str())
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Charge::try_from).collect()
}

/// Adds `refund` to its charge's `amount_refunded`, if that is still `refunded_before`
/// (a compare-and-set on what the caller read: a refund that did not lock the charge
/// first cannot take more than is left), and records the refund. `false`, with nothing
/// written, when the charge changed since it was read.
async fn insert_refund(
    conn: &mut AnyConnection,
    refund: &Refund,
    refunded_before: i64,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE charges SET amount_refunded = amount_refunded + $1 \
         WHERE id = $2 AND amount_refunded = $3 AND status = 'succeeded' \
           AND amount_refunded + $1 <= amount",
    )
    .bind(refund.amount.cents())
    .bind(refund.charge.as_str())
    .bind(refunded_before)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO refunds (id, charge_id, amount, created_at) VALUES ($1, $2, $3, $4)")
        .bind(refund.id.as_str())
        .bind(refund.charge.as_str())
        .bind(refund.amount.cents())
        .bind(refund.created_at)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Every refund of a charge, oldest first.
async fn list_refunds(
    conn: &mut AnyConnection,
    charge: &ChargeId,
) -> Result<Vec<Refund>, StoreError> {
    let rows: Vec<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFUND_COLUMNS} FROM refunds WHERE charge_id = $1 ORDER BY seq"
    )))
    .bind(charge.as_str())
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Refund::try_from).collect()
}

/// The pool-backed face of the repository functions above.
#[derive(Debug, Clone)]
pub struct PaymentsStore {
    db: Database,
}

impl PaymentsStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Records `charge` in `tx`, a transaction the caller commits (the idempotency key's).
    pub async fn insert_charge_in(
        &self,
        tx: &mut WriteTx,
        charge: &Charge,
    ) -> Result<(), StoreError> {
        insert_charge(tx, charge).await
    }

    /// Records `charge` in a transaction of its own.
    pub async fn insert_charge(&self, charge: &Charge) -> Result<(), StoreError> {
        let mut conn = self.db.write_conn().await?;
        insert_charge(&mut conn, charge).await
    }

    /// The charge, locked for the rest of `tx` (a refund's transaction), so refunds of
    /// one charge take turns: `SELECT ... FOR UPDATE` in words both backends know (an
    /// update that changes nothing; on SQLite the transaction holds the file's write lock
    /// anyway).
    pub async fn charge_for_update_in(
        &self,
        tx: &mut WriteTx,
        id: &ChargeId,
    ) -> Result<Option<Charge>, StoreError> {
        lock_charge(tx, id).await?;
        get_charge(tx, id).await
    }

    /// Records `refund` in `tx` and adds it to its charge, if the charge's refunded
    /// amount is still `refunded_before`; `false` (nothing written) if it changed.
    pub async fn insert_refund_in(
        &self,
        tx: &mut WriteTx,
        refund: &Refund,
        refunded_before: i64,
    ) -> Result<bool, StoreError> {
        insert_refund(tx, refund, refunded_before).await
    }

    pub async fn charge(&self, id: &ChargeId) -> Result<Option<Charge>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        get_charge(&mut conn, id).await
    }

    pub async fn charges_of_order(&self, order_id: &OrderRef) -> Result<Vec<Charge>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        list_charges(&mut conn, order_id).await
    }

    pub async fn refunds_of_charge(&self, charge: &ChargeId) -> Result<Vec<Refund>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        list_refunds(&mut conn, charge).await
    }
}
