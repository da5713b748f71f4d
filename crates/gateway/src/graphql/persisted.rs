//! Automatic persisted queries (Apollo's protocol): a query sent once with its SHA-256 in
//! `extensions.persistedQuery` is remembered, and then asked for by the hash alone (over
//! GET, so an HTTP cache can serve it); an unknown hash answers `PersistedQueryNotFound`,
//! and the client sends the query with it.
//!
//! Ours, not async-graphql's `ApolloPersistedQueries`: that one keeps parsed documents in
//! an LRU bounded by count (4,096 documents of any size: a few MB of AST each from a
//! 64 KiB body) and hands the parsed document on, so the operation skips the checks that
//! read its text. This keeps the query text, bounded by total bytes, and puts the text
//! back in the request: a persisted query is parsed and measured like any other.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Request, ServerError, ServerResult};
use sha2::Digest;

/// The queries remembered, oldest forgotten first once they pass `max_bytes` in all.
#[derive(Debug)]
pub struct PersistedQueries {
    max_bytes: usize,
    store: Arc<Mutex<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    queries: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl PersistedQueries {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            store: Arc::default(),
        }
    }
}

impl ExtensionFactory for PersistedQueries {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Persisted {
            max_bytes: self.max_bytes,
            store: Arc::clone(&self.store),
        })
    }
}

struct Persisted {
    max_bytes: usize,
    store: Arc<Mutex<Store>>,
}

impl Persisted {
    fn get(&self, hash: &str) -> Option<Arc<str>> {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.queries.get(hash).cloned()
    }

    fn put(&self, hash: String, query: &str) {
        if query.len() > self.max_bytes {
            return;
        }
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if store.queries.contains_key(&hash) {
            return;
        }
        while store.bytes + query.len() > self.max_bytes {
            let Some(oldest) = store.order.pop_front() else {
                break;
            };
            if let Some(gone) = store.queries.remove(&oldest) {
                store.bytes -= gone.len();
            }
        }
        store.bytes += query.len();
        store.order.push_back(hash.clone());
        store.queries.insert(hash, Arc::from(query));
    }
}

fn hex_sha256(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait::async_trait]
impl Extension for Persisted {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(persisted) = request.extensions.remove("persistedQuery") {
            let persisted = persisted.into_json().unwrap_or_default();
            let version = persisted["version"].as_i64();
            let hash = persisted["sha256Hash"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if version != Some(1) || hash.is_empty() {
                return Err(ServerError::new(
                    "extensions.persistedQuery needs version 1 and a sha256Hash",
                    None,
                ));
            }
            if request.query.is_empty() {
                let Some(query) = self.get(&hash) else {
                    return Err(ServerError::new("PersistedQueryNotFound", None));
                };
                request.query = query.to_string();
            } else if hex_sha256(&request.query) != hash {
                return Err(ServerError::new("provided sha does not match query", None));
            } else {
                self.put(hash, &request.query);
            }
        }
        next.run(ctx, request).await
    }
}
