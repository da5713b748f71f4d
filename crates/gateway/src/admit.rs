//! Who gets in, and how fast: Stripe's limiters at the gateway.
//!
//! 1. **Load shedding with a reserve for writes**: once the gateway has
//!    `100 - write_reserve_percent`% of `max_in_flight` in flight, reads are refused (503
//!    with `Retry-After`) and only writes are let in, up to `max_in_flight` itself (the
//!    server's own shedding): what is already being paid for is finished first.
//! 2. **Rate**, GCRA (the `governor` crate): per API key (`gateway.limits.per_key`), per
//!    client address for callers without a key (`anonymous`), and a further rate per key
//!    for each scope configured in `gateway.limits.scopes`.
//! 3. **Concurrency** per API key (`concurrent_per_key`).
//!
//! Every admitted answer carries the IETF RateLimit fields of the rate it was counted
//! against (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "key";q=100;w=1` and
//! `RateLimit: "key";r=99;t=1`); a refusal is a 429 problem with `Retry-After` and the
//! same fields (`r=0`). GraphQL's cost bucket is keyed by the same identity (the key's
//! id, or the address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue};
use problem::{Kind, Problem};
use settings::{LimitSettings, Rate};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::keys::{Caller, Scope};

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One configured rate over keys of type `K`.
struct Bucket<K: std::hash::Hash + Eq + Clone> {
    /// The policy's name in the RateLimit fields.
    name: &'static str,
    rate: Rate,
    limiter: Limiter<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Bucket<K> {
    fn new(name: &'static str, rate: Rate) -> Self {
        let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            name,
            rate,
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    /// `Ok(remaining)` or `Err(wait)`.
    fn take(&self, key: &K) -> Result<u32, Duration> {
        match self.limiter.check_key(key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(self.limiter.clock().now())),
        }
    }

    /// `RateLimit-Policy: "<name>";q=<burst>;w=<seconds to refill it>`.
    fn policy(&self) -> String {
        let window = self.rate.burst.div_ceil(self.rate.per_second.max(1)).max(1);
        format!("\"{}\";q={};w={window}", self.name, self.rate.burst)
    }

    /// `RateLimit: "<name>";r=<remaining>;t=<seconds until the quota is whole again>`.
    fn state(&self, remaining: u32, wait: Option<Duration>) -> String {
        let spent = self.rate.burst.saturating_sub(remaining);
        let refill = spent.div_ceil(self.rate.per_second.max(1));
        let t = wait.map_or(u64::from(refill), |w| whole_seconds(w).max(1));
        format!("\"{}\";r={remaining};t={t}", self.name)
    }
}

fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The gateway's limiters.
pub struct Admission {
    per_key: Bucket<Arc<str>>,
    anonymous: Bucket<IpAddr>,
    scopes: Vec<(Scope, Bucket<Arc<str>>)>,
    concurrent_per_key: usize,
    in_flight_per_key: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    in_flight: Arc<AtomicUsize>,
    /// Reads are shed from this many requests in flight on.
    shed_reads_at: usize,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("per_key", &self.per_key.rate)
            .field("anonymous", &self.anonymous.rate)
            .field("shed_reads_at", &self.shed_reads_at)
            .finish_non_exhaustive()
    }
}

/// A request let in: its RateLimit fields, and what it holds until it is answered.
#[must_use]
pub struct Admitted {
    headers: HeaderMap,
    _concurrency: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight,
}

impl Admitted {
    /// Puts the RateLimit fields on `response` (each policy's, replacing any the
    /// upstream sent).
    pub fn stamp(&self, headers: &mut HeaderMap) {
        headers.remove(RATELIMIT);
        headers.remove(RATELIMIT_POLICY);
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
    }
}

impl Admitted {
    /// `response` with the RateLimit fields, holding the admission (its concurrency slot
    /// and its place in flight) until the body has been sent or dropped: a stream or a
    /// slow download counts for as long as it lasts, not until its headers.
    pub fn hold(self, mut response: axum::response::Response) -> axum::response::Response {
        self.stamp(response.headers_mut());
        let (parts, body) = response.into_parts();
        axum::response::Response::from_parts(
            parts,
            axum::body::Body::new(Held {
                body,
                _admitted: self,
            }),
        )
    }
}

