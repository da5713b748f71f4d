//! The envelope every message travels in, whatever the backend.
//!
//! On the wire the **body is the payload alone** (the seed's JSON shapes, byte for byte what
//! a producer that is not ours sends, e.g. Python `pika` publishing
//! `{"order_id": "ORD-12345", "total": 1999.98}`), and the envelope's other fields travel as
//! the backend's own message metadata: AMQP properties and headers on RabbitMQ, NATS
//! headers on JetStream, Kafka record headers, columns in the embedded store. The header
//! names are [`headers`]; [`Envelope::from_wire`] rebuilds an envelope from a body and
//! whatever metadata came with it, so a foreign message without our headers still gets an
//! id, a type and a time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The metadata names every backend uses for the envelope's fields (AMQP headers, NATS
/// headers, Kafka record headers).
pub mod headers {
    /// The message id (also AMQP's `message_id` property and NATS's `Nats-Msg-Id`).
    pub const ID: &str = "brigade-id";
    /// The message type (also AMQP's `type` property).
    pub const TYPE: &str = "brigade-type";
    /// The ordering key (Kafka's record key; a header elsewhere).
    pub const KEY: &str = "brigade-key";
    /// `x-correlation-id`, as on HTTP and gRPC.
    pub const CORRELATION_ID: &str = "x-correlation-id";
    /// W3C `traceparent`, as on HTTP and gRPC.
    pub const TRACEPARENT: &str = "traceparent";
    /// RFC 3339, UTC.
    pub const OCCURRED_AT: &str = "brigade-occurred-at";
    pub const SCHEMA_VERSION: &str = "brigade-schema-version";
}

