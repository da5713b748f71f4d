//! Stock reservations: take stock for an order all or nothing, give it back, each at
//! most once per order id. The `reservations` row is written in the same transaction as
//! the stock change, so a retry can always tell whether the work was done.

use messaging::outbox::{self, Destination};
use sqlx::AnyConnection;
use storage::{Database, StoreError, now_millis};

use crate::events;

use crate::domain::{
    NewReservation, OrderId, ProductId, Quantity, Reservation, ReservationLine, ReservationState,
};

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("product {0} not found")]
    UnknownProduct(i64),
    #[error("product {product_id}: {requested} requested, {available} available")]
    InsufficientStock {
        product_id: i64,
        requested: i64,
        available: i64,
    },
    /// The order id was reserved before with other lines.
    #[error("order {0} was reserved with different lines")]
    DifferentLines(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReserveError {
    fn from(err: sqlx::Error) -> Self {
        ReserveError::Store(err.into())
    }
}

/// `[[product_id, quantity], ...]`: the canonical form stored and compared.
fn encode_lines(lines: &[ReservationLine]) -> String {
    let pairs: Vec<String> = lines
        .iter()
        .map(|l| format!("[{},{}]", l.product_id.0, l.quantity.units()))
        .collect();
    format!("[{}]", pairs.join(","))
}

fn decode_lines(raw: &str) -> Result<Vec<ReservationLine>, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("reservation lines {raw:?}"));
    let pairs: Vec<(i64, i64)> = serde_json::from_str(raw).map_err(|_| corrupt())?;
    pairs
        .into_iter()
        .map(|(product, quantity)| {
            Ok(ReservationLine {
                product_id: ProductId(product),
                quantity: Quantity::parse(quantity).map_err(|_| corrupt())?,
            })
        })
        .collect()
}

fn state_of(raw: &str) -> Result<ReservationState, StoreError> {
    match raw {
        "reserved" => Ok(ReservationState::Reserved),
        "released" => Ok(ReservationState::Released),
        other => Err(StoreError::Corrupt(format!("reservation state {other:?}"))),
    }
}

async fn find(
    conn: &mut AnyConnection,
    order: &OrderId,
) -> Result<Option<Reservation>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT state, lines FROM reservations WHERE order_id = $1")
            .bind(order.as_str())
            .fetch_optional(conn)
            .await?;
    row.map(|(state, lines)| {
        Ok(Reservation {
            order_id: order.clone(),
            state: state_of(&state)?,
            lines: decode_lines(&lines)?,
        })
    })
    .transpose()
}

/// Reserves `new`'s lines. Repeating it returns the reservation as it stands (reserved,
/// or released if it has been released since) without touching stock again.
pub async fn reserve(db: &Database, new: &NewReservation) -> Result<Reservation, ReserveError> {
    let mut tx = db.begin_write().await?;
    if let Some(existing) = find(&mut tx, &new.order_id).await? {
        return same_request(existing, new);
    }
    let now = now_millis();
    // Lines are sorted by product id, so concurrent reservations take row locks in one
    // order and cannot deadlock each other.
    for line in &new.lines {
        let taken: Option<(i64,)> = sqlx::query_as(
            "UPDATE products SET stock = stock - $1, version = version + 1, updated_at = $2 \
             WHERE id = $3 AND stock >= $1 RETURNING stock",
        )
        .bind(line.quantity.units())
        .bind(now)
        .bind(line.product_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((stock,)) = taken {
            let event = events::stock_changed(
                line.product_id,
                stock,
                Some(-line.quantity.units()),
                events::StockReason::Reserved,
                Some(&new.order_id),
            );
            outbox::enqueue(&mut tx, Destination::Stream(events::STREAM), &event).await?;
        } else {
            // Dropping the transaction rolls back the lines already taken: all or nothing.
            let available: Option<(i64,)> =
                sqlx::query_as("SELECT stock FROM products WHERE id = $1")
                    .bind(line.product_id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match available {
                None => ReserveError::UnknownProduct(line.product_id.0),
                Some((available,)) => ReserveError::InsufficientStock {
                    product_id: line.product_id.0,
                    requested: line.quantity.units(),
                    available,
                },
            });
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO reservations (order_id, state, lines, created_at, updated_at) \
         VALUES ($1, 'reserved', $2, $3, $3)",
    )
    .bind(new.order_id.as_str())
    .bind(encode_lines(&new.lines))
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            tx.commit().await?;
            Ok(Reservation {
                order_id: new.order_id.clone(),
                state: ReservationState::Reserved,
                lines: new.lines.clone(),
            })
        }
        // A concurrent call for the same order won (PostgreSQL lets both get this far):
        // undo ours and answer with theirs.
        Err(err) if storage::is_unique_violation(&err) => {
            drop(tx);
            let mut conn = db.pool().acquire().await?;
            match find(&mut conn, &new.order_id).await? {
                Some(existing) => same_request(existing, new),
                None => Err(ReserveError::Store(err.into())),
            }
        }
        Err(err) => Err(err.into()),
    }
}

