//! The consumer loop every work-queue worker runs: take a delivery, give it to a handler
//! within the seed's async-job timeout, and settle it from the outcome — so that no
//! handler forgets to ack, nothing is acked before its effect, and a message that cannot
//! be handled goes to the dead-letter queue with its reason while the worker keeps serving.
//! [`run_stream`] is the same for one member of a stream's consumer group.
//!
//! Every handler runs inside the request context its message carries
//! ([`telemetry::context::RequestContext::for_message`]: the producer's correlation ID, a
//! span in its trace) and under a deadline of `handler_timeout`, so its log lines,
//! outbound calls and the messages it publishes continue the chain the message started in.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Delivery, Envelope, QueueConsumer, StreamConsumer, StreamEvent};

/// Why a handler could not handle a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// It never will (unknown type, invalid payload, a rule it breaks): dead-letter it
    /// now, with this reason.
    #[error("{0}")]
    Permanent(String),
    /// It may later (a dependency is down): deliver it again after a backoff; after
    /// `max_deliveries` it is dead-lettered anyway.
    #[error("{0}")]
    Transient(String),
    /// It may later, and not before this: the dependency said when (an open breaker's
    /// remaining wait, a full bulkhead, a `Retry-After` — also after a call whose failure
    /// opened the breaker). The delay is the longer of this and the backoff. On a work
    /// queue the delivery is deferred ([`Delivery::defer`]) and does not count against
    /// `max_deliveries` while the message is younger than `max_defer`, so an outage longer
    /// than the retry budget leaves the work waiting instead of dead-lettering it; past
    /// `max_defer` it counts, so a dependency that never comes back (or a message that
    /// keeps tripping its breaker) still ends in the dead-letter queue.
    #[error("{0}")]
    TransientFor(String, Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// The seed's "async job: 30 s – 5 min": a handler that takes longer is abandoned and
    /// its message retried.
    pub handler_timeout: Duration,
    /// Full-jitter backoff between deliveries of a message that failed transiently.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long after a message was made a `TransientFor` defers it for free.
    pub max_defer: Duration,
}

