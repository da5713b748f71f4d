//! The consumer loop every work-queue worker runs: take a delivery, give it to a handler
//! within the seed's async-job timeout, and settle it from the outcome — so that no
//! handler forgets to ack, nothing is acked before its effect, and a message that cannot
//! be handled goes to the dead-letter queue with its reason while the worker keeps serving.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Delivery, Envelope, QueueConsumer};

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
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// The seed's "async job: 30 s – 5 min": a handler that takes longer is abandoned and
    /// its message retried.
    pub handler_timeout: Duration,
    /// Full-jitter backoff between deliveries of a message that failed transiently.
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl WorkerOptions {
    /// The options `settings` describe: its `handler_timeout` (the backends' leases are
    /// longer, so an abandoned handler's message is not taken by another consumer first).
    pub fn from_settings(settings: &settings::MessagingSettings) -> Self {
        Self {
            handler_timeout: settings.handler_timeout,
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
    let mut failures: u32 = 0;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        let delivery = match next {
            Ok(delivery) => {
                failures = 0;
                delivery
            }
            // The consumer is gone (its connection closed, or it was shut down): the
            // caller decides whether to make a new one.
            Err(crate::MessagingError::Closed) => return Err(crate::MessagingError::Closed),
            // A passing failure of the backend: wait a little and ask again.
            Err(err) => {
                failures = failures.saturating_add(1);
                let delay = backoff(&options, failures.saturating_sub(1), &mut rng);
                tracing::warn!(queue, error = %err, retry_in_ms = delay.as_millis() as u64, "could not take a delivery");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // A settle that fails (the backend went away, the lease ran out and another
        // consumer has the message) loses nothing: the message comes back. Log it and
        // keep serving.
        if let Err(err) = handle_one(queue, delivery, &options, &handler, &mut rng).await {
            tracing::warn!(queue, error = %err, "could not settle a delivery; it will be delivered again");
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
    let ctx_correlation = envelope.correlation_id.clone().unwrap_or_default();
    let outcome = tokio::time::timeout(options.handler_timeout, handler(envelope)).await;
    match outcome {
        Ok(Ok(())) => delivery.ack().await,
        Ok(Err(HandleError::Permanent(reason))) => {
            tracing::warn!(queue, message_id = %id, kind, correlation_id = ctx_correlation, %reason, "dead-lettering a message its handler refused");
            delivery.reject(reason).await
        }
        Ok(Err(HandleError::Transient(reason))) => {
            retry(queue, delivery, options, rng, &reason).await
        }
        Err(_) => {
            let reason = format!("the handler took longer than {:?}", options.handler_timeout);
            retry(queue, delivery, options, rng, &reason).await
        }
    }
}

async fn retry(
    queue: &str,
    delivery: Delivery,
    options: &WorkerOptions,
    rng: &mut fastrand::Rng,
    reason: &str,
) -> crate::Result<()> {
    let delay = backoff(options, delivery.attempt.saturating_sub(1), rng);
    tracing::info!(queue, attempt = delivery.attempt, retry_in_ms = delay.as_millis() as u64, %reason, "message failed; retrying later");
    delivery.retry_after(delay).await
}
