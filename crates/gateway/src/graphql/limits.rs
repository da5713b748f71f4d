//! What an operation may ask for, enforced before it runs: maximum depth, aliases and
//! root fields, no fragment cycle, a requested cost under the maximum, and a per-client
//! cost bucket it can afford (Shopify's leaky bucket: `bucket_size` points, refilled at
//! `restore_rate` per second; an operation takes its requested cost and gets back what
//! it did not use). The checks run in async-graphql's `parse_query` hook, between parsing
//! and validation, so a refused operation runs no resolver and calls no backend; every
//! response says what the operation cost in `extensions.cost`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, Value, Variables};
use problem::{Kind, Problem};
use settings::GraphqlSettings;
use tokio::time::Instant;

use super::cost::{Measure, Measured};

/// How deep an introspection query may nest: the standard one (GraphiQL's, a code
/// generator's) nests `ofType` about ten levels under `__schema`.
pub const MAX_INTROSPECTION_DEPTH: u64 = 32;

/// The client an operation is counted against, put in the request's data by the face.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Client(pub String);

/// Marks a request that came over GET: it may only read (a mutation is refused).
#[derive(Debug, Clone, Copy)]
pub struct OverGet;

/// Set once an operation of the request parses as a mutation (whatever its text said:
/// a persisted query arrives as a hash alone). Put in the request's data by the face,
/// which then keeps no answer of it and forgets those kept (`super::answers`).
#[derive(Debug, Clone, Default)]
pub struct Mutated(Arc<std::sync::atomic::AtomicBool>);

impl Mutated {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The bucket of each client.
#[derive(Debug)]
pub struct Buckets {
    size: f64,
    rate: f64,
    clients: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    available: f64,
    at: Instant,
}

/// A bucket's state, as `extensions.cost.throttleStatus` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleStatus {
    pub maximum: f64,
    pub available: f64,
    pub rate: f64,
}

impl Buckets {
    /// Most clients remembered; past it, full buckets (as good as new) are forgotten.
    const MAX_CLIENTS: usize = 100_000;
    /// The bucket new clients share while the table is full of spending ones.
    const OVERFLOW: &'static str = "(overflow)";

    pub fn new(size: u32, rate: u32) -> Self {
        Self {
            size: f64::from(size),
            rate: f64::from(rate),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, client: &str, f: impl FnOnce(&mut Bucket) -> R) -> R {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let mut client = client;
        if clients.len() >= Self::MAX_CLIENTS && !clients.contains_key(client) {
            // Full buckets are as good as new: forget them. If every client is still
            // spending, new ones share one bucket rather than grow the table without bound.
            let (size, rate) = (self.size, self.rate);
            clients.retain(|_, b| refilled(b, now, size, rate) < size);
            if clients.len() >= Self::MAX_CLIENTS {
                client = Self::OVERFLOW;
            }
        }
        let bucket = clients.entry(client.to_owned()).or_insert(Bucket {
            available: self.size,
            at: now,
        });
        bucket.available = refilled(bucket, now, self.size, self.rate);
        bucket.at = now;
        f(bucket)
    }

    /// Takes `cost` from `client`'s bucket, or says how long until it could.
    pub fn take(&self, client: &str, cost: f64) -> Result<ThrottleStatus, (ThrottleStatus, f64)> {
        let (size, rate) = (self.size, self.rate);
        self.with(client, |bucket| {
            let status = |available| ThrottleStatus {
                maximum: size,
                available,
                rate,
            };
            if cost <= bucket.available {
                bucket.available -= cost;
                Ok(status(bucket.available))
            } else {
                Err((status(bucket.available), (cost - bucket.available) / rate))
            }
        })
    }

    /// Gives `points` back (what an operation was charged and did not use).
    pub fn give_back(&self, client: &str, points: f64) -> ThrottleStatus {
        let (size, rate) = (self.size, self.rate);
        self.with(client, |bucket| {
            bucket.available = (bucket.available + points).min(size);
            ThrottleStatus {
                maximum: size,
                available: bucket.available,
                rate,
            }
        })
    }
}

fn refilled(bucket: &Bucket, now: Instant, size: f64, rate: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.available + elapsed * rate).min(size)
}

/// The limits, as an extension of the schema.
pub struct Limits {
    settings: GraphqlSettings,
    buckets: Arc<Buckets>,
    list_sizes: Arc<HashMap<(&'static str, &'static str), u64>>,
}

impl Limits {
    /// `buckets`: the clients' cost buckets (shared with `answers`, which charges them too).
    pub fn new(
        settings: GraphqlSettings,
        list_sizes: HashMap<(&'static str, &'static str), u64>,
        buckets: Arc<Buckets>,
    ) -> Self {
        Self {
            buckets,
            settings,
            list_sizes: Arc::new(list_sizes),
        }
    }
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OneOperation {
            settings: self.settings.clone(),
            buckets: Arc::clone(&self.buckets),
            list_sizes: Arc::clone(&self.list_sizes),
            state: Mutex::default(),
        })
    }
}

