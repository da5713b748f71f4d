//! The NATS JetStream backend (`backend: "nats"`), over `async-nats`.
//!
//! Layout on the server (every name is the caller's queue or stream name, which must be
//! a valid JetStream stream name: letters, digits, `_` and `-`):
//!
//! - **Work queue `q`**: stream `q` (subject `q`, `WorkQueue` retention, file storage,
//!   the server's default de-duplication window of 2 minutes) and one durable pull
//!   consumer `q` shared by every consumer instance. Each instance pulls at most its
//!   `prefetch` messages and holds them until it settles them. JetStream never moves
//!   a message to a DLQ by itself, and a consumer's `max_deliver` only makes the server
//!   stop delivering (the message then sits in the stream for good). So the consumer's
//!   `max_deliver` is unlimited and our consumer does the bounding: a nack or retry on
//!   the last allowed attempt dead-letters (see `Delivery`), and a delivery that
//!   arrives with `delivered > max_deliveries` (its consumers died or timed out before
//!   settling it) is dead-lettered at receipt and never handed out. Dead-lettering is
//!   "publish the copy to `q-dlq`, await its PubAck, then term the original"; if the
//!   DLQ publish fails the original stays unsettled and comes back after `ack_wait`.
//!   Dead letters live in stream `q-dlq` (subject `q-dlq`, limits retention) with
//!   `brigade-dlq-*` headers.
//! - **Event stream `s`**: stream `s` with subjects `s.<partition>`, limits retention,
//!   `max_age` = retention. A group `g` is one durable pull consumer `g-p<n>` per
//!   partition (filter `s.<n>`, `max_ack_pending` 1). Every member of the group pulls
//!   from every partition; the server hands out the next event of a partition only once
//!   the previous one is acked, so a partition is worked on by one member at a time and
//!   in order, without leases. The price: the partition "floats" between members
//!   event by event (Kafka pins it to one member), and each partition moves one event
//!   per round trip. A group's committed position is each consumer's ack floor;
//!   `commit` is a confirmed ack (`double_ack`), so `lag` right after it is exact.
//!   `reset` deletes and re-creates the group's consumers at the new start (2.9 has no
//!   consumer reset); members notice on their next pull.
//!
//! Queue options (`max_deliveries`, `default_kind`) and the partition count live as JSON
//! in the stream's description (NATS 2.9 has no stream metadata), so a process that did
//! not declare a queue still knows them.
//!
//! Headers: the envelope travels as [`crate::envelope::headers`] plus `Nats-Msg-Id` =
//! the envelope id, which the server uses to de-duplicate re-publishes within the
//! stream's duplicate window (we keep the server default: **2 minutes**; a re-publish
//! after that is stored again, and the consumer's inbox must catch it). A PubAck that
//! says `duplicate` is a success. A foreign message without `brigade-id` gets an id that
//! is stable across its redeliveries (its `Nats-Msg-Id` if that is a UUID, else one
//! derived from stream name and sequence), the queue's `default_kind` and the stream's
//! timestamp as `occurred_at`.
//!
//! Redrive republishes a dead letter with its `brigade-id` but a `Nats-Msg-Id` of
//! `redrive-<queue>-<dlq sequence>`: the envelope id would be dropped as a duplicate
//! inside the window, and the DLQ sequence makes a repeated redrive (crash between
//! publish and delete) store one copy.

mod queue;
mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context};
use settings::MessagingSettings;
use uuid::Uuid;

use crate::Broker;
use crate::envelope::{Envelope, Malformed, WireDefaults};
use crate::error::{MessagingError, Result};

pub use queue::NatsQueues;
pub use stream::NatsStreams;

pub(crate) const BACKEND: &str = "nats";