impl WorkerOptions {
    /// The options `settings` describe: its `handler_timeout` (the backends' leases are
    /// longer, so an abandoned handler's message is not taken by another consumer first).
    pub fn from_settings(settings: &settings::MessagingSettings) -> Self {
        Self {
            handler_timeout: settings.handler_timeout,
            max_defer: settings.max_defer,
            ..Self::default()
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            handler_timeout: Duration::from_secs(30),
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(30),
            max_defer: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Serves `consumer` until `stop` fires (finishing the message in hand) or the consumer
/// fails. `queue` labels the logs; deliveries, settles and dead letters are counted by
/// the broker's `series` decorator, for every consumer alike.
pub async fn run<H, Fut>(
    queue: &str,
    mut consumer: Box<dyn QueueConsumer>,
    options: WorkerOptions,
    handler: H,
    stop: CancellationToken,
) -> crate::Result<()>
where
    H: Fn(Envelope) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let mut rng = fastrand::Rng::new();
    let (mut failures, mut settle_failures): (u32, u32) = (0, 0);
    loop {
        let delivery = match next_or_backoff(
            consumer.next(),
            &stop,
            &mut failures,
            &options,
            &mut rng,
            queue,
        )
        .await?
        {
            Next::Handle(delivery) => delivery,
            Next::Stop => return Ok(()),
            Next::Again => continue,
        };
        // A settle that fails (the backend went away, the lease ran out and another
        // consumer has the message) loses nothing: the message comes back. Log it, wait
        // as after any passing failure of the backend (settles that keep failing would
        // otherwise re-run handlers back to back), and keep serving.
        match handle_one(queue, delivery, &options, &handler, &mut rng).await {
            Ok(()) => settle_failures = 0,
            Err(err) => {
                tracing::warn!(queue, error = %err, "could not settle a delivery; it will be delivered again");
                if pause_after_failed_settle(&stop, &mut settle_failures, &options, &mut rng).await
                {
                    return Ok(());
                }
            }
        }
    }
}

/// After a settle failed: a full-jitter backoff growing with consecutive failed settles
/// (reset by the next settle that succeeds), cut short by `stop`; `true` if `stop` fired.
async fn pause_after_failed_settle(
    stop: &CancellationToken,
    failures: &mut u32,
    options: &WorkerOptions,
    rng: &mut fastrand::Rng,
) -> bool {
    *failures = failures.saturating_add(1);
    let delay = backoff(options, failures.saturating_sub(1), rng);
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// What a consumer loop does next.
enum Next<T> {
    Handle(T),
    Stop,
    /// The backend failed in passing and the loop has waited: ask again.
    Again,
}

/// The consumer's next item, unless `stop` fires first. A passing failure of the backend
/// is logged and waited out (full-jitter backoff on consecutive failures, cut short by
/// `stop`); a closed consumer is the caller's to replace (an error).
async fn next_or_backoff<T>(
    next: impl Future<Output = crate::Result<T>>,
    stop: &CancellationToken,
    failures: &mut u32,
    options: &WorkerOptions,
    rng: &mut fastrand::Rng,
    channel: &str,
) -> crate::Result<Next<T>> {
    let next = tokio::select! {
        () = stop.cancelled() => return Ok(Next::Stop),
        next = next => next,
    };
    match next {
        Ok(item) => {
            *failures = 0;
            Ok(Next::Handle(item))
        }
        // The consumer is gone (its connection closed, or it was shut down).
        Err(crate::MessagingError::Closed) => Err(crate::MessagingError::Closed),
        Err(err) => {
            *failures = failures.saturating_add(1);
            let delay = backoff(options, failures.saturating_sub(1), rng);
            tracing::warn!(channel, error = %err, retry_in_ms = delay.as_millis() as u64, "could not take the next message");
            tokio::select! {
                () = stop.cancelled() => Ok(Next::Stop),
                () = tokio::time::sleep(delay) => Ok(Next::Again),
            }
        }
    }
}

fn backoff(options: &WorkerOptions, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    resilience::retry::Backoff {
        base: options.retry_base,
        cap: options.retry_cap,
    }
    .delay(attempt, rng)
}

async fn handle_one<H, Fut>(
    queue: &str,
    delivery: Delivery,
    options: &WorkerOptions,
    handler: &H,
    rng: &mut fastrand::Rng,
) -> crate::Result<()>
where
    H: Fn(Envelope) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let envelope = match &delivery.message {
        Ok(envelope) => envelope.clone(),
        Err(malformed) => {
            let reason = malformed.reason.clone();
            tracing::warn!(queue, %reason, "dead-lettering a malformed message");
            return delivery.reject(reason).await;
        }
    };
    let id = envelope.id;
    let kind = envelope.kind.clone();
    let age = time::OffsetDateTime::now_utc() - envelope.occurred_at;
    let deferrable = age < options.max_defer;
    let ctx_correlation = envelope.correlation_id.clone().unwrap_or_default();
    let outcome = in_context(queue, options, envelope, handler).await;
    match outcome {
        Ok(Ok(())) => delivery.ack().await,
        Ok(Err(HandleError::Permanent(reason))) => {
            tracing::warn!(queue, message_id = %id, kind, correlation_id = ctx_correlation, %reason, "dead-lettering a message its handler refused");
            delivery.reject(reason).await
        }
        Ok(Err(HandleError::Transient(reason))) => {
            retry(queue, delivery, options, rng, &reason, Duration::ZERO).await
        }
        Ok(Err(HandleError::TransientFor(reason, not_before))) if !deferrable => {
            let reason = format!("{reason} (deferred past max_defer: this delivery counts)");
            retry(queue, delivery, options, rng, &reason, not_before).await
        }
        Ok(Err(HandleError::TransientFor(reason, not_before))) => {
            let delay = backoff(options, delivery.attempt.saturating_sub(1), rng).max(not_before);
            tracing::info!(queue, attempt = delivery.attempt, retry_in_ms = delay.as_millis() as u64, %reason, "a dependency is down; deferring the message (not counted as a delivery)");
            delivery.defer(delay).await
        }
        Err(_) => {
            let reason = format!("the handler took longer than {:?}", options.handler_timeout);
            retry(queue, delivery, options, rng, &reason, Duration::ZERO).await
        }
    }
}

/// `handler(envelope)` inside the envelope's request context and deadline, abandoned at
/// `handler_timeout` (`Err(Elapsed)`).
async fn in_context<H, Fut>(
    channel: &str,
    options: &WorkerOptions,
    envelope: Envelope,
    handler: &H,
) -> Result<Result<(), HandleError>, tokio::time::error::Elapsed>
where
    H: Fn(Envelope) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let ctx = telemetry::context::RequestContext::for_message(
        envelope.correlation_id.as_deref(),
        envelope.traceparent.as_deref(),
        channel,
        &envelope.kind,
    );
    let deadline = tokio::time::Instant::now() + options.handler_timeout;
    let traced = telemetry::trace::enabled().then(|| {
        (
            ctx.clone(),
            std::time::SystemTime::now(),
            format!("consume {channel}/{}", envelope.kind),
        )
    });
    let work = telemetry::deadline::scope(deadline, handler(envelope));
    let outcome = telemetry::context::scope(ctx, tokio::time::timeout_at(deadline, work)).await;
    if let Some((ctx, started, name)) = traced {
        let mut span =
            telemetry::trace::Span::of(&ctx, telemetry::trace::Kind::Consumer, name, started);
        span.attributes
            .push(("messaging.destination.name", channel.to_owned()));
        span.error = match &outcome {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some("the handler failed".to_owned()),
            Err(_) => Some("the handler timed out".to_owned()),
        };
        telemetry::trace::record(span);
    }
    outcome
}

/// Serves one member of `group` on `stream` until `stop` fires (finishing the event in
/// hand, then leaving the group at once) or the consumer fails. An event is committed
/// once its handler succeeds; a transient failure or a handler past `handler_timeout`
/// retries it after a full-jitter backoff (its partition waits: order per key holds); an
/// event that can never be handled (malformed, or refused for good) cannot be parked
/// on a stream without blocking its partition, so it is logged at `error` with its
/// position and committed past.
pub async fn run_stream<H, Fut>(
    stream: &str,
    group: &str,
    mut consumer: Box<dyn StreamConsumer>,
    options: WorkerOptions,
    handler: H,
    stop: CancellationToken,
) -> crate::Result<()>
where
    H: Fn(Envelope) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let mut rng = fastrand::Rng::new();
    let (mut failures, mut settle_failures): (u32, u32) = (0, 0);
    loop {
        let event = match next_or_backoff(
            consumer.next(),
            &stop,
            &mut failures,
            &options,
            &mut rng,
            stream,
        )
        .await?
        {
            Next::Handle(event) => event,
            Next::Stop => break,
            Next::Again => continue,
        };
        match handle_event(stream, group, event, &options, &handler, &mut rng).await {
            Ok(()) => settle_failures = 0,
            Err(err) => {
                tracing::warn!(stream, group, error = %err, "could not settle an event; it will be delivered again");
                if pause_after_failed_settle(&stop, &mut settle_failures, &options, &mut rng).await
                {
                    break;
                }
            }
        }
    }
    consumer.close().await
}

