//! A small read-through cache of single products, kept by [`super::CatalogStore`].
//!
//! `GET /v1/products/{id}` and `GetProduct` are the catalog's hottest reads; without the
//! cache each one is a pool checkout and a query on SQLite's worker thread (about 50 µs
//! of CPU, against a few µs for everything else the request does; see BENCHMARKS.md).
//!
//! Freshness: every write this process makes to a product goes through `CatalogStore`,
//! which invalidates the entry after its transaction commits, so this process never
//! serves a product older than its own last write. Another process writing the same
//! database is seen within `ttl` (`catalog.read_cache_ttl`; `0s` turns the cache off).
//! Writes that must not act on stale data (PATCH's `If-Match`, stock reservations) read
//! the database, never this cache.
//!
//! The cache itself is `storage::cache::ReadCache` (a read that began before a write can
//! never put its old row back after the write's invalidation).

use std::sync::Arc;

use crate::domain::{Product, ProductId};

pub type ProductCache = storage::cache::ReadCache<ProductId, Arc<Product>>;
