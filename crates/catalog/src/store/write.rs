//! The store's hot writes on a SQLite file, on the database's rusqlite writer
//! (`storage::Writer`): the same statements as the repository functions in the parent
//! module, whose sqlx versions serve PostgreSQL. The repository and HTTP tests run against
//! both backends, so the two cannot drift apart unnoticed.

use messaging::outbox::{self, Destination};
use storage::rusqlite::{self, Connection, params};
use storage::{SqliteError, StoreError, now_millis};

use super::INSERT_PRODUCT;
use crate::domain::{NewProduct, Product};
use crate::events;

/// `insert_product`: the product and its `ProductCreated` event, on `conn` (inside the
/// writer's transaction, so both commit together).
pub fn insert_product(conn: &Connection, new: &NewProduct) -> Result<Product, StoreError> {
    let now = now_millis();
    let row = conn
        .prepare_cached(INSERT_PRODUCT.get_or_init(super::insert_product_sql))
        .and_then(|mut statement| {
            statement.query_row(
                params![new.name.as_str(), new.price.minor(), new.stock.units(), now],
                super::read::product_row,
            )
        })
        .map_err(sqlite)?;
    let product = Product::try_from(row)?;
    outbox::enqueue_local(
        conn,
        Destination::Stream(events::STREAM),
        &events::product_created(&product),
    )?;
    Ok(product)
}

fn sqlite(e: rusqlite::Error) -> StoreError {
    StoreError::from(SqliteError::from(e))
}
