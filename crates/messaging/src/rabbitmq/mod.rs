//! The RabbitMQ backend (AMQP 0.9.1 through `lapin`), needing no plugin.
//!
//! # Work queues ([`queue`])
//!
//! Queue `q` is a plain durable queue **with no x-arguments**, so that a producer that is
//! not ours can declare it its own way: the seed's Python code runs
//! `queue_declare(queue, durable=True)`, and RabbitMQ refuses that redeclaration
//! (PRECONDITION_FAILED, "inequivalent arg") for a queue declared with *any* x-argument:
//! `x-queue-type: quorum`, `x-dead-letter-exchange`, ... (checked on 3.10.8). That rules
//! out quorum queues and broker-side dead-lettering for `q`; the delivery count is kept by
//! us instead, in a header, and the consumer dead-letters:
//!
//! - **Attempts**: `attempt = brigade-prior-deliveries + 1`. A delivery the broker hands
//!   back `redelivered` (its consumer died, or closed, before settling it) is counted by
//!   the next consumer: it re-publishes a copy with the header incremented, acks the
//!   original, and looks at the copy when it comes round. A copy past `max_deliveries` goes
//!   to the DLQ ("delivered N times without being settled") without being handed out. A
//!   message prefetched but never handed to the application also counts when its consumer
//!   goes away (quorum queues' `x-delivery-count` counts those too).
//! - **Dead-letter queue** `q.dlq`: plain durable. Dead-letters are published there by us
//!   (confirmed) with headers `brigade-dead-reason`, `brigade-attempts`, `brigade-dead-at`,
//!   then the original is acked (a crash in between leaves a duplicate in the DLQ, never a
//!   loss). A message dead-lettered by RabbitMQ itself (only if someone adds a policy)
//!   carries `x-death` instead, which the listing reads.
//! - **Publish**: persistent (`delivery_mode` 2), `mandatory`, on a channel in confirm
//!   mode; returns only after the broker's ack. A nack is `NotConfirmed`, a message no
//!   queue took is `NotFound`, no confirm within `publish_timeout` is `Timeout`.
//! - **Envelope**: body = the payload JSON; `message_id` = id, `type` = kind,
//!   `correlation_id`, `timestamp` (seconds), `content_type: application/json`, and every
//!   [`crate::envelope::headers`] name as an AMQP header. A foreign message with no
//!   properties at all (Python `pika`) is read with the queue's `default_kind`.
//! - **Nack** = a copy at the tail of `q` with the count, then ack (order is not kept;
//!   a work queue promises none). **Retry after a delay** = publish a copy to
//!   `q.retry` (a durable classic queue dead-lettering back to `q`) with a per-message
//!   `expiration`, then ack. RabbitMQ expires messages only at the head of a queue, so a
//!   short delay queued behind a longer one waits for it: a retry comes *no earlier* than
//!   its delay, sometimes later.
//! - **Reject** = the dead-letter path above, with the application's reason.
//! - **List** = `basic.get` without ack on a private channel, then closing the channel
//!   (everything goes back where it was). **Redrive** = re-publish (confirmed, fresh
//!   counts) then ack, one at a time.
//! - **Stats**: `ready` = passive declares of `q` + `q.retry`, `dead` = of `q.dlq`;
//!   `in_flight` counts this process's unsettled deliveries (AMQP does not report other
//!   connections' unacked messages; the management API would).
//! - **De-duplication**: RabbitMQ has none. A re-published id is delivered again;
//!   consumers de-duplicate through the inbox (keyed on the envelope id).
//!
//! # Event streams ([`stream`])
//!
//! Stream queues (`x-queue-type: stream`, core RabbitMQ since 3.9, read over AMQP with
//! `x-stream-offset`), one per partition; group positions in durable one-message queues;
//! one member per partition through exclusive "lease" queues. The details and limits are
//! in that module's documentation.
//!
//! # Not covered
//!
//! `handler_timeout` is not enforced here (RabbitMQ's own `consumer_timeout`, 30 minutes
//! by default, closes the channel of a consumer that holds a delivery longer). A lost
//! connection is re-opened for the next operation; a consumer on it ends with `Closed` and
//! must be re-created.
#![allow(clippy::module_name_repetitions)]

pub mod queue;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::error::{MessagingError, Result};
use crate::{Broker, Envelope};

pub(crate) const BACKEND: &str = "rabbitmq";

/// Opens a connection to RabbitMQ at `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`).
pub async fn connect(url: &str, settings: &settings::MessagingSettings) -> Result<Broker> {
    let shared = Shared::connect(url, settings).await?;
    Ok(Broker {
        backend: BACKEND,
        queues: Arc::new(queue::RabbitQueues::new(shared.clone())),
        streams: Arc::new(stream::RabbitStreams::new(shared)),
    })
}

/// The connection every queue and stream of one [`Broker`] shares, re-opened when lost.
pub(crate) struct Shared {
    url: String,
    conn: Mutex<Arc<Connection>>,
    /// The confirm-mode channel publishes go through (re-opened when it closes).
    publisher: Mutex<Option<Channel>>,
    pub(crate) settings: settings::MessagingSettings,
}

