//! Product representations already rendered for `GET /v1/products/{id}`.
//!
//! The store's read cache hands back the same `Arc<Product>` until the product changes
//! or its entry is refreshed (`catalog.read_cache_ttl`); while it does, the JSON and the
//! ETag are the same bytes, so they are kept beside it. Rendering (the view's strings,
//! two RFC 3339 timestamps, the JSON) was the largest part of a cached read's handler.
//! Pointer identity is the whole freshness rule: a product the store re-read, even an
//! unchanged one, is rendered again.

// foldhash, not std's SipHash: every cached read hashes its product ID here, and the
// keys are bounded by the capacity, so hash flooding cannot grow the map.
use foldhash::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::http::HeaderValue;
use problem::Problem;

use super::products::{ProductView, etag};
use crate::domain::Product;

#[derive(Debug)]
pub struct Rendered {
    capacity: usize,
    entries: Mutex<HashMap<i64, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    product: Arc<Product>,
    body: Bytes,
    etag: HeaderValue,
}

impl Rendered {
    /// Keeps up to `capacity` products' representations (the read cache's capacity: no
    /// more products than that can be served from it at once).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::default()),
        }
    }

    /// The JSON body and ETag of `product`.
    pub fn of(&self, product: &Arc<Product>) -> Result<(Bytes, HeaderValue), Problem> {
        let id = product.id.0;
        if let Some(entry) = self.lock().get(&id)
            && Arc::ptr_eq(&entry.product, product)
        {
            return Ok((entry.body.clone(), entry.etag.clone()));
        }
        let body = serde_json::to_vec(&ProductView::from(product.as_ref()))
            .map(Bytes::from)
            .map_err(Problem::internal)?;
        let etag = HeaderValue::from_str(&etag(product))
            .map_err(|_| Problem::internal(std::io::Error::other("unrepresentable ETag")))?;
        if self.capacity > 0 {
            let mut entries = self.lock();
            if entries.len() >= self.capacity && !entries.contains_key(&id) {
                // Full: start over rather than track recency on every read.
                entries.clear();
            }
            entries.insert(
                id,
                Entry {
                    product: Arc::clone(product),
                    body: body.clone(),
                    etag: etag.clone(),
                },
            );
        }
        Ok((body, etag))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        // Plain data: a panic elsewhere cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::{ProductId, ProductName, Stock};

    fn product(id: i64, version: i64, name: &str) -> Arc<Product> {
        Arc::new(Product {
            id: ProductId(id),
            name: ProductName::parse(name).unwrap(),
            price: money::Money::from_minor(99_999).unwrap(),
            stock: Stock::parse(50).unwrap(),
            version,
            created_at: 0,
            updated_at: 0,
        })
    }

    #[test]
    fn the_same_product_is_served_from_memory_and_a_new_one_is_rendered_again() {
        let rendered = Rendered::new(10);
        let v1 = product(1, 1, "Laptop");
        let (body, tag) = rendered.of(&v1).unwrap();
        assert_eq!(tag, "\"v1\"");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["name"], "Laptop");
        let (again, _) = rendered.of(&v1).unwrap();
        assert_eq!(
            again.as_ptr(),
            body.as_ptr(),
            "served from memory, not re-rendered"
        );

        // The store re-read the product (a new Arc): what it says now is what is served.
        let v2 = product(1, 2, "Laptop Pro");
        let (body2, tag2) = rendered.of(&v2).unwrap();
        assert_eq!(tag2, "\"v2\"");
        let json: serde_json::Value = serde_json::from_slice(&body2).unwrap();
        assert_eq!(json["name"], "Laptop Pro");
    }

    #[test]
    fn stays_within_its_capacity() {
        let rendered = Rendered::new(2);
        for id in 1..=5 {
            rendered.of(&product(id, 1, "Thing")).unwrap();
            assert!(rendered.lock().len() <= 2);
        }
        let off = Rendered::new(0);
        off.of(&product(1, 1, "Thing")).unwrap();
        assert!(off.lock().is_empty());
    }
}