pin_project_lite::pin_project! {
    /// A body that keeps its request's admission while it is being sent.
    struct Held {
        #[pin]
        body: axum::body::Body,
        _admitted: Admitted,
    }
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request was not let in, as the answer to give (boxed: a response is large, and
/// admission is on every request's path).
pub type Refusal = Box<axum::response::Response>;

impl Admission {
    /// From `gateway.limits`; a scope named there that no key can have is an error naming it.
    pub fn new(limits: &LimitSettings, max_in_flight: usize) -> Result<Self, String> {
        let mut scopes = Vec::new();
        for (name, rate) in &limits.scopes {
            let scope = Scope::parse(name)
                .ok_or_else(|| format!("gateway.limits.scopes: {name:?} is not a scope"))?;
            scopes.push((scope, Bucket::new(scope.as_str(), *rate)));
        }
        let reserve = max_in_flight * usize::from(limits.write_reserve_percent) / 100;
        Ok(Self {
            per_key: Bucket::new("key", limits.per_key),
            anonymous: Bucket::new("anonymous", limits.anonymous),
            scopes,
            concurrent_per_key: usize::try_from(limits.concurrent_per_key).unwrap_or(usize::MAX),
            in_flight_per_key: Mutex::new(HashMap::new()),
            in_flight: Arc::new(AtomicUsize::new(0)),
            shed_reads_at: max_in_flight.saturating_sub(reserve).max(1),
        })
    }

    /// Lets a request in, or says why not. `write`: it changes something (kept in the
    /// reserve); `scope`: the scope it needs, if any; `peer`: the caller's address.
    pub fn admit(
        &self,
        caller: &Caller,
        peer: Option<IpAddr>,
        scope: Option<Scope>,
        write: bool,
    ) -> Result<Admitted, Refusal> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight(Arc::clone(&self.in_flight));
        if !write && now >= self.shed_reads_at {
            metrics::counter!("brigade_shed_total", "service" => "gateway", "class" => "read")
                .increment(1);
            return Err(Box::new(axum::response::IntoResponse::into_response(
                Problem::unavailable(
                    "the gateway is busy; reads wait while writes in flight finish",
                )
                .with_retry_after(Duration::from_secs(1)),
            )));
        }
        let mut headers = HeaderMap::new();
        let concurrency = match caller {
            Caller::Anonymous => {
                // Without an address (a test's in-process call) every anonymous caller
                // shares one bucket.
                let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                self.count(&self.anonymous, &ip, &mut headers)?;
                None
            }
            Caller::Key(principal) => {
                self.count(&self.per_key, &principal.id, &mut headers)?;
                if let Some(scope) = scope
                    && let Some((_, bucket)) = self.scopes.iter().find(|(s, _)| *s == scope)
                {
                    self.count(bucket, &principal.id, &mut headers)?;
                }
                Some(self.hold(&principal.id, &headers)?)
            }
        };
        Ok(Admitted {
            headers,
            _concurrency: concurrency,
            _in_flight: in_flight,
        })
    }

    /// Counts one request against `bucket`'s rate for `key`, adding its fields to
    /// `headers` (a second policy is appended: the fields are lists).
    fn count<K: std::hash::Hash + Eq + Clone>(
        &self,
        bucket: &Bucket<K>,
        key: &K,
        headers: &mut HeaderMap,
    ) -> Result<(), Refusal> {
        let (remaining, wait) = match bucket.take(key) {
            Ok(remaining) => (remaining, None),
            Err(wait) => (0, Some(wait)),
        };
        for (name, value) in [
            (RATELIMIT_POLICY, bucket.policy()),
            (RATELIMIT, bucket.state(remaining, wait)),
        ] {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.append(name, value);
            }
        }
        let Some(wait) = wait else { return Ok(()) };
        metrics::counter!("brigade_rate_limited_total", "service" => "gateway", "policy" => bucket.name)
            .increment(1);
        let mut refusal = axum::response::IntoResponse::into_response(
            Problem::new(Kind::RateLimited)
                .with_detail(format!(
                    "over the {} rate ({} a second, bursts of {}); retry after the wait",
                    bucket.name, bucket.rate.per_second, bucket.rate.burst
                ))
                .with_retry_after(wait),
        );
        for (name, value) in headers.iter() {
            refusal.headers_mut().append(name, value.clone());
        }
        Err(Box::new(refusal))
    }

    /// One of the key's concurrent slots, held until the answer is given.
    fn hold(&self, key: &Arc<str>, headers: &HeaderMap) -> Result<OwnedSemaphorePermit, Refusal> {
        let slots = {
            let mut all = self
                .in_flight_per_key
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if all.len() > 10_000 {
                // Forget keys with nothing in flight (their semaphores are whole).
                let max = self.concurrent_per_key;
                all.retain(|_, s| s.available_permits() < max);
            }
            Arc::clone(
                all.entry(Arc::clone(key))
                    .or_insert_with(|| Arc::new(Semaphore::new(self.concurrent_per_key))),
            )
        };
        slots.try_acquire_owned().map_err(|_| {
            metrics::counter!("brigade_rate_limited_total", "service" => "gateway", "policy" => "concurrency")
                .increment(1);
            let mut refusal = axum::response::IntoResponse::into_response(
                Problem::new(Kind::RateLimited)
                    .with_detail(format!(
                        "this key already has {} requests in flight; retry when one is answered",
                        self.concurrent_per_key
                    ))
                    .with_retry_after(Duration::from_secs(1)),
            );
            for (name, value) in headers {
                refusal.headers_mut().append(name, value.clone());
            }
            Box::new(refusal)
        })
    }

    /// Forgets the rate state of keys and addresses idle long enough to be whole again
    /// (governor keeps an entry per key it has seen), every `every` until `stop`.
    pub async fn run_sweeper(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    self.per_key.limiter.retain_recent();
                    self.anonymous.limiter.retain_recent();
                    for (_, bucket) in &self.scopes {
                        bucket.limiter.retain_recent();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_say_the_quota_what_is_left_and_when_it_is_whole() {
        let bucket: Bucket<u8> = Bucket::new(
            "key",
            Rate {
                per_second: 2,
                burst: 4,
            },
        );
        assert_eq!(bucket.policy(), "\"key\";q=4;w=2");
        assert_eq!(bucket.state(4, None), "\"key\";r=4;t=0");
        assert_eq!(bucket.state(1, None), "\"key\";r=1;t=2");
        assert_eq!(
            bucket.state(0, Some(Duration::from_millis(300))),
            "\"key\";r=0;t=1"
        );
        // Four at once, then refused with the wait for the next cell (half a second).
        for left in [3, 2, 1, 0] {
            assert_eq!(bucket.take(&1), Ok(left));
        }
        let wait = bucket.take(&1).unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert_eq!(bucket.take(&2), Ok(3));
    }

    #[test]
    fn an_unknown_scope_in_the_settings_is_named() {
        let mut limits = LimitSettings::default();
        limits.scopes.insert(
            "orders:delete".to_owned(),
            Rate {
                per_second: 1,
                burst: 1,
            },
        );
        let err = Admission::new(&limits, 100).unwrap_err();
        assert!(err.contains("\"orders:delete\""), "{err}");
    }

    #[test]
    fn reads_are_shed_first_and_writes_keep_the_reserve() {
        let limits = LimitSettings {
            per_key: Rate {
                per_second: 1000,
                burst: 1000,
            },
            anonymous: Rate {
                per_second: 1000,
                burst: 1000,
            },
            write_reserve_percent: 50,
            ..LimitSettings::default()
        };
        let admission = Admission::new(&limits, 4).unwrap();
        let held: Vec<Admitted> = (0..2)
            .map(|_| {
                admission
                    .admit(&Caller::Anonymous, None, None, false)
                    .unwrap()
            })
            .collect();
        // Two of four in flight: a third read is shed, writes still get in.
        let shed = admission
            .admit(&Caller::Anonymous, None, None, false)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(shed.status(), 503);
        let write = admission.admit(&Caller::Anonymous, None, None, true);
        assert!(write.is_ok());
        drop(write);
        drop(held);
        assert!(
            admission
                .admit(&Caller::Anonymous, None, None, false)
                .is_ok()
        );
    }
}
