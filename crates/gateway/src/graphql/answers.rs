//! Answers kept for a repeat: the same query, with the same variables, from the same
//! client, answered from memory for as long as the answer's own `Cache-Control` allows
//! (the schema's hints: products and reviews 5 s, a user 5 s and private, an order never),
//! as GraphQL Yoga's and Apollo Router's response caches do. Nothing else about the
//! operation changes: it is charged to its client's cost bucket exactly as running it
//! would be (refused by the bucket, it runs and is refused as usual), and says so in
//! `extensions.cost`.
//!
//! - Per client (its API key, or its address): a user is private, and a field a key's
//!   scopes hide from another key must not reach it from here. A client never sees what
//!   it could not have asked for.
//! - Only answers without errors, whose data is at most `answer_cache_entry_bytes`, for
//!   operations that do not write (a request that parses as a mutation — `Mutated`, set
//!   by `limits` whatever the text said, a persisted hash included — is never kept).
//! - Sent with `Age` (seconds since it was kept), so no cache downstream keeps it past the
//!   max-age it had when it was made.
//! - Any write through this gateway — a mutation, a REST write, a gRPC write — forgets
//!   every answer after it is done, and an answer being computed while it ran is not kept
//!   (`storage::cache::ReadCache`'s generations): a client reads its own writes here at
//!   once. Writes that do not pass through this gateway (a worker's stock reservation,
//!   another gateway) show within the answer's max-age, as they would through any HTTP
//!   cache honouring the same header.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Value;
use bytes::Bytes;
use storage::cache::{ReadCache, Ticket};
use tokio::time::Instant;

use super::limits::{Buckets, Client, Mutated, cost_extension};

/// The longest any answer is kept, whatever its hint says.
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    client: String,
    query: String,
    /// The persisted query's hash, when the request names it instead of sending the text.
    persisted: Option<String>,
    operation: Option<String>,
    variables: String,
}

#[derive(Debug)]
struct Kept {
    data: Bytes,
    cache_control: String,
    requested: u64,
    actual: u64,
    at: Instant,
}

/// The gateway's kept answers (see the module's documentation).
#[derive(Debug)]
pub struct Answers {
    enabled: bool,
    cache: ReadCache<Key, Arc<Kept>>,
    max_bytes: usize,
    buckets: Arc<Buckets>,
}

/// What a lookup found.
pub enum Lookup {
    /// A kept answer, already charged to the client's bucket.
    Hit(Hit),
    /// Run the operation; hand its response to [`Answers::keep`] with this.
    Miss(Miss),
    /// Run the operation; its answer is not one to keep.
    Run,
}

/// A kept answer, ready to send.
pub struct Hit {
    /// The answer's `data`, as JSON.
    pub data: Bytes,
    /// Its `Cache-Control` value.
    pub cache_control: String,
    /// Whole seconds since it was kept (`Age`).
    pub age: u64,
    cost: Value,
}

impl Hit {
    /// The whole response body, as running the operation would have written it.
    pub fn body(&self) -> Vec<u8> {
        let cost = serde_json::to_vec(&self.cost).unwrap_or_else(|_| b"null".to_vec());
        let mut body = Vec::with_capacity(self.data.len() + cost.len() + 32);
        body.extend_from_slice(b"{\"data\":");
        body.extend_from_slice(&self.data);
        body.extend_from_slice(b",\"extensions\":{\"cost\":");
        body.extend_from_slice(&cost);
        body.extend_from_slice(b"}}");
        body
    }
}

/// Where a missed answer goes once the operation has run.
pub struct Miss {
    key: Key,
    ticket: Ticket,
}

impl Answers {
    pub fn new(settings: &settings::GraphqlSettings, buckets: Arc<Buckets>) -> Self {
        let entries = usize::try_from(settings.answer_cache_entries).unwrap_or(usize::MAX);
        Self {
            enabled: entries > 0,
            cache: ReadCache::new(MAX_AGE, entries),
            max_bytes: usize::try_from(settings.answer_cache_entry_bytes).unwrap_or(usize::MAX),
            buckets,
        }
    }

