//! One downstream service, as every call site sees it: [`Downstream::call`] runs an
//! operation under the whole policy. The layers, outermost first, and why in that order:
//!
//! 1. **Deadline** — the call's budget is the configured timeout, capped by what the
//!    inbound request has left minus a margin, so this service gives up before its caller
//!    does. Work whose deadline has passed is not started.
//! 2. **Retry** (with the budget) — outside the breaker and bulkhead, so each attempt
//!    asks them again: a retry into an open breaker fails fast instead of waiting.
//! 3. **Circuit breaker** — rejects at once while the downstream is known to be failing;
//!    records every attempt's outcome and latency.
//! 4. **Bulkhead** — a concurrency cap, so one slow downstream cannot take every task.
//!    Inside the breaker: a rejected call never holds a slot.
//! 5. **Attempt timeout** — the attempt gets what is left of the budget; the operation
//!    receives it to pass on (`grpc-timeout`), so the callee gives up first, too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use problem::{Kind, Problem};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::CallSite;
use crate::balance::{InFlight, Replicas};
use crate::breaker::{BreakerConfig, CircuitBreaker, Permit, Rejected};
use crate::retry::{RetryBudget, RetryPolicy};

/// Counter: calls made through a [`Downstream`] — each call once, however many attempts
/// it took — by `downstream` and `outcome` (`ok`; `refused`: the downstream answered with
/// a client error; `error`: it failed, timed out, or was not called because its breaker
/// was open). Beside `brigade_retries_total`: first attempts against retries.
pub const CALLS_TOTAL: &str = "brigade_downstream_calls_total";
/// Histogram: how long each call took, its attempts and backoffs included.
pub const CALL_DURATION: &str = "brigade_downstream_call_duration_seconds";

/// How one downstream is called.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The whole call's budget (all attempts), before capping by the inbound deadline.
    /// The seed's table: in-region internal calls 200 ms – 2 s.
    pub timeout: Duration,
    /// Taken off the inbound request's remaining time, so the callee stops before the
    /// caller and the caller still has time to answer.
    pub deadline_margin: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// Most calls in flight at once.
    pub max_concurrency: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            deadline_margin: Duration::from_millis(10),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            max_concurrency: 64,
        }
    }
}

impl Policy {
    /// The policy the `[outbound]` settings describe (the seed's in-region internal call
    /// by default); a call site with another row of the seed's timeout table (a broker
    /// publish, an external SaaS) overrides `timeout` with its own named setting.
    pub fn from_outbound(outbound: &settings::OutboundSettings) -> Self {
        use crate::breaker::SlidingWindow;
        use crate::retry::Backoff;
        Policy {
            timeout: outbound.timeout,
            deadline_margin: outbound.deadline_margin,
            retry: RetryPolicy {
                max_attempts: outbound.max_attempts,
                backoff: Backoff {
                    base: outbound.backoff_base,
                    cap: outbound.backoff_cap,
                },
            },
            breaker: BreakerConfig {
                window: SlidingWindow::Count(outbound.breaker_window),
                minimum_calls: outbound.breaker_minimum_calls,
                failure_rate_threshold: outbound.breaker_failure_rate,
                wait_in_open: outbound.breaker_wait,
                permitted_calls_in_half_open: outbound.breaker_probes,
                ..BreakerConfig::default()
            },
            max_concurrency: outbound.max_concurrency,
        }
    }
}

/// What one attempt is given.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 0 for the first attempt.
    pub number: u32,
    /// The time this attempt may take: pass it on (`grpc-timeout`).
    pub budget: Duration,
    /// Which replica serves it, for balanced calls (0 otherwise).
    pub replica: usize,
}

/// A downstream service and its policy, state shared by every caller.
#[derive(Debug, Clone)]
pub struct Downstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    site: CallSite,
    policy: Policy,
    breaker: CircuitBreaker,
    budget: RetryBudget,
    bulkhead: Semaphore,
}

impl Downstream {
    pub fn new(name: impl Into<String>, policy: Policy) -> Self {
        Self::at(CallSite::new(name), policy)
    }

    /// `name` as called by `service`: its series (breaker, retries, deadlines, bulkhead)
    /// carry both, so two services calling one downstream keep apart series.
    pub fn of_service(service: &'static str, name: impl Into<String>, policy: Policy) -> Self {
        Self::at(CallSite::of_service(service, name), policy)
    }

    fn at(site: CallSite, policy: Policy) -> Self {
        Self {
            inner: Arc::new(Inner {
                breaker: CircuitBreaker::at(site.clone(), policy.breaker.clone()),
                budget: RetryBudget::default(),
                bulkhead: Semaphore::new(policy.max_concurrency),
                site,
                policy,
            }),
        }
    }