/// How to start the server this backend expects, for error messages.
pub const START_HINT: &str = "start it with `start-stop-daemon --start --oknodo --background \
     --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
     -l /var/log/nats-server.log`";

/// Dead-letter headers, next to the envelope's own.
pub mod dlq_headers {
    /// Why the message was dead-lettered.
    pub const REASON: &str = "brigade-dlq-reason";
    /// How many times it had been delivered.
    pub const ATTEMPTS: &str = "brigade-dlq-attempts";
    /// The queue it came from.
    pub const QUEUE: &str = "brigade-dlq-queue";
    /// When it was dead-lettered, RFC 3339.
    pub const DEAD_AT: &str = "brigade-dlq-at";
    /// The message's sequence in the queue's stream.
    pub const SOURCE_SEQUENCE: &str = "brigade-dlq-source-sequence";
}

/// Connects to NATS at `url` and returns a broker with both shapes over JetStream.
pub async fn connect(url: &str, settings: &MessagingSettings) -> Result<Broker> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(settings.publish_timeout.max(Duration::from_secs(1)))
        .name("brigade")
        .connect(url)
        .await
        .map_err(|e| {
            MessagingError::unavailable(
                BACKEND,
                format!("cannot connect to NATS ({e}); {START_HINT}"),
            )
        })?;
    // Fail now, not on the first publish, when the server has no JetStream. (The raw
    // request, not `query_account`: 0.51 cannot parse a 2.9 server's account info.)
    let answer = tokio::time::timeout(
        settings.publish_timeout,
        client.request("$JS.API.INFO", Default::default()),
    )
    .await;
    let jetstream_ok =
        matches!(&answer, Ok(Ok(m)) if !m.payload.windows(8).any(|w| w == b"\"error\":"));
    if !jetstream_ok {
        return Err(MessagingError::unavailable(
            BACKEND,
            format!(
                "NATS at {url} answered but JetStream is not available; run nats-server with -js ({START_HINT})"
            ),
        ));
    }
    let mut context = jetstream::new(client);
    // Both API requests and PubAcks wait at most this long.
    context.set_timeout(settings.publish_timeout);
    let shared = Arc::new(Shared {
        context,
        // Longer than a handler may run (`worker` abandons it at handler_timeout), so a
        // slow handler's message is not sent to another consumer while the first is still
        // on it; the consumers restart the clock when they hand a message out.
        ack_wait: settings.handler_timeout + ACK_WAIT_MARGIN,
        publish_timeout: settings.publish_timeout,
    });
    Ok(Broker {
        backend: BACKEND,
        queues: Arc::new(NatsQueues::new(shared.clone())),
        streams: Arc::new(NatsStreams::new(shared)),
    })
}

/// How much longer than `handler_timeout` a delivery may stay unsettled on the server.
pub(crate) const ACK_WAIT_MARGIN: Duration = Duration::from_secs(1);

/// What both shapes share: the JetStream context and the timing settings.
pub(crate) struct Shared {
    pub(crate) context: Context,
    /// The consumers' `ack_wait`: how long a delivery may stay unsettled before the
    /// server delivers it again (the settings' `handler_timeout` + [`ACK_WAIT_MARGIN`]).
    pub(crate) ack_wait: Duration,
    pub(crate) publish_timeout: Duration,
}

impl Shared {
    /// Publishes and waits for the PubAck. A duplicate (same `Nats-Msg-Id` within the
    /// window) is a success: the server already has it. Returns whether it was one.
    pub(crate) async fn publish_acked(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Vec<u8>,
        msg_id: Option<String>,
    ) -> Result<bool> {
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .headers(headers);
        if let Some(id) = msg_id {
            publish = publish.message_id(id);
        }
        let ack_future = self
            .context
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| publish_error(&subject, &e, self.publish_timeout))?;
        let ack = ack_future
            .await
            .map_err(|e| publish_error(&subject, &e, self.publish_timeout))?;
        Ok(ack.duplicate)
    }
}

fn publish_error(
    subject: &str,
    err: &jetstream::context::PublishError,
    after: Duration,
) -> MessagingError {
    use jetstream::context::PublishErrorKind;
    match err.kind() {
        PublishErrorKind::TimedOut => MessagingError::Timeout {
            what: format!("publishing to {subject} (no PubAck)"),
            after,
        },
        PublishErrorKind::StreamNotFound => MessagingError::NotFound(format!(
            "no JetStream stream takes subject {subject}: declare it first"
        )),
        PublishErrorKind::BrokenPipe => MessagingError::unavailable(BACKEND, err),
        _ => MessagingError::NotConfirmed {
            backend: BACKEND,
            reason: err.to_string(),
        },
    }
}

/// Queue, stream and group names become JetStream stream and consumer names and
/// subject tokens: keep them to what all three accept.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MessagingError::Invalid {
            what,
            reason: format!("{name:?}: use letters, digits, '_' and '-' only (NATS names)"),
        })
    }
}

/// The envelope's headers (and nothing else) as a NATS header map.
pub(crate) fn envelope_headers(envelope: &Envelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in envelope.wire_headers() {
        headers.insert(name, header_safe(&value));
    }
    headers
}

/// NATS header values are one line.
pub(crate) fn header_safe(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

pub(crate) fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

/// Rebuilds the envelope of a JetStream message. A message with no `brigade-id` keeps
/// an id that is stable across its redeliveries: its `Nats-Msg-Id` when that is a UUID,
/// else one derived from the stream and sequence.
pub(crate) fn envelope_of(
    message: &async_nats::Message,
    stream: &str,
    sequence: u64,
    published: Option<SystemTime>,
    default_kind: Option<&str>,
) -> std::result::Result<Envelope, Malformed> {
    let headers = message.headers.as_ref();
    let id = header(headers, "Nats-Msg-Id")
        .and_then(|raw| Uuid::parse_str(raw.trim()).ok())
        .unwrap_or_else(|| derived_id(stream, sequence));
    Envelope::from_wire(
        &message.payload,
        |name| header(headers, name),
        WireDefaults {
            id: Some(id),
            kind: default_kind,
            key: None,
            occurred_at: published,
        },
    )
}

/// A stable id for a foreign message: FNV-1a of the stream name, then the sequence.
pub(crate) fn derived_id(stream: &str, sequence: u64) -> Uuid {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Uuid::from_u64_pair(hash, sequence)
}

pub(crate) fn system_time(t: time::OffsetDateTime) -> SystemTime {
    SystemTime::from(t)
}

/// Whether a JetStream API error says "no such stream / consumer".
pub(crate) fn is_not_found(err: &jetstream::Error) -> bool {
    use jetstream::ErrorCode;
    matches!(
        err.error_code(),
        ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND
    ) || err.code() == 404
}

pub(crate) fn api_error(
    what: impl std::fmt::Display,
    err: impl std::fmt::Display,
) -> MessagingError {
    let text = err.to_string();
    if text.contains("timed out") || text.contains("no responders") || text.contains("broken pipe")
    {
        MessagingError::unavailable(BACKEND, format!("{what}: {text}"))
    } else {
        MessagingError::backend(BACKEND, format!("{what}: {text}"))
    }
}

/// The same for an API call that returns a boxed error (`Stream::get_consumer`).
pub(crate) fn boxed_not_found(err: &async_nats::Error) -> bool {
    if let Some(e) = err.downcast_ref::<jetstream::stream::ConsumerError>()
        && let jetstream::stream::ConsumerErrorKind::JetStream(js) = e.kind()
    {
        return is_not_found(&js);
    }
    err.to_string().to_ascii_lowercase().contains("not found")
}
