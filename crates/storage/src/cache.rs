//! [`ReadCache`]: a small read-through cache whose writes can never be overtaken by a read
//! that began before them. Catalog keeps single products in one; the gateway keeps
//! GraphQL answers in another.
//!
//! Why not `moka` or another cache crate: the part that matters is the race between a
//! read that fetched its value *before* a write committed and the write's invalidation —
//! the read must not put its old value back afterwards. A generation counter checked
//! under the same lock as the insert settles it; with that lock in hand, a `HashMap` with
//! a deadline per entry is all the rest needs.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// foldhash, not std's SipHash: every cached read hashes its key here, and the keys are
// bounded by the capacity, so hash flooding cannot grow the map.
use foldhash::HashMap;
use tokio::time::Instant;

/// Values by key, each kept until its deadline or the next invalidation, at most
/// `capacity` of them.
#[derive(Debug)]
pub struct ReadCache<K, V> {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    /// Bumped by every invalidation; a read only caches what it fetched if no
    /// invalidation happened since it started.
    generation: u64,
    entries: HashMap<K, (Instant, V)>,
}

/// What a read must hand back to [`ReadCache::fill`]: the generation it started at.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    /// A cache keeping each value at most `ttl` (`0` turns it off), `capacity` at once.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::new(Inner {
                generation: 0,
                entries: HashMap::default(),
            }),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached value, or a ticket to fill the cache with after reading the source.
    pub fn get<Q>(&self, key: &Q) -> Result<V, Ticket>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.lock();
        match inner.entries.get(key) {
            Some((expires, value)) if Instant::now() < *expires => Ok(value.clone()),
            _ => Err(Ticket(inner.generation)),
        }
    }

    /// Caches what a read found, unless a write invalidated anything since the read began.
    pub fn fill(&self, ticket: Ticket, key: K, value: V) {
        self.fill_for(ticket, key, value, self.ttl);
    }

    /// As [`fill`](Self::fill), kept for `ttl` when that is shorter than the cache's own.
    pub fn fill_for(&self, ticket: Ticket, key: K, value: V, ttl: Duration) {
        let ttl = ttl.min(self.ttl);
        if !self.enabled() || ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            inner.entries.retain(|_, (expires, _)| now < *expires);
            if inner.entries.len() >= self.capacity {
                // Still full of live entries: start over rather than track recency on
                // every read. The next reads refill what is actually hot.
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, (now + ttl, value));
    }

    /// Forgets one value; call after the write that changed it has committed.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.remove(key);
    }

    /// Forgets every value (a write whose keys are not known one by one).
    pub fn invalidate_all(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.clear();
    }

    /// How many values it holds (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn serves_a_filled_entry_until_its_ttl_passes() {
        let cache = ReadCache::new(Duration::from_secs(1), 10);
        let ticket = cache.get(&1).unwrap_err();
        cache.fill(ticket, 1, "v1");
        assert_eq!(cache.get(&1).unwrap(), "v1");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(cache.get(&1).is_ok());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get(&1).is_err(), "expired at its ttl");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_may_be_kept_shorter_than_the_cache_allows_never_longer() {
        let cache = ReadCache::new(Duration::from_secs(10), 10);
        let ticket = cache.get(&1).unwrap_err();
        cache.fill_for(ticket, 1, "short", Duration::from_secs(2));
        let ticket = cache.get(&2).unwrap_err();
        cache.fill_for(ticket, 2, "long", Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get(&1).is_err(), "its own 2 s");
        assert!(cache.get(&2).is_ok());
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(cache.get(&2).is_err(), "the cache's 10 s, not the 60 asked");
        let ticket = cache.get(&3).unwrap_err();
        cache.fill_for(ticket, 3, "none", Duration::ZERO);
        assert!(cache.get(&3).is_err(), "a zero ttl keeps nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_began_before_a_write_does_not_put_its_old_value_back() {
        let cache = ReadCache::new(Duration::from_secs(60), 10);
        // A reader misses and goes to the source...
        let ticket = cache.get(&1).unwrap_err();
        // ...while a writer commits version 2 and invalidates.
        cache.invalidate(&1);
        // The reader comes back with version 1: it must not be cached.
        cache.fill(ticket, 1, 1);
        assert!(cache.get(&1).is_err());
        // A read that starts after the write caches normally.
        let ticket = cache.get(&1).unwrap_err();
        cache.fill(ticket, 1, 2);
        assert_eq!(cache.get(&1).unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_drops_the_entry_at_once() {
        let cache = ReadCache::new(Duration::from_secs(60), 10);
        let ticket = cache.get(&7).unwrap_err();
        cache.fill(ticket, 7, 1);
        cache.invalidate(&7);
        assert!(cache.get(&7).is_err());
        let ticket = cache.get(&7).unwrap_err();
        cache.fill(ticket, 7, 2);
        cache.invalidate_all();
        assert!(cache.get(&7).is_err());
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stays_within_its_capacity() {
        let cache = ReadCache::new(Duration::from_secs(60), 3);
        for id in 1..=10 {
            let ticket = cache.get(&id).unwrap_err();
            cache.fill(ticket, id, 1);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&10).is_ok(), "the newest entry is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_turns_it_off() {
        let cache = ReadCache::new(Duration::ZERO, 10);
        let ticket = cache.get(&1).unwrap_err();
        cache.fill(ticket, 1, 1);
        assert!(cache.get(&1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn looks_up_owned_keys_by_borrowed_ones() {
        let cache: ReadCache<String, u32> = ReadCache::new(Duration::from_secs(60), 10);
        let ticket = cache.get("a").unwrap_err();
        cache.fill(ticket, "a".to_owned(), 1);
        assert_eq!(cache.get("a").unwrap(), 1);
    }
}