fn same_request(existing: Reservation, new: &NewReservation) -> Result<Reservation, ReserveError> {
    // A release that came first leaves a tombstone with no lines: the order is over.
    let tombstone = existing.state == ReservationState::Released && existing.lines.is_empty();
    if existing.lines == new.lines || tombstone {
        Ok(existing)
    } else {
        Err(ReserveError::DifferentLines(
            existing.order_id.as_str().to_owned(),
        ))
    }
}

/// Releases an order's reservation, putting its stock back once. Releasing an order that
/// was never reserved records that it is over, so a late reserve cannot take stock for it.
pub async fn release(db: &Database, order: &OrderId) -> Result<Reservation, StoreError> {
    match release_once(db, order).await {
        // A reserve for the same order committed between our read and our tombstone
        // (PostgreSQL lets both get that far): release what it reserved.
        Err(StoreError::Database(err)) if storage::is_unique_violation(&err) => {
            release_once(db, order).await
        }
        other => other,
    }
}

async fn release_once(db: &Database, order: &OrderId) -> Result<Reservation, StoreError> {
    let mut tx = db.begin_write().await?;
    let now = now_millis();
    let existing = find(&mut tx, order).await?;
    let reservation = match existing {
        None => {
            sqlx::query(
                "INSERT INTO reservations (order_id, state, lines, created_at, updated_at) \
                 VALUES ($1, 'released', '[]', $2, $2)",
            )
            .bind(order.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Reservation {
                order_id: order.clone(),
                state: ReservationState::Released,
                lines: Vec::new(),
            }
        }
        Some(r) if r.state == ReservationState::Released => return Ok(r),
        Some(r) => {
            // Conditional on the state, so two concurrent releases give stock back once.
            let flipped = sqlx::query(
                "UPDATE reservations SET state = 'released', updated_at = $1 \
                 WHERE order_id = $2 AND state = 'reserved'",
            )
            .bind(now)
            .bind(order.as_str())
            .execute(&mut *tx)
            .await?;
            if flipped.rows_affected() == 1 {
                for line in &r.lines {
                    // A product deleted since simply gets nothing back.
                    let given: Option<(i64,)> = sqlx::query_as(
                        "UPDATE products SET stock = stock + $1, version = version + 1, \
                         updated_at = $2 WHERE id = $3 RETURNING stock",
                    )
                    .bind(line.quantity.units())
                    .bind(now)
                    .bind(line.product_id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((stock,)) = given {
                        let event = events::stock_changed(
                            line.product_id,
                            stock,
                            Some(line.quantity.units()),
                            events::StockReason::Released,
                            Some(order),
                        );
                        outbox::enqueue(&mut tx, Destination::Stream(events::STREAM), &event)
                            .await?;
                    }
                }
            }
            Reservation {
                state: ReservationState::Released,
                ..r
            }
        }
    };
    tx.commit().await?;
    Ok(reservation)
}
