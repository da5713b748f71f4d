//! Work queues on plain durable (classic) queues, so a producer that is not ours can
//! declare the same queue; the design is in the [parent module](super).

use crate::Published;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

use super::{BACKEND, Shared, amqp_error, envelope_of, header_text, header_u64, properties_of};
use crate::Envelope;
use crate::error::{MessagingError, Result};
use crate::queue::{
    DeadLetter, Delivery, Outcome, QueueConsumer, QueueOptions, QueueStats, Settle, WorkQueue,
};

/// Why a message was dead-lettered (set by us; the broker's own dead-letters carry `x-death`).
pub const DEAD_REASON: &str = "brigade-dead-reason";
/// How many deliveries the message had when it was dead-lettered.
pub const DEAD_ATTEMPTS: &str = "brigade-attempts";
/// When it was dead-lettered, milliseconds since the Unix epoch.
pub const DEAD_AT: &str = "brigade-dead-at";
/// Deliveries spent before the message was re-published for a delayed retry.
pub const PRIOR_DELIVERIES: &str = "brigade-prior-deliveries";

/// Headers the broker adds that must not follow a message when we re-publish it.
const BROKER_HEADERS: &[&str] = &[
    "x-delivery-count",
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
];

pub(crate) fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

pub(crate) fn retry_name(queue: &str) -> String {
    format!("{queue}.retry")
}

