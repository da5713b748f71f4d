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
//! Why not `moka` or another cache crate: the part that matters here is the race between
//! a read that fetched a row *before* a write committed and the write's invalidation —
//! the read must not put its old row back afterwards. A generation counter checked under
//! the same lock as the insert settles it; with that lock in hand, a `HashMap` with a
//! deadline per entry is all the rest needs.

// foldhash, not std's SipHash: every cached read hashes its product ID here, and the
// keys are bounded by the capacity, so hash flooding cannot grow the map.
use foldhash::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{Product, ProductId};

#[derive(Debug)]
pub struct ProductCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every invalidation; a read only caches what it fetched if no
    /// invalidation happened since it started.
    generation: u64,
    entries: HashMap<i64, (Instant, Arc<Product>)>,
}

/// What a read must hand back to [`ProductCache::fill`]: the generation it started at.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl ProductCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached product, or a ticket to fill the cache with after reading the database.
    pub fn get(&self, id: ProductId) -> Result<Arc<Product>, Ticket> {
        let inner = self.lock();
        match inner.entries.get(&id.0) {
            Some((expires, product)) if Instant::now() < *expires => Ok(Arc::clone(product)),
            _ => Err(Ticket(inner.generation)),
        }
    }

    /// Caches what a read found, unless a write invalidated anything since the read began.
    pub fn fill(&self, ticket: Ticket, product: Arc<Product>) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.entries.len() >= self.capacity {
            inner.entries.retain(|_, (expires, _)| now < *expires);
            if inner.entries.len() >= self.capacity {
                // Still full of live entries: start over rather than track recency on
                // every read. The next reads refill what is actually hot.
                inner.entries.clear();
            }
        }
        inner
            .entries
            .insert(product.id.0, (now + self.ttl, product));
    }

    /// Forgets a product; call after the transaction that changed it has committed.
    pub fn invalidate(&self, id: ProductId) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.remove(&id.0);
    }

    /// Forgets every product (a write whose products are not known one by one).
    pub fn invalidate_all(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::{ProductName, Stock};

    fn product(id: i64, version: i64) -> Arc<Product> {
        Arc::new(Product {
            id: ProductId(id),
            name: ProductName::parse("Laptop").unwrap(),
            price: money::Money::from_minor(99_999).unwrap(),
            stock: Stock::parse(50).unwrap(),
            version,
            created_at: 0,
            updated_at: 0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn serves_a_filled_entry_until_its_ttl_passes() {
        let cache = ProductCache::new(Duration::from_secs(1), 10);
        let ticket = cache.get(ProductId(1)).unwrap_err();
        cache.fill(ticket, product(1, 1));
        assert_eq!(cache.get(ProductId(1)).unwrap().version, 1);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(cache.get(ProductId(1)).is_ok());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get(ProductId(1)).is_err(), "expired at its ttl");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_began_before_a_write_does_not_put_its_old_row_back() {
        let cache = ProductCache::new(Duration::from_secs(60), 10);
        // A reader misses and goes to the database...
        let ticket = cache.get(ProductId(1)).unwrap_err();
        // ...while a writer commits version 2 and invalidates.
        cache.invalidate(ProductId(1));
        // The reader comes back with version 1: it must not be cached.
        cache.fill(ticket, product(1, 1));
        assert!(cache.get(ProductId(1)).is_err());
        // A read that starts after the write caches normally.
        let ticket = cache.get(ProductId(1)).unwrap_err();
        cache.fill(ticket, product(1, 2));
        assert_eq!(cache.get(ProductId(1)).unwrap().version, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_drops_the_entry_at_once() {
        let cache = ProductCache::new(Duration::from_secs(60), 10);
        let ticket = cache.get(ProductId(7)).unwrap_err();
        cache.fill(ticket, product(7, 1));
        cache.invalidate(ProductId(7));
        assert!(cache.get(ProductId(7)).is_err());
        let ticket = cache.get(ProductId(7)).unwrap_err();
        cache.fill(ticket, product(7, 2));
        cache.invalidate_all();
        assert!(cache.get(ProductId(7)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stays_within_its_capacity() {
        let cache = ProductCache::new(Duration::from_secs(60), 3);
        for id in 1..=10 {
            let ticket = cache.get(ProductId(id)).unwrap_err();
            cache.fill(ticket, product(id, 1));
            assert!(cache.lock().entries.len() <= 3);
        }
        assert!(cache.get(ProductId(10)).is_ok(), "the newest entry is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_turns_it_off() {
        let cache = ProductCache::new(Duration::ZERO, 10);
        let ticket = cache.get(ProductId(1)).unwrap_err();
        cache.fill(ticket, product(1, 1));
        assert!(cache.get(ProductId(1)).is_err());
    }
}