async fn handle_event<H, Fut>(
    stream: &str,
    group: &str,
    event: StreamEvent,
    options: &WorkerOptions,
    handler: &H,
    rng: &mut fastrand::Rng,
) -> crate::Result<()>
where
    H: Fn(Envelope) -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let (partition, position, attempt) = (event.partition, event.position, event.attempt);
    let envelope = match &event.message {
        Ok(envelope) => envelope.clone(),
        Err(malformed) => {
            tracing::error!(stream, group, partition, position, reason = %malformed.reason, "skipping a malformed event");
            return event.commit().await;
        }
    };
    let (id, kind) = (envelope.id, envelope.kind.clone());
    match in_context(stream, options, envelope, handler).await {
        Ok(Ok(())) => event.commit().await,
        Ok(Err(HandleError::Permanent(reason))) => {
            tracing::error!(stream, group, partition, position, message_id = %id, kind, %reason, "skipping an event its handler refused for good");
            event.commit().await
        }
        Ok(Err(HandleError::Transient(reason))) => {
            let delay = backoff(options, attempt.saturating_sub(1), rng);
            tracing::info!(stream, group, partition, position, message_id = %id, kind, attempt, retry_in_ms = delay.as_millis() as u64, %reason, "event failed; retrying later");
            event.retry_after(delay).await
        }
        Ok(Err(HandleError::TransientFor(reason, not_before))) => {
            let delay = backoff(options, attempt.saturating_sub(1), rng).max(not_before);
            tracing::info!(stream, group, partition, position, message_id = %id, kind, attempt, retry_in_ms = delay.as_millis() as u64, %reason, "event failed; retrying later");
            event.retry_after(delay).await
        }
        Err(_) => {
            let delay = backoff(options, attempt.saturating_sub(1), rng);
            tracing::info!(stream, group, partition, position, message_id = %id, kind, attempt, retry_in_ms = delay.as_millis() as u64, "event handler took longer than {:?}; retrying later", options.handler_timeout);
            event.retry_after(delay).await
        }
    }
}

async fn retry(
    queue: &str,
    delivery: Delivery,
    options: &WorkerOptions,
    rng: &mut fastrand::Rng,
    reason: &str,
    not_before: Duration,
) -> crate::Result<()> {
    let delay = backoff(options, delivery.attempt.saturating_sub(1), rng).max(not_before);
    tracing::info!(queue, attempt = delivery.attempt, retry_in_ms = delay.as_millis() as u64, %reason, "message failed; retrying later");
    delivery.retry_after_because(delay, reason).await
}

/// Keeps a consumer loop running until `stop`: `serve` makes a consumer and serves it
/// (with [`run`] or [`run_stream`]); when it fails — the broker was unreachable at start,
/// or the consumer's connection closed — it is made again after a full-jitter backoff
/// (200 ms doubling to 30 s), so a service that started before its broker, or outlived a
/// broker restart, goes back to work on its own.
pub async fn supervise<S, Fut>(what: &str, stop: CancellationToken, mut serve: S)
where
    S: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = crate::Result<()>>,
{
    let options = WorkerOptions::default();
    let mut rng = fastrand::Rng::new();
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        match serve(stop.clone()).await {
            Ok(()) => failures = 0,
            Err(err) => {
                let delay = backoff(&options, failures, &mut rng);
                failures = failures.saturating_add(1);
                tracing::warn!(consumer = what, error = %err, retry_in_ms = delay.as_millis() as u64, "consumer stopped; starting it again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
