//! Catalog's event face: what it publishes on the `catalog-events` stream, keyed by
//! product id. Each event is written to the outbox in the transaction of the change it
//! describes (see `store`), and the relay publishes it.
//!
//! These structs are the wire payloads; the AsyncAPI document (`asyncapi/brigade.json`)
//! is generated from them.

use messaging::Envelope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{OrderId, Product, ProductId};

/// The stream every catalog change goes to.
pub const STREAM: &str = "catalog-events";

/// A product as events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductCreated {
    #[schema(example = 1)]
    pub product_id: i64,
    #[schema(example = "Laptop")]
    pub name: String,
    /// The price in minor units (cents): money is never a float at rest, and events are
    /// kept (the outbox, the stream's retention).
    #[schema(example = 99999)]
    pub price_minor: i64,
    #[schema(example = 50)]
    pub stock: i64,
    /// The product's version after the change (its REST ETag is `"v<version>"`).
    #[schema(example = 1)]
    pub version: i64,
}

/// The product after a change of name, price or stock (all fields, not only those changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdated {
    pub product_id: i64,
    pub name: String,
    /// The price in minor units (cents).
    pub price_minor: i64,
    pub stock: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductDeleted {
    pub product_id: i64,
}

/// Why stock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockReason {
    /// An order reserved it (`ReserveStock`).
    Reserved,
    /// An order gave it back (`ReleaseStock`).
    Released,
    /// Someone set it (`PATCH /v1/products/{id}` with `stock`).
    Set,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChanged {
    pub product_id: i64,
    /// Units in stock after the change.
    pub stock: i64,
    /// The change: negative when stock was taken. Absent when it was set outright.
    pub delta: Option<i64>,
    pub reason: StockReason,
    /// The order that reserved or released, if any.
    pub order_id: Option<String>,
}

/// The type names on the wire, one per payload above.
pub const PRODUCT_CREATED: &str = "ProductCreated";
pub const PRODUCT_UPDATED: &str = "ProductUpdated";
pub const PRODUCT_DELETED: &str = "ProductDeleted";
pub const STOCK_CHANGED: &str = "StockChanged";

fn envelope<T: Serialize>(kind: &str, product: ProductId, payload: &T) -> Envelope {
    // Serializing these plain structs cannot fail; `Null` would only hide a bug, which the
    // contract test on the AsyncAPI document would then catch.
    let payload = serde_json::to_value(payload).unwrap_or(serde_json::Value::Null);
    Envelope::new(kind, payload).with_key(product.0.to_string())
}

pub fn product_created(p: &Product) -> Envelope {
    envelope(
        PRODUCT_CREATED,
        p.id,
        &ProductCreated {
            product_id: p.id.0,
            name: p.name.as_str().to_owned(),
            price_minor: p.price.minor(),
            stock: p.stock.units(),
            version: p.version,
        },
    )
}

pub fn product_updated(p: &Product) -> Envelope {
    envelope(
        PRODUCT_UPDATED,
        p.id,
        &ProductUpdated {
            product_id: p.id.0,
            name: p.name.as_str().to_owned(),
            price_minor: p.price.minor(),
            stock: p.stock.units(),
            version: p.version,
        },
    )
}

pub fn product_deleted(id: ProductId) -> Envelope {
    envelope(PRODUCT_DELETED, id, &ProductDeleted { product_id: id.0 })
}

pub fn stock_changed(
    id: ProductId,
    stock: i64,
    delta: Option<i64>,
    reason: StockReason,
    order: Option<&OrderId>,
) -> Envelope {
    envelope(
        STOCK_CHANGED,
        id,
        &StockChanged {
            product_id: id.0,
            stock,
            delta,
            reason,
            order_id: order.map(|o| o.as_str().to_owned()),
        },
    )
}

/// The `catalog-events` stream, for the AsyncAPI document.
pub fn channels() -> Vec<messaging::asyncapi::Channel> {
    use messaging::asyncapi::{Channel, Message, Shape};
    vec![Channel {
        address: STREAM,
        shape: Shape::Stream,
        description: "Every change to the catalog's products; the changes of one product \
            arrive in the order they committed. \
            Watch it live with `brigade events tail catalog-events`.",
        key: Some("the product id (decimal)"),
        producer: "catalog",
        consumers: &[],
        messages: vec![
            Message::of::<ProductCreated>(PRODUCT_CREATED, "A product was created."),
            Message::of::<ProductUpdated>(
                PRODUCT_UPDATED,
                "A product's name, price or stock was changed (PATCH).",
            ),
            Message::of::<ProductDeleted>(PRODUCT_DELETED, "A product was deleted."),
            Message::of::<StockChanged>(
                STOCK_CHANGED,
                "A product's stock moved: reserved or released for an order, or set.",
            ),
        ],
    }]
}
