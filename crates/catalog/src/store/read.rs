//! The store's hot reads on a SQLite file, run on the database's reader threads
//! (`storage::Readers`): the same statements as the repository functions in the parent
//! module, whose sqlx versions serve PostgreSQL. The repository tests run against both
//! backends, so the two cannot drift apart unnoticed.
//!
//! Rows come back as the parent's row types; turning them into domain values (which
//! validates them) happens on the caller's side, as for sqlx's rows.

use std::sync::Arc;

use storage::rusqlite::{self, Connection, OptionalExtension, Row};
use storage::{Readers, SqliteError};

use super::interned::{Interned, Listed};
use super::{PRODUCT_COLUMNS, ProductRow, REVIEW_COLUMNS, ReviewRow};

pub(super) fn product_row(row: &Row<'_>) -> rusqlite::Result<ProductRow> {
    Ok(ProductRow {
        id: row.get(0)?,
        name: row.get(1)?,
        price_minor: row.get(2)?,
        stock: row.get(3)?,
        version: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

fn review_row(row: &Row<'_>) -> rusqlite::Result<ReviewRow> {
    Ok(ReviewRow {
        id: row.get(0)?,
        product_id: row.get(1)?,
        user_id: row.get(2)?,
        rating: row.get(3)?,
        comment: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Statements are built once per process and prepared once per reader connection.
fn sql(cell: &'static std::sync::OnceLock<String>, build: impl FnOnce() -> String) -> &'static str {
    cell.get_or_init(build)
}

/// Every row `sql` selects with `params`, through the connection's statement cache.
fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, SqliteError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) async fn product(readers: &Readers, id: i64) -> Result<Option<ProductRow>, SqliteError> {
    readers
        .read(move |conn: &Connection| {
            static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = sql(&SQL, || {
                format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?1")
            });
            Ok(conn
                .prepare_cached(sql)?
                .query_row([id], product_row)
                .optional()?)
        })
        .await
}

/// `list_products`: ids above `after`, in id order. A row whose product `interned` keeps
/// in the row's version is not read further (see [`Interned`]).
///
/// The limit is a literal, not a parameter: SQLite reads a bound `LIMIT ?` while planning
/// and marks the statement to be re-prepared whenever that parameter is bound again, so a
/// cached statement with a bound limit was parsed and planned anew on every request (13% of
/// a page's CPU in the profile). One cached statement per limit a client uses instead.
pub(super) async fn products(
    readers: &Readers,
    after: i64,
    limit: u32,
    interned: Arc<Interned>,
) -> Result<Vec<Listed>, SqliteError> {
    readers
        .read(move |conn: &Connection| {
            let sql = format!(
                "SELECT {PRODUCT_COLUMNS} FROM products WHERE id > ?1 ORDER BY id LIMIT {limit}"
            );
            let mut statement = conn.prepare_cached(&sql)?;
            let mut rows = statement.query([after])?;
            let mut listed = Vec::with_capacity(limit as usize);
            interned.scan(after, |kept| {
                while let Some(row) = rows.next()? {
                    // Columns 0 and 4 of PRODUCT_COLUMNS.
                    listed.push(match kept(row.get(0)?, row.get(4)?) {
                        Some(product) => Listed::Kept(product),
                        None => Listed::Read(product_row(row)?),
                    });
                }
                Ok::<_, SqliteError>(())
            })?;
            Ok(listed)
        })
        .await
}

/// `get_products`: the products among `ids`, in id order.
pub(super) async fn products_by_id(
    readers: &Readers,
    ids: Vec<i64>,
) -> Result<Vec<ProductRow>, SqliteError> {
    readers
        .read(move |conn: &Connection| {
            // One statement per list length would fill the statement cache; the ids go in
            // as a JSON array that SQLite expands (json_each), one statement for all.
            static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = sql(&SQL, || {
                format!(
                    "SELECT {PRODUCT_COLUMNS} FROM products \
                     WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
                )
            });
            all(conn, sql, [ids_json(&ids)], product_row)
        })
        .await
}

pub(super) async fn review(
    readers: &Readers,
    product_id: i64,
    id: i64,
) -> Result<Option<ReviewRow>, SqliteError> {
    readers
        .read(move |conn: &Connection| {
            static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = sql(&SQL, || {
                format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE product_id = ?1 AND id = ?2")
            });
            Ok(conn
                .prepare_cached(sql)?
                .query_row([product_id, id], review_row)
                .optional()?)
        })
        .await
}

/// `list_reviews`: one product's reviews with ids above `after`, in id order; the limit is
/// a literal for the reason [`products`] gives.
pub(super) async fn reviews(
    readers: &Readers,
    product_id: i64,
    after: i64,
    limit: u32,
) -> Result<Vec<ReviewRow>, SqliteError> {
    readers
        .read(move |conn: &Connection| {
            let sql = format!(
                "SELECT {REVIEW_COLUMNS} FROM reviews WHERE product_id = ?1 AND id > ?2 \
                 ORDER BY id LIMIT {limit}"
            );
            all(conn, &sql, [product_id, after], review_row)
        })
        .await
}

/// `reviews_of`: the first `per_product` reviews of each product in `ids`, the ids as
/// one JSON array (see [`products_by_id`]).
pub(super) async fn reviews_of(
    readers: &Readers,
    ids: Vec<i64>,
    per_product: u32,
) -> Result<Vec<ReviewRow>, SqliteError> {
    readers
        .read(move |conn: &Connection| {
            let sql = super::reviews_of_sql("SELECT value FROM json_each(?1)", per_product);
            all(conn, &sql, [ids_json(&ids)], review_row)
        })
        .await
}

/// `[1,2,3]`: integers need no escaping.
fn ids_json(ids: &[i64]) -> String {
    let mut out = String::with_capacity(2 + ids.len() * 8);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}
