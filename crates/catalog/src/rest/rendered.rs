//! Product representations already rendered, for `GET /v1/products/{id}` and for the
//! items of `GET /v1/products` pages.
//!
//! A product's JSON is a function of the product's state, and a state is named by the
//! product's id and version: every write to a product bumps its version (updates, stock
//! reservations and releases), ids are never reused (AUTOINCREMENT, identity), and the
//! product's ETag already rests on the same rule. So the JSON is kept under (id, version)
//! and served again for a product read in that state; the data itself is still read from
//! the store (or its read cache) on every request. Rendering (two RFC 3339 timestamps,
//! the price, the escaped name) was the largest part of a cached read's handler, and ~15%
//! of a page of 50 read from SQLite: a memo of fragments, like Rails' "Russian doll"
//! caching keyed by `updated_at`, not a cache of pages. The entry holds the version and
//! digest inline, so checking an item needs no pointer to chase.
//!
//! A B-tree, not a hash map: a page's products are consecutive ids, which a B-tree keeps
//! side by side, so a page walks one range of it in step with its rows. Hashed, each of a
//! page's items was a probe at a random place in the map, and with pages spread over the
//! catalog most were cache misses (stalls on the probe were ~7% of such a page's CPU).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The digest of an item's bytes kept for page tags: `server::rest::etag_of`'s 26 bytes.
type Digest = [u8; 26];

use axum::body::Bytes;
use axum::http::HeaderValue;
use problem::Problem;

use super::products::{ProductView, etag};
use crate::domain::Product;

#[derive(Debug)]
pub struct Rendered {
    capacity: usize,
    entries: Mutex<BTreeMap<i64, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The state rendered.
    version: i64,
    /// A digest of `body`, for the tags of the pages it appears on.
    digest: Digest,
    body: Bytes,
    etag: HeaderValue,
}

fn digest_of(body: &[u8]) -> Digest {
    let tag = server::rest::etag_of(body);
    let mut digest = [0; 26];
    for (d, b) in digest.iter_mut().zip(tag.bytes()) {
        *d = b;
    }
    digest
}

impl Rendered {
    /// Keeps up to `capacity` products' representations (the read cache's capacity: no
    /// more products than that can be served from it at once).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The JSON body and ETag of `product`.
    pub fn of(&self, product: &Arc<Product>) -> Result<(Bytes, HeaderValue), Problem> {
        let id = product.id.0;
        if let Some(entry) = self.lock().get(&id)
            && entry.version == product.version
        {
            return Ok((entry.body.clone(), entry.etag.clone()));
        }
        let body = serde_json::to_vec(&ProductView::from(product.as_ref()))
            .map(Bytes::from)
            .map_err(Problem::internal)?;
        let etag = HeaderValue::from_str(&etag(product))
            .map_err(|_| Problem::internal(std::io::Error::other("unrepresentable ETag")))?;
        let entry = Entry {
            version: product.version,
            digest: digest_of(&body),
            body: body.clone(),
            etag: etag.clone(),
        };
        self.keep(&mut self.lock(), [(id, entry)]);
        Ok((body, etag))
    }

    /// A page of `GET /v1/products` from up to `limit + 1` products read in id order (see
    /// `server::rest::json::page`), and its ETag: a digest of its items' digests and of
    /// whether another page follows, which is everything the page's bytes depend on.
    pub fn page(
        &self,
        rows: Vec<Arc<Product>>,
        limit: u32,
    ) -> Result<(Bytes, HeaderValue), Problem> {
        let has_more = rows.len() > limit as usize;
        let mut digests = Vec::with_capacity(rows.len().min(limit as usize) * 26 + 1);
        let mut fresh = Vec::new();
        let mut entries = self.lock();
        let body = {
            // The rows come in id order: walk the map's entries from the first row's id on,
            // in step with them.
            let first = rows.first().map_or(i64::MAX, |p| p.id.0);
            let mut kept = entries.range(first..).peekable();
            server::rest::json::page(
                rows,
                limit,
                |p| p.id.0,
                |out, p| {
                    let id = p.id.0;
                    while kept.next_if(|(k, _)| **k < id).is_some() {}
                    if let Some((_, entry)) = kept.next_if(|(k, _)| **k == id)
                        && entry.version == p.version
                    {
                        out.extend_from_slice(&entry.body);
                        digests.extend_from_slice(&entry.digest);
                        return;
                    }
                    let start = out.len();
                    super::products::write_product(out, p.as_ref());
                    let body = Bytes::copy_from_slice(&out[start..]);
                    let digest = digest_of(&body);
                    digests.extend_from_slice(&digest);
                    if self.capacity > 0
                        && let Ok(etag) = HeaderValue::from_str(&etag(p))
                    {
                        let version = p.version;
                        fresh.push((
                            id,
                            Entry {
                                version,
                                digest,
                                body,
                                etag,
                            },
                        ));
                    }
                },
            )
        };
        self.keep(&mut entries, fresh);
        drop(entries);
        digests.push(u8::from(has_more));
        let tag = HeaderValue::from_str(&server::rest::etag_of(&digests))
            .map_err(|_| Problem::internal(std::io::Error::other("unrepresentable ETag")))?;
        Ok((Bytes::from(body), tag))
    }