impl Shared {
    async fn connect(url: &str, settings: &settings::MessagingSettings) -> Result<Arc<Self>> {
        let conn = open(url).await?;
        Ok(Arc::new(Self {
            url: url.to_owned(),
            conn: Mutex::new(Arc::new(conn)),
            publisher: Mutex::new(None),
            settings: settings.clone(),
        }))
    }

    /// A fresh channel; reconnects first if the connection was lost.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let mut conn = self.conn.lock().await;
        if !conn.status().connected() {
            tracing::warn!(backend = BACKEND, "reconnecting to RabbitMQ");
            *conn = Arc::new(open(&self.url).await?);
        }
        conn.create_channel().await.map_err(amqp_error)
    }

    /// A separate connection (a stream member's leases are held per connection).
    pub(crate) async fn new_connection(&self) -> Result<Connection> {
        open(&self.url).await
    }

    async fn publisher(&self) -> Result<Channel> {
        let mut slot = self.publisher.lock().await;
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .map_err(amqp_error)?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes to the default exchange with routing key `queue`, `mandatory`, and
    /// waits for the broker's confirm.
    pub(crate) async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        let channel = self.publisher().await?;
        confirm(
            &channel,
            queue,
            body,
            properties,
            self.settings.publish_timeout,
        )
        .await
    }
}

/// Publishes on `channel` (in confirm mode) and waits for the confirm.
pub(crate) async fn confirm(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<()> {
    let publish = async {
        let confirm = channel
            .basic_publish(
                ShortString::default(),
                queue.into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            )
            .await
            .map_err(amqp_error)?;
        confirm.await.map_err(amqp_error)
    };
    let confirmation =
        tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| MessagingError::Timeout {
                what: format!("the publisher confirm for {queue}"),
                after: timeout,
            })??;
    match confirmation {
        lapin::Confirmation::Ack(None) => Ok(()),
        lapin::Confirmation::Ack(Some(returned)) => Err(MessagingError::NotFound(format!(
            "no queue named {queue} took the message ({})",
            returned.reply_text
        ))),
        lapin::Confirmation::Nack(_) => Err(MessagingError::NotConfirmed {
            backend: BACKEND,
            reason: format!("the broker nacked the publish to {queue}"),
        }),
        lapin::Confirmation::NotRequested => Err(MessagingError::NotConfirmed {
            backend: BACKEND,
            reason: "the channel is not in confirm mode".to_owned(),
        }),
    }
}

async fn open(url: &str) -> Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name("brigade".into()),
    )
    .await
    .map_err(|e| {
        MessagingError::unavailable(
            BACKEND,
            format!(
                "cannot connect to RabbitMQ ({e}); is it running? start it with \
                 `rabbitmq-server -detached`"
            ),
        )
    })
}

/// One conversion from lapin's errors.
pub(crate) fn amqp_error(e: lapin::Error) -> MessagingError {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                MessagingError::NotFound(amqp.get_message().to_string())
            }
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => MessagingError::Invalid {
                what: "declaration",
                reason: amqp.get_message().to_string(),
            },
            _ => MessagingError::backend(BACKEND, e),
        },
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::RuntimeShutdownError(_) => MessagingError::unavailable(BACKEND, e),
        _ => MessagingError::backend(BACKEND, e),
    }
}

/// The AMQP properties an envelope travels with.
pub(crate) fn properties_of(message: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in message.wire_headers() {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message.id.to_string().into())
        .with_timestamp(u64::try_from(message.occurred_at.unix_timestamp()).unwrap_or(0))
        .with_headers(headers);
    if let Ok(kind) = ShortString::try_new(message.kind.clone()) {
        props = props.with_type(kind);
    }
    if let Some(c) = &message.correlation_id
        && let Ok(c) = ShortString::try_new(c.clone())
    {
        props = props.with_correlation_id(c);
    }
    props
}

/// A header's value as text (AMQP strings of either kind, or a number).
pub(crate) fn header_text(props: &BasicProperties, name: &str) -> Option<String> {
    let value = props.headers().as_ref()?.inner().get(name)?;
    value_text(value)
}

pub(crate) fn value_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => value_u64(other).map(|n| n.to_string()),
    }
}

/// A header's value as a number (any AMQP integer, or a decimal string).
pub(crate) fn header_u64(props: &BasicProperties, name: &str) -> Option<u64> {
    let value = props.headers().as_ref()?.inner().get(name)?;
    value_u64(value)
}

pub(crate) fn value_u64(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// Rebuilds the envelope of an AMQP message: our headers first, then the AMQP
/// properties, then the channel's defaults.
pub(crate) fn envelope_of(
    body: &[u8],
    props: &BasicProperties,
    default_kind: Option<&str>,
) -> std::result::Result<Envelope, crate::Malformed> {
    use crate::envelope::headers;
    let lookup = |name: &str| {
        header_text(props, name).or_else(|| match name {
            n if n == headers::CORRELATION_ID => props
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            _ => None,
        })
    };
    let defaults = crate::WireDefaults {
        id: props
            .message_id()
            .as_ref()
            .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok()),
        kind: props
            .kind()
            .as_ref()
            .map(ShortString::as_str)
            .filter(|k| !k.trim().is_empty())
            .or(default_kind),
        key: None,
        occurred_at: props
            .timestamp()
            .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s)),
    };
    Envelope::from_wire(body, lookup, defaults)
}
