//! The products a list last read from SQLite, by id, so that a row read again in the same
//! state is not converted and validated again.
//!
//! A product's state is named by its id and version: every write to a product bumps its
//! version (updates, stock reservations and releases) and ids are never reused, which the
//! ETags and `rest::Rendered` rest on too. So when a row's version is the one kept here,
//! the row holds what the kept product holds, and the read takes the kept product instead
//! of reading the row's other columns, allocating its name and validating every field
//! (a quarter of the instructions of a page of 50, BENCHMARKS.md). The row itself is still
//! read on every request: what is listed, in which order and in which version is always
//! the database's answer, so this is not a cache and has no staleness.
//!
//! A B-tree for the reason `rest::Rendered` gives: a page's ids are consecutive, and a
//! page walks one range of the tree in step with its rows.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use storage::StoreError;

use super::ProductRow;
use crate::domain::Product;

#[derive(Debug)]
pub(super) struct Interned {
    capacity: usize,
    products: RwLock<BTreeMap<i64, Arc<Product>>>,
}

/// A row of a list: the product kept for its state, or the row read, to convert.
pub(super) enum Listed {
    Kept(Arc<Product>),
    Read(ProductRow),
}

impl Interned {
    /// Keeps up to `capacity` products (0: none).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            products: RwLock::new(BTreeMap::new()),
        }
    }

    /// Runs `read` with a lookup of the products kept, for rows read in increasing id order
    /// from `from` on: `kept(id, version)` is the product kept for `id` if it is in state
    /// `version`. Lists read concurrently; keeping new products waits for them.
    pub(super) fn scan<R>(
        &self,
        from: i64,
        read: impl FnOnce(&mut dyn FnMut(i64, i64) -> Option<Arc<Product>>) -> R,
    ) -> R {
        if self.capacity == 0 {
            return read(&mut |_, _| None);
        }
        let products = self.products.read().unwrap_or_else(PoisonError::into_inner);
        let mut kept = products.range(from..).peekable();
        read(&mut |id, version| {
            while kept.next_if(|(k, _)| **k < id).is_some() {}
            kept.next_if(|(k, _)| **k == id)
                .map(|(_, p)| p)
                .filter(|p| p.version == version)
                .cloned()
        })
    }

    /// The products `listed` names, converting (and validating) the rows read, which are
    /// kept for the next read.
    pub(super) fn resolve(&self, listed: Vec<Listed>) -> Result<Vec<Arc<Product>>, StoreError> {
        let mut fresh = Vec::new();
        let products = listed
            .into_iter()
            .map(|l| match l {
                Listed::Kept(p) => Ok(p),
                Listed::Read(row) => {
                    let p = Arc::new(Product::try_from(row)?);
                    fresh.push(Arc::clone(&p));
                    Ok(p)
                }
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if self.capacity > 0 && !fresh.is_empty() {
            let mut kept = self
                .products
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for p in fresh {
                if kept.len() >= self.capacity && !kept.contains_key(&p.id.0) {
                    // Full: start over rather than track recency on every read.
                    kept.clear();
                }
                kept.insert(p.id.0, p);
            }
        }
        Ok(products)
    }
}
