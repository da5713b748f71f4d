//! The tower form of [`Downstream`]: a [`Layer`] that puts any tower service (an HTTP
//! client, a tonic channel, a broker client wrapped as a service) behind the same policy
//! as [`Downstream::call`] — deadline, budgeted retry with full jitter, breaker, bulkhead,
//! attempt timeout, in that order (see `downstream`'s module doc for why).
//!
//! What tower's own `Retry`/`Timeout`/`ConcurrencyLimit` layers would give piecemeal, this
//! gives as one policy whose retry decision comes from the error table and whose deadline
//! is capped by the inbound request's. A [`Classify`] says, per client, which requests may
//! be retried, how an answer maps to a [`Problem`], and how an attempt tells the callee its
//! budget (e.g. a `grpc-timeout` or `x-request-timeout-ms` header).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use problem::Problem;
use tower::{Layer, Service, ServiceExt};

use crate::downstream::{Attempt, Downstream};

/// How one client's requests and answers look to the policy.
pub trait Classify<Req, Res, E>: Clone + Send + Sync + 'static {
    /// Whether `req` may be retried: a read, or a write that carries an idempotency key.
    fn idempotent(&self, req: &Req) -> bool;

    /// An answer as the error table sees it: a transport error, or a response that is an
    /// error (an HTTP 503, a gRPC UNAVAILABLE), becomes a problem whose kind decides
    /// whether to retry and whether it counts against the breaker.
    fn outcome(&self, result: Result<Res, E>) -> Result<Res, Problem>;

    /// Prepares one attempt's copy of the request, e.g. stating `attempt.budget` in a
    /// deadline header so the callee gives up before this caller.
    fn prepare(&self, _req: &mut Req, _attempt: Attempt) {}
}

/// Wraps services in `downstream`'s policy.
#[derive(Debug, Clone)]
pub struct DownstreamLayer<C> {
    downstream: Downstream,
    classify: C,
}

impl<C> DownstreamLayer<C> {
    pub fn new(downstream: Downstream, classify: C) -> Self {
        Self {
            downstream,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for DownstreamLayer<C> {
    type Service = DownstreamService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        DownstreamService {
            inner,
            downstream: self.downstream.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// A service behind a [`Downstream`] policy. Always ready: readiness (and the bulkhead)
/// is awaited per attempt, inside the deadline.
#[derive(Debug, Clone)]
pub struct DownstreamService<S, C> {
    inner: S,
    downstream: Downstream,
    classify: C,
}

impl<S, C, Req> Service<Req> for DownstreamService<S, C>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classify<Req, S::Response, S::Error>,
    Req: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Problem>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let downstream = self.downstream.clone();
        let classify = self.classify.clone();
        Box::pin(async move {
            let idempotent = classify.idempotent(&req);
            downstream
                .call(idempotent, |attempt| {
                    let mut svc = inner.clone();
                    let mut req = req.clone();
                    let classify = classify.clone();
                    async move {
                        classify.prepare(&mut req, attempt);
                        let result = match svc.ready().await {
                            Ok(ready) => ready.call(req).await,
                            Err(e) => Err(e),
                        };
                        classify.outcome(result)
                    }
                })
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use problem::Kind;

    use super::*;
    use crate::breaker::BreakerConfig;
    use crate::downstream::Policy;

    /// A request: whether it may be retried, and what the callee answers per attempt.
    #[derive(Clone)]
    struct Req {
        idempotent: bool,
    }

    #[derive(Clone)]
    struct ByFlag;

    impl Classify<Req, &'static str, Kind> for ByFlag {
        fn idempotent(&self, req: &Req) -> bool {
            req.idempotent
        }
        fn outcome(&self, result: Result<&'static str, Kind>) -> Result<&'static str, Problem> {
            result.map_err(Problem::new)
        }
    }

    fn policy() -> Policy {
        Policy {
            timeout: Duration::from_secs(2),
            breaker: BreakerConfig {
                minimum_calls: 1_000,
                ..BreakerConfig::default()
            },
            ..Policy::default()
        }
    }

    /// A callee that fails with UNAVAILABLE `failures` times, then answers.
    fn flaky(
        failures: u32,
        calls: Arc<AtomicU32>,
    ) -> impl Service<Req, Response = &'static str, Error = Kind, Future = impl Send>
    + Clone
    + Send
    + 'static {
        tower::service_fn(move |_req: Req| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err(Kind::Unavailable)
                } else {
                    Ok("ok")
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_idempotent_request_is_retried_through_the_layer() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut svc = DownstreamLayer::new(Downstream::new("flaky", policy()), ByFlag)
            .layer(flaky(2, calls.clone()));
        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(Req { idempotent: true })
            .await;
        assert_eq!(answer.unwrap(), "ok");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "two retries, then success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_idempotent_request_is_tried_once() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut svc = DownstreamLayer::new(Downstream::new("flaky", policy()), ByFlag)
            .layer(flaky(2, calls.clone()));
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(Req { idempotent: false })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_callee_slower_than_the_budget_times_out_and_is_cancelled() {
        let finished = Arc::new(AtomicU32::new(0));
        let done = finished.clone();
        let slow = tower::service_fn(move |_req: Req| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Kind>("late")
            }
        });
        let mut svc = DownstreamLayer::new(Downstream::new("slow", policy()), ByFlag).layer(slow);
        let started = tokio::time::Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(Req { idempotent: false })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::Timeout);
        assert!(started.elapsed() <= Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "the attempt was dropped"
        );
    }
}