    /// The kept answer to `request` from `client`, or what to do instead.
    pub fn lookup(&self, client: &Client, request: &async_graphql::Request) -> Lookup {
        if !self.enabled || request.query.contains("mutation") {
            return Lookup::Run;
        }
        let persisted = if request.query.is_empty() {
            request
                .extensions
                .get("persistedQuery")
                .and_then(|p| match p {
                    Value::Object(p) => p.get("sha256Hash"),
                    _ => None,
                })
                .map(ToString::to_string)
        } else {
            None
        };
        let Ok(variables) = serde_json::to_string(&request.variables) else {
            return Lookup::Run;
        };
        let key = Key {
            client: client.0.clone(),
            query: request.query.clone(),
            persisted,
            operation: request.operation_name.clone(),
            variables,
        };
        let kept = match self.cache.get(&key) {
            Ok(kept) => kept,
            Err(ticket) => {
                metrics::counter!("brigade_graphql_answers_total", "outcome" => "miss")
                    .increment(1);
                return Lookup::Miss(Miss { key, ticket });
            }
        };
        // Charged as running it would be: its requested cost taken, the unused part given
        // back. A bucket that cannot afford it: run it, to be refused as usual.
        let Ok(_) = self.buckets.take(&client.0, kept.requested as f64) else {
            return Lookup::Run;
        };
        let throttle = self
            .buckets
            .give_back(&client.0, kept.requested.saturating_sub(kept.actual) as f64);
        metrics::counter!("brigade_graphql_answers_total", "outcome" => "hit").increment(1);
        Lookup::Hit(Hit {
            data: kept.data.clone(),
            cache_control: kept.cache_control.clone(),
            age: kept.at.elapsed().as_secs(),
            cost: cost_extension(kept.requested, Some(kept.actual), Some(throttle)),
        })
    }

    /// Keeps `response` for a repeat, if it is an answer to keep (`mutated`: whether the
    /// request turned out to be a mutation).
    pub fn keep(&self, miss: Miss, response: &async_graphql::Response, mutated: &Mutated) {
        let hint = response.cache_control;
        if mutated.get() || !response.errors.is_empty() || hint.max_age <= 0 {
            return;
        }
        let Some((requested, actual)) = costs(response) else {
            return;
        };
        let (Some(cache_control), Ok(data)) = (hint.value(), serde_json::to_vec(&response.data))
        else {
            return;
        };
        if data.len() > self.max_bytes {
            return;
        }
        let ttl = Duration::from_secs(u64::try_from(hint.max_age).unwrap_or(0));
        let kept = Kept {
            data: Bytes::from(data),
            cache_control,
            requested,
            actual,
            at: Instant::now(),
        };
        self.cache
            .fill_for(miss.ticket, miss.key, Arc::new(kept), ttl);
    }