/// The extension's instance for one request.
struct OneOperation {
    settings: GraphqlSettings,
    buckets: Arc<Buckets>,
    list_sizes: Arc<HashMap<(&'static str, &'static str), u64>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    operation_name: Option<String>,
    client: Option<String>,
    over_get: bool,
    mutated: Option<Mutated>,
    /// Its requested cost, once measured.
    requested: Option<u64>,
    /// Set once admitted: what it was parsed into, to measure the response against.
    admitted: Option<(ExecutableDocument, Variables)>,
    throttle: Option<ThrottleStatus>,
}

impl OneOperation {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses what exceeds a limit; the measures otherwise.
    fn check(
        &self,
        ctx: &ExtensionContext<'_>,
        document: &ExecutableDocument,
        variables: &Variables,
    ) -> ServerResult<Measured> {
        let measure = Measure {
            registry: &ctx.schema_env.registry,
            list_sizes: &self.list_sizes,
        };
        let name = self.state().operation_name.clone();
        // With no operation to pick, every one of them must pass.
        let operations: Vec<_> = match Measure::operation(document, name.as_deref()) {
            Some(op) => vec![op],
            None => document.operations.iter().map(|(_, op)| op).collect(),
        };
        let mut worst = Measured::default();
        for op in operations {
            let m = measure
                .requested(document, &op.node, variables)
                .map_err(|e| refused(&e.to_string(), e.limit(), 0, 0))?;
            worst = Measured {
                depth: worst.depth.max(m.depth),
                introspection_depth: worst.introspection_depth.max(m.introspection_depth),
                aliases: worst.aliases.max(m.aliases),
                root_fields: worst.root_fields.max(m.root_fields),
                cost: worst.cost.max(m.cost),
            };
        }
        let s = &self.settings;
        let over = [
            ("max_depth", u64::from(worst.depth), u64::from(s.max_depth)),
            (
                "max_introspection_depth",
                u64::from(worst.introspection_depth),
                MAX_INTROSPECTION_DEPTH,
            ),
            (
                "max_aliases",
                u64::from(worst.aliases),
                u64::from(s.max_aliases),
            ),
            (
                "max_root_fields",
                u64::from(worst.root_fields),
                u64::from(s.max_root_fields),
            ),
            ("max_cost", worst.cost, u64::from(s.max_cost)),
        ];
        for (limit, value, maximum) in over {
            if value > maximum {
                return Err(refused(
                    &format!(
                        "the operation's {} is {value}; at most {maximum} is allowed",
                        &limit[4..].replace('_', " ")
                    ),
                    limit,
                    value,
                    maximum,
                ));
            }
        }
        Ok(worst)
    }
}

/// An operation refused for a limit: the error table's invalid request, saying which.
fn refused(detail: &str, limit: &str, value: u64, maximum: u64) -> ServerError {
    let mut problem = Problem::new(Kind::InvalidRequest)
        .with_detail(detail.to_owned())
        .with_extension("limit", limit);
    if maximum > 0 {
        problem = problem
            .with_extension("value", value)
            .with_extension("maximum", maximum);
    }
    server_error(problem, None)
}