/// The work-queue half of a RabbitMQ [`crate::Broker`].
pub struct RabbitQueues {
    shared: Arc<Shared>,
    /// Options given to `declare` in this process (AMQP cannot read a queue's arguments
    /// back); a queue declared elsewhere gets the settings' defaults.
    options: Mutex<HashMap<String, QueueOptions>>,
    /// Deliveries handed out by this process and not yet settled, per queue.
    in_flight: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl RabbitQueues {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            options: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn options_of(&self, queue: &str) -> QueueOptions {
        self.options
            .lock()
            .ok()
            .and_then(|map| map.get(queue).cloned())
            .unwrap_or_else(|| QueueOptions {
                max_deliveries: self.shared.settings.max_deliveries,
                default_kind: None,
            })
    }

    fn in_flight_of(&self, queue: &str) -> Arc<AtomicU64> {
        match self.in_flight.lock() {
            Ok(mut map) => map.entry(queue.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

fn check_name(queue: &str) -> Result<()> {
    if queue.is_empty() || queue.len() > 240 || queue.starts_with("amq.") {
        return Err(MessagingError::Invalid {
            what: "queue name",
            reason: format!("{queue:?}: 1 to 240 bytes, not starting with \"amq.\""),
        });
    }
    Ok(())
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

async fn close(channel: &Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}

#[async_trait]
impl WorkQueue for RabbitQueues {
    async fn declare(&self, queue: &str, options: &QueueOptions) -> Result<()> {
        check_name(queue)?;
        let channel = self.shared.channel().await?;
        let result = async {
            let dlq = dlq_name(queue);
            channel
                .queue_declare(dlq.as_str().into(), durable(), FieldTable::default())
                .await
                .map_err(amqp_error)?;

            // No arguments at all: a producer that declares the queue its own way
            // (`queue_declare(queue, durable=True)`, as the seed does) must not be refused
            // with PRECONDITION_FAILED, which any x-argument would cause.
            channel
                .queue_declare(queue.into(), durable(), FieldTable::default())
                .await
                .map_err(amqp_error)?;

            let mut args = FieldTable::default();
            args.insert("x-dead-letter-exchange".into(), text(""));
            args.insert("x-dead-letter-routing-key".into(), text(queue));
            channel
                .queue_declare(retry_name(queue).as_str().into(), durable(), args)
                .await
                .map_err(amqp_error)?;
            Ok::<_, MessagingError>(())
        }
        .await;
        close(&channel).await;
        result?;
        if let Ok(mut map) = self.options.lock() {
            map.insert(queue.to_owned(), options.clone());
        }
        tracing::debug!(
            backend = BACKEND,
            queue,
            max_deliveries = options.max_deliveries,
            "queue declared"
        );
        Ok(())
    }

    async fn publish(&self, queue: &str, message: &Envelope) -> Result<Published> {
        // RabbitMQ does not de-duplicate: every confirmed publish is stored.
        self.shared
            .publish(queue, &message.body(), properties_of(message))
            .await?;
        Ok(Published::one(false))
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn QueueConsumer>> {
        let channel = self.shared.channel().await?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(amqp_error)?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        Ok(Box::new(RabbitConsumer {
            shared: self.shared.clone(),
            channel,
            consumer,
            queue: queue.to_owned(),
            options: self.options_of(queue),
            in_flight: self.in_flight_of(queue),
            dead_lettered: metrics::Counter::noop(),
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let channel = self.shared.channel().await?;
        let dlq = dlq_name(queue);
        let max_deliveries = self.options_of(queue).max_deliveries;
        let result = async {
            let mut out = Vec::new();
            while out.len() < limit {
                let Some(got) = channel
                    .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(amqp_error)?
                else {
                    break;
                };
                out.push(dead_letter_of(&got.delivery, max_deliveries));
            }
            Ok::<_, MessagingError>(out)
        }
        .await;
        // Closing the channel returns every message we got to its place in the DLQ.
        close(&channel).await;
        result
    }

    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize> {
        let channel = self.shared.channel().await?;
        let dlq = dlq_name(queue);
        let result = async {
            let mut moved = 0;
            while moved < limit {
                let Some(got) = channel
                    .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(amqp_error)?
                else {
                    break;
                };
                let delivery = got.delivery;
                let props = republished(
                    &delivery.properties,
                    &[DEAD_REASON, DEAD_ATTEMPTS, DEAD_AT, PRIOR_DELIVERIES],
                    None,
                );
                forward(&self.shared, queue, delivery, props).await?;
                moved += 1;
            }
            Ok::<_, MessagingError>(moved)
        }
        .await;
        close(&channel).await;
        if let Ok(moved) = result {
            tracing::info!(backend = BACKEND, queue, moved, "dead letters redriven");
        }
        result
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let channel = self.shared.channel().await?;
        let result = async {
            let main = channel
                .queue_declare(queue.into(), passive(), FieldTable::default())
                .await
                .map_err(amqp_error)?;
            let retry = channel
                .queue_declare(
                    retry_name(queue).as_str().into(),
                    passive(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_error)?;
            let dead = channel
                .queue_declare(
                    dlq_name(queue).as_str().into(),
                    passive(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_error)?;
            Ok::<_, MessagingError>(QueueStats {
                ready: u64::from(main.message_count()) + u64::from(retry.message_count()),
                in_flight: self.in_flight_of(queue).load(Ordering::Relaxed),
                dead: u64::from(dead.message_count()),
            })
        }
        .await;
        close(&channel).await;
        result
    }
}

/// `props` for a re-publish: persistent, without the broker's headers nor `drop`, plus
/// `set` (name, value) pairs.
fn republished(
    props: &BasicProperties,
    drop: &[&str],
    set: Option<Vec<(&str, AMQPValue)>>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = props.headers() {
        for (name, value) in old {
            if !BROKER_HEADERS.contains(&name.as_str()) && !drop.contains(&name.as_str()) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    for (name, value) in set.unwrap_or_default() {
        headers.insert(name.into(), value);
    }
    let mut out = props.clone().with_delivery_mode(2).with_headers(headers);
    // `expiration` would make the copy expire again wherever it lands.
    if out.expiration().is_some() {
        let mut fresh = BasicProperties::default().with_delivery_mode(2);
        if let Some(v) = out.content_type() {
            fresh = fresh.with_content_type(v.clone());
        }
        if let Some(v) = out.message_id() {
            fresh = fresh.with_message_id(v.clone());
        }
        if let Some(v) = out.kind() {
            fresh = fresh.with_type(v.clone());
        }
        if let Some(v) = out.correlation_id() {
            fresh = fresh.with_correlation_id(v.clone());
        }
        if let Some(v) = out.timestamp() {
            fresh = fresh.with_timestamp(*v);
        }
        if let Some(v) = out.headers() {
            fresh = fresh.with_headers(v.clone());
        }
        out = fresh;
    }
    out
}

fn now_millis() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// The first (most recent) `x-death` entry's reason and time, for messages the broker
/// dead-lettered.
fn x_death(props: &BasicProperties) -> Option<(String, Option<u64>)> {
    let value = props.headers().as_ref()?.inner().get("x-death")?;
    let AMQPValue::FieldArray(entries) = value else {
        return None;
    };
    let AMQPValue::FieldTable(first) = entries.as_slice().first()? else {
        return None;
    };
    let reason = first.inner().get("reason").and_then(super::value_text)?;
    let time = first.inner().get("time").and_then(super::value_u64);
    Some((reason, time))
}

fn dead_letter_of(delivery: &lapin::message::Delivery, max_deliveries: u32) -> DeadLetter {
    let props = &delivery.properties;
    let id = header_text(props, crate::envelope::headers::ID)
        .or_else(|| props.message_id().as_ref().map(|m| m.as_str().to_owned()))
        .unwrap_or_else(|| format!("amqp-unidentified-{}", delivery.delivery_tag));
    let kind = header_text(props, crate::envelope::headers::TYPE)
        .or_else(|| props.kind().as_ref().map(|k| k.as_str().to_owned()));
    let attempts = header_u64(props, DEAD_ATTEMPTS).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let broker = x_death(props);
    let (reason, attempts, dead_at) = match (header_text(props, DEAD_REASON), broker) {
        (Some(reason), _) => (
            reason,
            attempts.unwrap_or(0),
            header_u64(props, DEAD_AT).map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        ),
        (None, Some((reason, time))) => {
            let prior = header_u64(props, PRIOR_DELIVERIES).unwrap_or(0);
            let spent = u32::try_from(prior)
                .unwrap_or(0)
                .saturating_add(max_deliveries);
            let text = if reason == "delivery_limit" {
                format!(
                    "delivered {spent} times without being settled (max_deliveries {max_deliveries})"
                )
            } else {
                format!("dead-lettered by RabbitMQ: {reason}")
            };
            (
                text,
                spent,
                time.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            )
        }
        (None, None) => (
            "dead-lettered (no reason recorded)".to_owned(),
            attempts.unwrap_or(0),
            None,
        ),
    };
    DeadLetter {
        id,
        kind,
        reason,
        attempts,
        dead_at: dead_at.unwrap_or_else(SystemTime::now),
        body: delivery.data.clone(),
    }
}

/// One consumer: its own channel with `basic.qos(prefetch)`.
struct RabbitConsumer {
    shared: Arc<Shared>,
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
    options: QueueOptions,
    in_flight: Arc<AtomicU64>,
    /// Counts the messages past `max_deliveries` this consumer dead-letters on its own
    /// (given by [`QueueConsumer::count_dead_letters`]; counts nothing until then).
    dead_lettered: metrics::Counter,
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        // Closing the channel gives its unsettled deliveries back to the queue.
        let channel = self.channel.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { close(&channel).await });
        }
    }
}

impl RabbitConsumer {
    /// Re-publishes `delivery` to the tail of its queue with `spent` deliveries counted,
    /// then acks it (a crash in between delivers it twice: at least once, as always).
    async fn recount(&self, delivery: lapin::message::Delivery, spent: u64) -> Result<()> {
        let props = republished(
            &delivery.properties,
            &[],
            Some(vec![(
                PRIOR_DELIVERIES,
                AMQPValue::LongLongInt(i64::try_from(spent).unwrap_or(i64::MAX)),
            )]),
        );
        forward(&self.shared, &self.queue, delivery, props).await
    }
}

#[async_trait]
impl QueueConsumer for RabbitConsumer {
    fn count_dead_letters(&mut self, counter: metrics::Counter) {
        self.dead_lettered = counter;
    }

    async fn next(&mut self) -> Result<Delivery> {
        loop {
            let delivery = match self.consumer.next().await {
                None => return Err(MessagingError::Closed),
                Some(Err(e)) => return Err(amqp_error(e)),
                Some(Ok(d)) => d,
            };
            let prior = header_u64(&delivery.properties, PRIOR_DELIVERIES).unwrap_or(0);
            if delivery.redelivered {
                // A delivery that came back unsettled (a nack, or a consumer that died):
                // classic queues do not count them, so count it here, on a copy, and
                // look at the copy when it comes round.
                self.recount(delivery, prior + 1).await?;
                continue;
            }
            let attempt = u32::try_from(prior + 1).unwrap_or(u32::MAX);
            let max = self.options.max_deliveries.max(1);
            let settle = RabbitSettle {
                shared: self.shared.clone(),
                queue: self.queue.clone(),
                delivery: Some(delivery),
                attempt,
                in_flight: self.in_flight.clone(),
            };
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            if attempt > max {
                // Delayed retries restart the broker's count; ours still holds.
                let reason = format!(
                    "delivered {} times without being settled (max_deliveries {max})",
                    attempt - 1
                );
                tracing::warn!(backend = BACKEND, queue = %self.queue, attempt, "dead-lettering a message past max_deliveries");
                Box::new(settle).settle(Outcome::Reject(reason)).await?;
                self.dead_lettered.increment(1);
                continue;
            }
            let Some(d) = settle.delivery.as_ref() else {
                continue;
            };
            let message = envelope_of(&d.data, &d.properties, self.options.default_kind.as_deref());
            return Ok(Delivery::new(message, attempt, max, Box::new(settle)));
        }
    }
}

struct RabbitSettle {
    shared: Arc<Shared>,
    queue: String,
    /// `None` once settled.
    delivery: Option<lapin::message::Delivery>,
    attempt: u32,
    in_flight: Arc<AtomicU64>,
}

impl Drop for RabbitSettle {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        // Dropped without a decision: give it back now rather than when the channel closes.
        if let Some(delivery) = self.delivery.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
            });
        }
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn settle(mut self: Box<Self>, outcome: Outcome) -> Result<()> {
        let Some(delivery) = self.delivery.take() else {
            return Ok(());
        };
        match outcome {
            Outcome::Ack => delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(amqp_error),
            Outcome::Requeue => {
                // A copy at the tail carrying the count (a plain requeue would come back
                // `redelivered` and be counted on its way round anyway).
                let props = republished(
                    &delivery.properties,
                    &[],
                    Some(vec![(
                        PRIOR_DELIVERIES,
                        AMQPValue::LongLongInt(i64::from(self.attempt)),
                    )]),
                );
                self.forward(&self.queue, delivery, props).await
            }
            Outcome::RetryAfter(delay) | Outcome::Defer(delay) => {
                // A deferral goes round without counting: it carries the count it came with.
                let prior = match outcome {
                    Outcome::Defer(_) => self.attempt.saturating_sub(1),
                    _ => self.attempt,
                };
                let mut props = republished(
                    &delivery.properties,
                    &[],
                    Some(vec![(
                        PRIOR_DELIVERIES,
                        AMQPValue::LongLongInt(i64::from(prior)),
                    )]),
                );
                let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                props = props.with_expiration(ms.to_string().into());
                self.forward(&retry_name(&self.queue), delivery, props)
                    .await
            }
            Outcome::Reject(reason) => {
                tracing::warn!(backend = BACKEND, queue = %self.queue, attempt = self.attempt, reason = %reason, "dead-lettered");
                let props = republished(
                    &delivery.properties,
                    &[],
                    Some(vec![
                        (DEAD_REASON, text(&reason)),
                        (
                            DEAD_ATTEMPTS,
                            AMQPValue::LongLongInt(i64::from(self.attempt)),
                        ),
                        (
                            DEAD_AT,
                            AMQPValue::LongLongInt(i64::try_from(now_millis()).unwrap_or(i64::MAX)),
                        ),
                    ]),
                );
                self.forward(&dlq_name(&self.queue), delivery, props).await
            }
        }
    }
}

impl RabbitSettle {
    async fn forward(
        &self,
        to: &str,
        delivery: lapin::message::Delivery,
        props: BasicProperties,
    ) -> Result<()> {
        forward(&self.shared, to, delivery, props).await
    }
}

/// Publishes a copy of `delivery` to `to` (confirmed), then acks the original; if the
/// publish fails, the original goes back to its queue. Recounting, retrying and
/// dead-lettering and redriving all move a message this way.
async fn forward(
    shared: &Shared,
    to: &str,
    delivery: lapin::message::Delivery,
    props: BasicProperties,
) -> Result<()> {
    if let Err(e) = shared.publish(to, &delivery.data, props).await {
        let _ = delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await;
        return Err(e);
    }
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .map(drop)
        .map_err(amqp_error)
}