    /// Forgets every answer: a write went through.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

/// The requested and actual cost a response reports in `extensions.cost`.
fn costs(response: &async_graphql::Response) -> Option<(u64, u64)> {
    let Some(Value::Object(cost)) = response.extensions.get("cost") else {
        return None;
    };
    let number = |name: &str| match cost.get(name) {
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    Some((number("requestedQueryCost")?, number("actualQueryCost")?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use async_graphql::CacheControl;

    use super::*;

    const QUERY: &str = "{ products { name } }";

    fn answers(bucket: u32, max_bytes: u32) -> Answers {
        let settings = settings::GraphqlSettings {
            answer_cache_entry_bytes: max_bytes,
            ..settings::GraphqlSettings::default()
        };
        Answers::new(&settings, Arc::new(Buckets::new(bucket, 1)))
    }

    fn response(max_age: i32) -> async_graphql::Response {
        let mut response = async_graphql::Response::new(
            Value::from_json(serde_json::json!({"products": [{"name": "Laptop"}]})).unwrap(),
        );
        response.cache_control = CacheControl {
            public: false,
            max_age,
        };
        response
            .extensions
            .insert("cost".to_owned(), cost_extension(10, Some(4), None));
        response
    }

    fn client(name: &str) -> Client {
        Client(name.to_owned())
    }

    /// Looks `QUERY` up for `who`: the hit, or `None` (a miss is kept as `answer`).
    fn ask(answers: &Answers, who: &str, answer: &async_graphql::Response) -> Option<Hit> {
        match answers.lookup(&client(who), &async_graphql::Request::new(QUERY)) {
            Lookup::Hit(hit) => Some(hit),
            Lookup::Miss(miss) => {
                answers.keep(miss, answer, &Mutated::default());
                None
            }
            Lookup::Run => panic!("a query is an answer to keep"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_answer_is_served_for_its_hints_max_age_and_charged() {
        let answers = answers(100, 1 << 20);
        assert!(ask(&answers, "a", &response(2)).is_none(), "first: run");
        let hit = ask(&answers, "a", &response(2)).expect("kept");
        assert_eq!(hit.cache_control, "max-age=2, private");
        let body: serde_json::Value = serde_json::from_slice(&hit.body()).unwrap();
        assert_eq!(body["data"]["products"][0]["name"], "Laptop");
        let cost = &body["extensions"]["cost"];
        assert_eq!(cost["requestedQueryCost"], 10);
        assert_eq!(cost["actualQueryCost"], 4);
        // 100, less the 4 it used (the 6 left of the 10 taken are given back).
        assert_eq!(cost["throttleStatus"]["currentlyAvailable"], 96.0);
        // The body is what running it writes (`Response`'s own serialization).
        let mut ran = response(2);
        let bucket = crate::graphql::limits::ThrottleStatus {
            maximum: 100.0,
            available: 96.0,
            rate: 1.0,
        };
        ran.extensions
            .insert("cost".to_owned(), cost_extension(10, Some(4), Some(bucket)));
        assert_eq!(hit.body(), serde_json::to_vec(&ran).unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(ask(&answers, "a", &response(2)).is_none(), "expired at 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn another_client_never_gets_it_and_a_write_forgets_it() {
        let answers = answers(100, 1 << 20);
        ask(&answers, "a", &response(5));
        assert!(ask(&answers, "b", &response(5)).is_none(), "b's own miss");
        assert!(ask(&answers, "a", &response(5)).is_some());
        answers.forget_all();
        assert!(ask(&answers, "a", &response(5)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_while_it_ran_keeps_it_from_being_kept() {
        let answers = answers(100, 1 << 20);
        let Lookup::Miss(miss) = answers.lookup(&client("a"), &async_graphql::Request::new(QUERY))
        else {
            panic!("a miss");
        };
        answers.forget_all();
        answers.keep(miss, &response(5), &Mutated::default());
        assert!(ask(&answers, "a", &response(5)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_parsed_as_a_mutation_is_never_kept_whatever_its_text() {
        // A persisted query: no text at all, only the hash of a mutation.
        let answers = answers(100, 1 << 20);
        let mut request = async_graphql::Request::new("");
        request.extensions.insert(
            "persistedQuery".to_owned(),
            Value::from_json(serde_json::json!({"version": 1, "sha256Hash": "abc"})).unwrap(),
        );
        let mutated = Mutated::default();
        for _ in 0..2 {
            let Lookup::Miss(miss) = answers.lookup(&client("a"), &request) else {
                panic!("never kept, so never a hit");
            };
            // (`limits` sets it when the operation parses as a mutation.)
            mutated.set();
            answers.keep(miss, &response(5), &mutated);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_says_how_old_it_is_and_a_cache_of_none_keeps_nothing() {
        let answers = answers(100, 1 << 20);
        ask(&answers, "a", &response(5));
        tokio::time::advance(Duration::from_millis(3_500)).await;
        assert_eq!(ask(&answers, "a", &response(5)).unwrap().age, 3);
        let settings = settings::GraphqlSettings {
            answer_cache_entries: 0,
            ..settings::GraphqlSettings::default()
        };
        let off = Answers::new(&settings, Arc::new(Buckets::new(100, 1)));
        let request = async_graphql::Request::new(QUERY);
        assert!(matches!(off.lookup(&client("a"), &request), Lookup::Run));
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_not_an_answer_to_keep_is_not_kept() {
        let answers = answers(100, 16);
        // No max-age, never cached (an order), too big, or with errors.
        let mut failed = response(5);
        failed
            .errors
            .push(async_graphql::ServerError::new("no", None));
        for answer in [response(0), response(-1), response(5), failed] {
            ask(&answers, "a", &answer);
            assert!(ask(&answers, "a", &answer).is_none());
        }
        let answers = self::answers(100, 1 << 20);
        let mutation = async_graphql::Request::new("mutation { createProduct { id } }");
        assert!(matches!(
            answers.lookup(&client("a"), &mutation),
            Lookup::Run
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_that_cannot_afford_it_runs_it_to_be_refused() {
        // 10 requested: a bucket of 12 affords it once (4 used), not the third time.
        let answers = answers(12, 1 << 20);
        ask(&answers, "a", &response(60));
        assert!(ask(&answers, "a", &response(60)).is_some(), "12 → 8");
        let again = answers.lookup(&client("a"), &async_graphql::Request::new(QUERY));
        assert!(matches!(again, Lookup::Run), "8 < 10");
    }
}