/// One message: what happened or what to do (`kind` + `payload`), and everything needed
/// to de-duplicate, order, trace and evolve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message (UUIDv7: time-ordered). A re-publish of the same message keeps
    /// it, which is what de-duplication and inboxes key on.
    pub id: Uuid,
    /// The message type, e.g. `OrderCreated`; `type` on the wire.
    #[serde(rename = "type")]
    pub kind: String,
    /// The ordering key: all messages of one key keep their order on a stream.
    pub key: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    /// When the fact happened (or the command was issued), not when it was sent.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: time::OffsetDateTime,
    /// The payload's schema version; a consumer refuses versions it does not know.
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// A new message of `kind`, stamped now with a fresh UUIDv7 and, inside a request,
    /// the request's correlation ID and trace context.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        let ctx = telemetry::context::current();
        let kind = kind.into();
        // Traced: the message is a span of its own (publish), child of the work that
        // wrote it; its consumers' spans are its children.
        let trace = ctx.as_ref().map(|c| {
            if telemetry::trace::enabled() {
                let publish = c.child();
                let now = std::time::SystemTime::now();
                let mut span = telemetry::trace::Span::of(
                    &publish,
                    telemetry::trace::Kind::Producer,
                    format!("publish {kind}"),
                    now,
                );
                span.attributes
                    .push(("messaging.message.type", kind.clone()));
                telemetry::trace::record(span);
                publish.trace
            } else {
                c.trace
            }
        });
        Self {
            id: Uuid::now_v7(),
            kind,
            key: None,
            correlation_id: ctx.as_ref().map(|c| c.correlation_id.to_string()),
            traceparent: trace.map(|t| t.to_string()),
            occurred_at: time::OffsetDateTime::now_utc(),
            schema_version: 1,
            payload,
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// The body that goes on the wire: the payload's JSON.
    pub fn body(&self) -> Vec<u8> {
        // A `serde_json::Value` always serializes.
        serde_json::to_vec(&self.payload).unwrap_or_default()
    }

    /// The envelope's metadata as (name, value) pairs under [`headers`] names; the body
    /// carries the payload.
    pub fn wire_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (headers::ID, self.id.to_string()),
            (headers::TYPE, self.kind.clone()),
            (headers::OCCURRED_AT, self.occurred_at_rfc3339()),
            (headers::SCHEMA_VERSION, self.schema_version.to_string()),
        ];
        if let Some(key) = &self.key {
            out.push((headers::KEY, key.clone()));
        }
        if let Some(c) = &self.correlation_id {
            out.push((headers::CORRELATION_ID, c.clone()));
        }
        if let Some(t) = &self.traceparent {
            out.push((headers::TRACEPARENT, t.clone()));
        }
        out
    }

    pub fn occurred_at_rfc3339(&self) -> String {
        self.occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    /// Milliseconds since the Unix epoch (what the embedded store and AMQP's `timestamp`
    /// keep, the latter in seconds).
    pub fn occurred_at_millis(&self) -> i64 {
        i64::try_from(self.occurred_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Rebuilds an envelope from a body and the metadata that came with it. `lookup`
    /// answers a [`headers`] name with its value, if the message had it; `defaults`
    /// fills what a foreign producer did not send. Fails, with a reason fit for a
    /// dead-letter record, when the body is not JSON or a header is malformed.
    pub fn from_wire(
        body: &[u8],
        lookup: impl Fn(&str) -> Option<String>,
        defaults: WireDefaults<'_>,
    ) -> Result<Self, Malformed> {
        let malformed = |reason: String| Malformed {
            reason,
            body: body.to_vec(),
        };
        let payload: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
        let id = match lookup(headers::ID) {
            Some(raw) => Uuid::parse_str(raw.trim())
                .map_err(|e| malformed(format!("{} {raw:?} is not a UUID: {e}", headers::ID)))?,
            None => defaults.id.unwrap_or_else(Uuid::now_v7),
        };
        let kind = match lookup(headers::TYPE) {
            Some(kind) if !kind.trim().is_empty() => kind,
            _ => defaults
                .kind
                .ok_or_else(|| {
                    malformed(format!(
                        "the message has no {} and the channel none by default",
                        headers::TYPE
                    ))
                })?
                .to_owned(),
        };
        let occurred_at = match lookup(headers::OCCURRED_AT) {
            Some(raw) => time::OffsetDateTime::parse(
                raw.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| {
                malformed(format!(
                    "{} {raw:?} is not RFC 3339: {e}",
                    headers::OCCURRED_AT
                ))
            })?,
            None => defaults
                .occurred_at
                .map_or_else(time::OffsetDateTime::now_utc, |t| {
                    time::OffsetDateTime::from(t)
                }),
        };
        let schema_version = match lookup(headers::SCHEMA_VERSION) {
            Some(raw) => raw.trim().parse::<u32>().map_err(|_| {
                malformed(format!(
                    "{} {raw:?} is not a version number",
                    headers::SCHEMA_VERSION
                ))
            })?,
            None => 1,
        };
        Ok(Self {
            id,
            kind,
            key: lookup(headers::KEY).or_else(|| defaults.key.map(str::to_owned)),
            correlation_id: lookup(headers::CORRELATION_ID),
            traceparent: lookup(headers::TRACEPARENT),
            occurred_at,
            schema_version,
            payload,
        })
    }
}

/// What [`Envelope::from_wire`] assumes for a message that lacks our metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireDefaults<'a> {
    /// The backend's own message id, when it has one (AMQP `message_id` that is a UUID,
    /// a Kafka offset-derived id...).
    pub id: Option<Uuid>,
    /// The channel's one message type, when it has one (`order_processing` carries
    /// `ProcessOrder` commands; see `channels`).
    pub kind: Option<&'a str>,
    /// The backend's own key (a Kafka record key).
    pub key: Option<&'a str>,
    /// The backend's own timestamp.
    pub occurred_at: Option<SystemTime>,
}

/// A message that could not be read as an envelope. It goes to the dead-letter queue
/// with `reason`; `body` is kept byte for byte so an operator can see what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {reason}")]
pub struct Malformed {
    pub reason: String,
    pub body: Vec<u8>,
}

/// `SystemTime` of milliseconds since the Unix epoch (negative clamps to the epoch).
pub fn system_time_from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn an_envelope_survives_the_wire() {
        let sent = Envelope::new(
            "OrderCreated",
            serde_json::json!({"event_type": "OrderCreated", "order_id": "ORD-12345", "total": 1999.98}),
        )
        .with_key("ORD-12345");
        let headers: HashMap<&str, String> = sent.wire_headers().into_iter().collect();
        let got = Envelope::from_wire(
            &sent.body(),
            |name| headers.get(name).cloned(),
            WireDefaults::default(),
        )
        .unwrap();
        // occurred_at goes through RFC 3339 (nanosecond precision), so all fields match.
        assert_eq!(got, sent);
        assert_eq!(got.id.get_version_num(), 7);
    }

    #[test]
    fn a_foreign_message_gets_the_channels_defaults() {
        let body = br#"{"order_id": "ORD-12345", "total": 1999.98}"#;
        let got = Envelope::from_wire(
            body,
            |_| None,
            WireDefaults {
                kind: Some("ProcessOrder"),
                ..WireDefaults::default()
            },
        )
        .unwrap();
        assert_eq!(got.kind, "ProcessOrder");
        assert_eq!(got.schema_version, 1);
        assert_eq!(got.payload["order_id"], "ORD-12345");
    }

    #[test]
    fn garbage_is_malformed_with_a_reason_and_the_body_kept() {
        let err = Envelope::from_wire(b"not json", |_| None, WireDefaults::default()).unwrap_err();
        assert!(err.reason.contains("not JSON"), "{}", err.reason);
        assert_eq!(err.body, b"not json");
        let err = Envelope::from_wire(
            b"{}",
            |n| (n == headers::ID).then(|| "x".into()),
            WireDefaults {
                kind: Some("K"),
                ..WireDefaults::default()
            },
        )
        .unwrap_err();
        assert!(err.reason.contains("not a UUID"), "{}", err.reason);
        let err = Envelope::from_wire(b"{}", |_| None, WireDefaults::default()).unwrap_err();
        assert!(err.reason.contains("no brigade-type"), "{}", err.reason);
    }
}