    pub fn name(&self) -> &str {
        self.inner.site.downstream()
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Runs `operation` under the policy. `idempotent` says whether it may be retried
    /// (reads, or writes that carry an idempotency key). Errors are problems from the one
    /// table: the operation's own, or Unavailable (breaker open, bulkhead full) and
    /// Timeout (budget spent) from the layers.
    pub async fn call<T, F, Fut>(&self, idempotent: bool, operation: F) -> Result<T, Problem>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Problem>>,
    {
        let started = Instant::now();
        let result = match self.client_span() {
            // Traced: the call runs one span down the caller's trace, so what it sends
            // (`traceparent`) names the call, and the callee's span is the call's child.
            Some((call, wall)) => {
                let result =
                    telemetry::context::scope(call.clone(), self.call_once(idempotent, operation))
                        .await;
                self.record_call(&call, wall, &result);
                result
            }
            None => self.call_once(idempotent, operation).await,
        };
        self.count_call(started, &result);
        result
    }

    /// The context an outbound call runs in when spans are exported (a child of the
    /// request's), and when it started; `None` when they are not, or outside a request.
    fn client_span(&self) -> Option<(telemetry::RequestContext, std::time::SystemTime)> {
        if !telemetry::trace::enabled() {
            return None;
        }
        let ctx = telemetry::context::current()?;
        Some((ctx.child(), std::time::SystemTime::now()))
    }

    /// The call's span: `call {downstream}`, failed when the call failed on the
    /// callee's side (a refusal is an answer, not a failure).
    fn record_call<T>(
        &self,
        call: &telemetry::RequestContext,
        started: std::time::SystemTime,
        result: &Result<T, Problem>,
    ) {
        use telemetry::trace::{Kind as SpanKind, Span};
        let mut span = Span::of(
            call,
            SpanKind::Client,
            format!("call {}", self.name()),
            started,
        );
        span.attributes
            .push(("peer.service", self.name().to_owned()));
        if let Err(problem) = result
            && problem.kind().is_server_error()
        {
            span.error = Some(problem.kind().slug().to_owned());
        }
        telemetry::trace::record(span);
    }

    /// One call's outcome in the per-downstream series: calls by outcome, and how long
    /// each took (all its attempts and waits).
    fn count_call<T>(&self, started: Instant, result: &Result<T, Problem>) {
        let mut labels = self.inner.site.labels("downstream");
        labels.push(metrics::Label::new(
            "outcome",
            match result {
                Ok(_) => "ok",
                Err(p) if p.kind().is_server_error() => "error",
                Err(_) => "refused",
            },
        ));
        metrics::counter!(CALLS_TOTAL, labels).increment(1);
        metrics::histogram!(CALL_DURATION, self.inner.site.labels("downstream"))
            .record(started.elapsed().as_secs_f64());
    }

    async fn call_once<T, F, Fut>(&self, idempotent: bool, mut operation: F) -> Result<T, Problem>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Problem>>,
    {
        let inner = &self.inner;
        let (deadline, caller_bound) = self.deadline();
        if Instant::now() >= deadline {
            metrics::counter!(
                "brigade_deadline_exceeded_total",
                inner.site.labels("downstream")
            )
            .increment(1);
            return Err(Problem::new(Kind::Timeout)
                .with_detail(format!("no time left to call {}", self.name())));
        }
        crate::retry::retry(
            &inner.policy.retry,
            &inner.budget,
            idempotent,
            Some(deadline),
            &inner.site,
            |number| {
                // Ask the breaker first; only a permitted attempt starts the operation.
                let budget = deadline.saturating_duration_since(Instant::now());
                let permit = inner.breaker.try_acquire();
                let call = permit.is_ok().then(|| {
                    operation(Attempt {
                        number,
                        budget,
                        replica: 0,
                    })
                });
                self.attempt(
                    permit,
                    call,
                    deadline,
                    caller_bound,
                    None,
                    Some(&inner.breaker),
                )
            },
        )
        .await
    }

    /// Like [`call`](Self::call), across `replicas`: each attempt picks a replica (power
    /// of two choices over the healthy ones) and gets its client; its outcome goes to that
    /// replica's breaker, so a failing replica is ejected while the others carry on, and a
    /// retry usually lands on another replica.
    pub async fn call_balanced<C, T, F, Fut>(
        &self,
        replicas: &Replicas<C>,
        idempotent: bool,
        operation: F,
    ) -> Result<T, Problem>
    where
        F: FnMut(Attempt, &C) -> Fut,
        Fut: Future<Output = Result<T, Problem>>,
    {
        let started = Instant::now();
        let result = match self.client_span() {
            Some((call, wall)) => {
                let result = telemetry::context::scope(
                    call.clone(),
                    self.call_balanced_once(replicas, idempotent, operation),
                )
                .await;
                self.record_call(&call, wall, &result);
                result
            }
            None => {
                self.call_balanced_once(replicas, idempotent, operation)
                    .await
            }
        };
        self.count_call(started, &result);
        result
    }

    async fn call_balanced_once<C, T, F, Fut>(
        &self,
        replicas: &Replicas<C>,
        idempotent: bool,
        mut operation: F,
    ) -> Result<T, Problem>
    where
        F: FnMut(Attempt, &C) -> Fut,
        Fut: Future<Output = Result<T, Problem>>,
    {
        let inner = &self.inner;
        let (deadline, caller_bound) = self.deadline();
        if Instant::now() >= deadline {
            return Err(Problem::new(Kind::Timeout)
                .with_detail(format!("no time left to call {}", self.name())));
        }
        let mut rng = fastrand::Rng::new();
        crate::retry::retry(
            &inner.policy.retry,
            &inner.budget,
            idempotent,
            Some(deadline),
            &inner.site,
            |number| {
                let budget = deadline.saturating_duration_since(Instant::now());
                let picked = replicas.pick(&mut rng);
                let (permit, call, guard) = match picked {
                    Some(p) => {
                        let attempt = Attempt {
                            number,
                            budget,
                            replica: p.index,
                        };
                        (
                            Ok(p.permit),
                            Some(operation(attempt, p.client)),
                            Some(p.in_flight),
                        )
                    }
                    None => (
                        Err(Rejected {
                            name: format!("every replica of {}", self.name()),
                            state: crate::breaker::State::Open,
                            retry_after: Duration::from_secs(1),
                        }),
                        None,
                        None,
                    ),
                };
                // No hint from one replica's breaker: another may answer.
                self.attempt(permit, call, deadline, caller_bound, guard, None)
            },
        )
        .await
    }

    /// When the whole call must be over, and whether that is the caller's deadline (an
    /// inbound one shorter than the policy's own timeout) rather than ours.
    fn deadline(&self) -> (Instant, bool) {
        let policy = &self.inner.policy;
        let own = Instant::now() + policy.timeout;
        match telemetry::deadline::current() {
            Some(inbound) => {
                let theirs = inbound
                    .checked_sub(policy.deadline_margin)
                    .unwrap_or(inbound);
                (own.min(theirs), theirs < own)
            }
            None => (own, false),
        }
    }

    async fn attempt<T, Fut>(
        &self,
        permit: Result<Permit<'_>, Rejected>,
        call: Option<Fut>,
        deadline: Instant,
        // Whether `deadline` is the caller's own (shorter than our timeout): running out
        // of it says nothing about the downstream's health, and a client sending tiny
        // deadlines must not be able to open the breaker every other client shares.
        caller_bound: bool,
        // Counts the attempt as in flight on its replica until it ends.
        _in_flight: Option<InFlight<'_>>,
        // The breaker whose refusals after a failure are the caller's hint (see below).
        breaker: Option<&CircuitBreaker>,
    ) -> Result<T, Problem>
    where
        Fut: Future<Output = Result<T, Problem>>,
    {
        let inner = &self.inner;
        let permit = permit.map_err(Problem::from)?;
        let Ok(_slot) = inner.bulkhead.try_acquire() else {
            permit.ignore();
            metrics::counter!(
                "brigade_bulkhead_rejections_total",
                inner.site.labels("downstream")
            )
            .increment(1);
            return Err(Problem::unavailable(format!(
                "too many calls to {} in flight",
                self.name()
            ))
            .with_retry_after(Duration::from_secs(1)));
        };
        let Some(call) = call else {
            permit.ignore();
            return Err(Problem::unavailable("no call was made"));
        };
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(value)) => {
                permit.record_success(started.elapsed());
                Ok(value)
            }
            Ok(Err(problem)) => {
                // The downstream's own timeout under the caller's short deadline (it
                // was handed that deadline and kept it) is the caller's, as above.
                if caller_bound && problem.kind() == Kind::Timeout {
                    permit.ignore();
                    return Err(problem);
                }
                // A client error means the downstream is healthy and said no.
                if problem.kind().is_server_error() {
                    permit.record_failure(started.elapsed());
                    Err(open_hint(problem, breaker))
                } else {
                    permit.record_success(started.elapsed());
                    Err(problem)
                }
            }
            Err(_) => {
                if caller_bound {
                    permit.ignore();
                } else {
                    permit.record_failure(started.elapsed());
                }
                metrics::counter!(
                    "brigade_deadline_exceeded_total",
                    inner.site.labels("downstream")
                )
                .increment(1);
                let problem = Problem::new(Kind::Timeout).with_detail(format!(
                    "{} did not answer within the call's budget",
                    self.name()
                ));
                Err(open_hint(problem, breaker))
            }
        }
    }
}

/// A failed call after which the breaker refuses calls (this failure opened it, or a
/// probe's failure opened it again) says so: its `Retry-After` is the breaker's wait, as
/// a refused call's is. The retry loop then stops rather than meet the refusal, a REST
/// caller hears when to come back, and a queue worker defers the message instead of
/// counting a delivery against it — the downstream is down, not the message at fault.
fn open_hint(problem: Problem, breaker: Option<&CircuitBreaker>) -> Problem {
    match breaker.and_then(CircuitBreaker::open_for) {
        Some(left) if problem.retry_after().is_none() => problem.with_retry_after(left),
        _ => problem,
    }
}