    /// Keeps `fresh` renderings, within the capacity.
    fn keep(
        &self,
        entries: &mut BTreeMap<i64, Entry>,
        fresh: impl IntoIterator<Item = (i64, Entry)>,
    ) {
        if self.capacity == 0 {
            return;
        }
        for (id, entry) in fresh {
            if entries.len() >= self.capacity && !entries.contains_key(&id) {
                // Full: start over rather than track recency on every read.
                entries.clear();
            }
            entries.insert(id, entry);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Entry>> {
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

    /// A page is the bytes `json::page` writes from the products themselves, whether its
    /// items come from memory or not; its tag changes with any item and with whether
    /// another page follows, and only then.
    #[test]
    fn a_page_is_the_products_own_json_and_its_tag_follows_every_change() {
        let rendered = Rendered::new(10);
        let rows = |name: &str, n: i64| -> Vec<Arc<Product>> {
            (1..=n)
                .map(|id| {
                    // Product 2 is named `name`; every rename is a new version, as the
                    // store's writes make it.
                    let version = if id == 2 && name != "Lamp" { 2 } else { 1 };
                    product(id, version, if id == 2 { name } else { "Thing" })
                })
                .collect()
        };
        let expected = |rows: Vec<Arc<Product>>| page_of(rows, 2);

        let (cold, tag) = rendered.page(rows("Lamp", 3), 2).unwrap();
        assert_eq!(cold.as_ref(), expected(rows("Lamp", 3)).as_slice());
        let (warm, tag_again) = rendered.page(rows("Lamp", 3), 2).unwrap();
        assert_eq!(warm, cold, "from memory: the same bytes");
        assert_eq!(tag_again, tag);

        // An item changed (a new version).
        let (changed, changed_tag) = rendered.page(rows("Lamp Pro", 3), 2).unwrap();
        assert_eq!(changed.as_ref(), expected(rows("Lamp Pro", 3)).as_slice());
        assert_ne!(changed_tag, tag);

        // Same items, but no page after this one: no cursor, another tag.
        let (last, last_tag) = rendered.page(rows("Lamp Pro", 2), 2).unwrap();
        assert_eq!(last.as_ref(), expected(rows("Lamp Pro", 2)).as_slice());
        assert_ne!(last_tag, changed_tag);

        // The single-product path serves the same item bytes the page used.
        let (one, _) = rendered.of(&product(1, 1, "Thing")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&last).unwrap();
        let first: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(json["items"][0], first);
    }

    fn page_of(rows: Vec<Arc<Product>>, limit: u32) -> Vec<u8> {
        server::rest::json::page(
            rows,
            limit,
            |p| p.id.0,
            |out, p| super::super::products::write_product(out, p),
        )
    }

    /// A page walks the kept items in step with its rows: items kept between, before and
    /// after its rows, rows with no item kept, and items kept in another version all give
    /// the page the products' own bytes.
    #[test]
    fn a_page_takes_each_kept_item_of_its_rows_and_only_those() {
        let rendered = Rendered::new(100);
        let kept: Vec<_> = (1..=20)
            .filter(|id| id % 3 != 0)
            .map(|id| product(id, 1, "Old"))
            .collect();
        rendered.page(kept, 100).unwrap();

        let rows = vec![
            product(3, 1, "New 3"), // nothing kept for it
            product(4, 1, "Old"),   // kept, same version
            product(5, 2, "New 5"), // kept in version 1
            product(11, 1, "Old"),  // kept, after a gap of kept items
            product(19, 1, "Old"),
            product(30, 1, "New 30"), // after every kept item
        ];
        let (page, _) = rendered.page(rows.clone(), 10).unwrap();
        assert_eq!(page.as_ref(), page_of(rows.clone(), 10).as_slice());
        // The new states are kept now, and served again the same.
        let (again, _) = rendered.page(rows.clone(), 10).unwrap();
        assert_eq!(again, page);
        let (five, _) = rendered.of(&product(5, 2, "New 5")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&five).unwrap();
        assert_eq!(json["name"], "New 5");
    }

    #[test]
    fn stays_within_its_capacity() {
        let rendered = Rendered::new(2);
        for id in 1..=5 {
            rendered.of(&product(id, 1, "Thing")).unwrap();
            assert!(rendered.lock().len() <= 2);
        }
        let pages = Rendered::new(2);
        let rows: Vec<Arc<Product>> = (1..=5).map(|id| product(id, 1, "Thing")).collect();
        pages.page(rows, 5).unwrap();
        assert!(pages.lock().len() <= 2);
        let off = Rendered::new(0);
        off.of(&product(1, 1, "Thing")).unwrap();
        off.page(vec![product(1, 1, "Thing")], 5).unwrap();
        assert!(off.lock().is_empty());
    }
}