/// A problem as a request error (no `path`: nothing ran), `code` overridden if given.
pub fn server_error(problem: Problem, code: Option<&str>) -> ServerError {
    let mut error = server::graphql::server_error(problem);
    if let Some(code) = code {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
    error
}

#[async_trait::async_trait]
impl Extension for OneOperation {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        {
            let mut state = self.state();
            state.operation_name = request.operation_name.clone();
            // A request's own (HTTP), or its connection's (WebSocket).
            state.client = [&request.data, ctx.session_data]
                .into_iter()
                .find_map(|data| {
                    data.get(&std::any::TypeId::of::<Client>())
                        .and_then(|c| c.downcast_ref::<Client>())
                        .map(|c| c.0.clone())
                });
            state.over_get = request
                .data
                .contains_key(&std::any::TypeId::of::<OverGet>());
            state.mutated = request
                .data
                .get(&std::any::TypeId::of::<Mutated>())
                .and_then(|m| m.downcast_ref::<Mutated>())
                .cloned();
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Fragments can multiply (each spreading the next twice): measure such a document
        // with our bounded walk before async-graphql's own checks walk it unbounded.
        // Every operation, not only the one to run: async-graphql's walk covers them all.
        if query.contains("...")
            && let Ok(document) = async_graphql::parser::parse_query(query)
        {
            let measure = Measure {
                registry: &ctx.schema_env.registry,
                list_sizes: &self.list_sizes,
            };
            measure
                .expand_all(&document, variables)
                .map_err(|e| refused(&e.to_string(), e.limit(), 0, 0))?;
        }
        let document = match next.run(ctx, query, variables).await {
            Ok(document) => document,
            // async-graphql's nesting guard follows fragment spreads, so a fragment cycle
            // trips it first: say what the operation did wrong when we can tell.
            Err(error) if error.message.contains("recursion depth") => {
                return Err(async_graphql::parser::parse_query(query)
                    .ok()
                    .and_then(|document| self.check(ctx, &document, variables).err())
                    .unwrap_or(error));
            }
            Err(error) => return Err(error),
        };
        let measured = self.check(ctx, &document, variables)?;
        let (name, over_get, mutated) = {
            let state = self.state();
            (
                state.operation_name.clone(),
                state.over_get,
                state.mutated.clone(),
            )
        };
        let mutation = Measure::operation(&document, name.as_deref())
            .is_some_and(|op| op.node.ty == async_graphql::parser::types::OperationType::Mutation);
        if mutation && let Some(mutated) = mutated {
            mutated.set();
        }
        if over_get && mutation {
            return Err(server_error(
                Problem::new(Kind::MethodNotAllowed)
                    .with_detail("a mutation must be sent with POST; GET only reads"),
                None,
            ));
        }
        let client = self.state().client.clone().unwrap_or_default();
        let requested = measured.cost as f64;
        let taken = self.buckets.take(&client, requested);
        let mut state = self.state();
        state.requested = Some(measured.cost);
        match taken {
            Ok(status) => {
                state.throttle = Some(status);
                state.admitted = Some((document.clone(), variables.clone()));
                Ok(document)
            }
            Err((status, wait)) => {
                state.throttle = Some(status);
                drop(state);
                let problem = Problem::new(Kind::RateLimited)
                    .with_detail(format!(
                        "this operation costs {requested}; {:.0} of {} points are available, \
                         and {} come back every second",
                        status.available, status.maximum, status.rate
                    ))
                    .with_retry_after(std::time::Duration::from_secs_f64(wait.ceil()));
                let mut error = server_error(problem, Some("THROTTLED"));
                if let Some(extensions) = error.extensions.as_mut() {
                    extensions.set("retryAfterSeconds", wait.ceil());
                }
                Err(error)
            }
        }
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        // (async-graphql's own errors get the error table's extensions in `Conform`.)
        let (requested, admitted, client, throttle, name) = {
            let mut state = self.state();
            (
                state.requested,
                state.admitted.take(),
                state.client.clone().unwrap_or_default(),
                state.throttle,
                state.operation_name.clone(),
            )
        };
        // Refused before it was measured (unparsable, over a limit): no cost to tell.
        let Some(requested) = requested else {
            return response;
        };
        let measure = Measure {
            registry: &ctx.schema_env.registry,
            list_sizes: &self.list_sizes,
        };
        let ran = admitted.as_ref().and_then(|(document, variables)| {
            Measure::operation(document, name.as_deref()).map(|op| (document, op, variables))
        });
        let (actual, throttle) = match ran {
            Some((document, op, variables)) => {
                let actual = measure.actual(document, &op.node, variables, &response.data);
                let unused = requested.saturating_sub(actual) as f64;
                (Some(actual), Some(self.buckets.give_back(&client, unused)))
            }
            // Throttled, or refused by validation: nothing ran. (A refusal after the
            // bucket was charged gives the whole cost back.)
            None if admitted.is_some() => (
                Some(0),
                Some(self.buckets.give_back(&client, requested as f64)),
            ),
            None => (None, throttle),
        };
        response.extensions.insert(
            "cost".to_owned(),
            cost_extension(requested, actual, throttle),
        );
        response
    }
}

/// What `extensions.cost` says: the requested and actual cost, and the client's bucket.
pub fn cost_extension(
    requested: u64,
    actual: Option<u64>,
    throttle: Option<ThrottleStatus>,
) -> Value {
    let mut cost = async_graphql::indexmap::IndexMap::new();
    cost.insert(
        async_graphql::Name::new("requestedQueryCost"),
        Value::from(requested),
    );
    cost.insert(
        async_graphql::Name::new("actualQueryCost"),
        actual.map_or(Value::Null, Value::from),
    );
    if let Some(t) = throttle {
        let mut status = async_graphql::indexmap::IndexMap::new();
        status.insert(
            async_graphql::Name::new("maximumAvailable"),
            Value::from(t.maximum),
        );
        status.insert(
            async_graphql::Name::new("currentlyAvailable"),
            Value::from(t.available.floor()),
        );
        status.insert(async_graphql::Name::new("restoreRate"), Value::from(t.rate));
        cost.insert(
            async_graphql::Name::new("throttleStatus"),
            Value::Object(status),
        );
    }
    Value::Object(cost)
}
