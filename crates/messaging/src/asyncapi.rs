//! The AsyncAPI 3.0 document of Brigade's channels, generated from the payload types
//! themselves (their utoipa schemas), so that the committed `asyncapi/brigade.json` and
//! the code cannot drift: a test compares them, as for OpenAPI.
//!
//! Each service declares its channels ([`Channel`]) next to its payload types (catalog's
//! `events`, orders' `events`); `brigade asyncapi --write` gathers them.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::envelope::headers;

/// The two shapes, which are not interchangeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One message, one consumer, acked and deleted.
    Queue,
    /// Many consumer groups, retained, replayable, ordered per key.
    Stream,
}

/// One queue or stream, who writes it, who reads it, and what travels on it.
#[derive(Clone)]
pub struct Channel {
    /// The queue's or stream's name (its address).
    pub address: &'static str,
    pub shape: Shape,
    pub description: &'static str,
    /// What the ordering key is (streams), e.g. "the product id".
    pub key: Option<&'static str>,
    /// The service that publishes (through its outbox).
    pub producer: &'static str,
    /// The services or groups that consume.
    pub consumers: &'static [&'static str],
    pub messages: Vec<Message>,
}

/// One message type on a channel.
#[derive(Clone)]
pub struct Message {
    /// The envelope's `type`.
    pub kind: &'static str,
    pub summary: &'static str,
    schema_name: String,
    schema: RefOr<Schema>,
    /// Schemas the payload's schema refers to.
    referenced: Vec<(String, RefOr<Schema>)>,
}

impl Message {
    /// A message whose payload is `T` (serialized as JSON).
    pub fn of<T: ToSchema>(kind: &'static str, summary: &'static str) -> Self {
        let mut referenced = Vec::new();
        T::schemas(&mut referenced);
        Self {
            kind,
            summary,
            schema_name: T::name().into_owned(),
            schema: T::schema(),
            referenced,
        }
    }
}

fn camel(address: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in address.chars() {
        if c == '-' || c == '_' || c == '.' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The AsyncAPI 3.0 document of `channels`.
pub fn document(channels: &[Channel]) -> Value {
    let mut channel_map = BTreeMap::new();
    let mut operations = BTreeMap::new();
    let mut messages = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    schemas.insert("EnvelopeHeaders".to_owned(), envelope_headers());

    for channel in channels {
        let id = camel(channel.address);
        let mut channel_messages = serde_json::Map::new();
        let mut refs = Vec::new();
        for m in &channel.messages {
            let reference = json!({ "$ref": format!("#/components/messages/{}", m.kind) });
            channel_messages.insert(m.kind.to_owned(), reference);
            refs.push(json!({ "$ref": format!("#/channels/{id}/messages/{}", m.kind) }));
            messages.insert(
                m.kind.to_owned(),
                json!({
                    "name": m.kind,
                    "title": m.kind,
                    "summary": m.summary,
                    "contentType": "application/json",
                    "headers": { "$ref": "#/components/schemas/EnvelopeHeaders" },
                    "payload": { "$ref": format!("#/components/schemas/{}", m.schema_name) },
                }),
            );
            schemas.insert(m.schema_name.clone(), to_value(&m.schema));
            for (name, schema) in &m.referenced {
                schemas.insert(name.clone(), to_value(schema));
            }
        }
        let shape = match channel.shape {
            Shape::Queue => "queue",
            Shape::Stream => "stream",
        };
        let mut description = channel.description.to_owned();
        if let Some(key) = channel.key {
            description.push_str(&format!(
                " Keyed by {key}: events of one key stay in order."
            ));
        }
        channel_map.insert(
            id.clone(),
            json!({
                "address": channel.address,
                "title": channel.address,
                "description": description,
                "messages": channel_messages,
                "x-brigade-shape": shape,
                "x-brigade-consumers": channel.consumers,
            }),
        );
        operations.insert(
            format!("{}Publishes{}", camel(channel.producer), capitalised(&id)),
            json!({
                "action": "send",
                "title": format!("{} publishes to {}", channel.producer, channel.address),
                "description": "Through the producer's transactional outbox: written in the \
                    transaction of the change, published by its relay at least once.",
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": refs,
            }),
        );
        for consumer in channel.consumers {
            operations.insert(
                format!("{}Receives{}", camel(consumer), capitalised(&id)),
                json!({
                    "action": "receive",
                    "title": format!("{consumer} consumes {}", channel.address),
                    "description": "At least once; the consumer's inbox makes a repeat \
                        harmless. A message that cannot be handled goes to the dead-letter \
                        queue with its reason.",
                    "channel": { "$ref": format!("#/channels/{id}") },
                    "messages": refs,
                }),
            );
        }
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Brigade messaging",
            "version": "1.0.0",
            "description": "Brigade's work queues and event streams. The message body is \
                the payload's JSON alone; the envelope (id, type, key, correlation ID, \
                traceparent, occurred-at, schema version) travels in the backend's message \
                headers (AMQP properties and headers, NATS headers, Kafka record headers). \
                Backends: embedded (SQLite), RabbitMQ, NATS JetStream, Kafka.",
        },
        "defaultContentType": "application/json",
        "channels": channel_map,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
        },
    })
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn to_value(schema: &RefOr<Schema>) -> Value {
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

fn envelope_headers() -> Value {
    json!({
        "type": "object",
        "description": "The envelope's metadata, under these names on every backend \
            (AMQP also sets message_id, type, correlation_id and timestamp; NATS also sets \
            Nats-Msg-Id). A producer that is not Brigade may omit them all: the consumer \
            then assumes the channel's one message type, a fresh id and the time of receipt.",
        "properties": {
            headers::ID: { "type": "string", "format": "uuid", "description": "UUIDv7; the same on every re-publish of one message, which de-duplication and inboxes key on." },
            headers::TYPE: { "type": "string", "description": "The message type (the message's name in this document)." },
            headers::KEY: { "type": "string", "description": "The ordering key." },
            headers::CORRELATION_ID: { "type": "string", "description": "The correlation ID of the request that caused the message." },
            headers::TRACEPARENT: { "type": "string", "description": "W3C trace context." },
            headers::OCCURRED_AT: { "type": "string", "format": "date-time" },
            headers::SCHEMA_VERSION: { "type": "string", "pattern": "^[0-9]+$", "description": "The payload's schema version; 1 unless said otherwise." },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, ToSchema)]
    struct Ping {
        n: i64,
    }

    #[test]
    fn a_channel_becomes_channels_operations_messages_and_schemas() {
        let doc = document(&[Channel {
            address: "ping-events",
            shape: Shape::Stream,
            description: "Pings.",
            key: Some("the ping id"),
            producer: "catalog",
            consumers: &["billing"],
            messages: vec![Message::of::<Ping>("Pinged", "A ping.")],
        }]);
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["channels"]["pingEvents"]["address"], "ping-events");
        assert_eq!(doc["channels"]["pingEvents"]["x-brigade-shape"], "stream");
        assert_eq!(
            doc["components"]["messages"]["Pinged"]["payload"]["$ref"],
            "#/components/schemas/Ping"
        );
        assert_eq!(doc["components"]["schemas"]["Ping"]["type"], "object");
        assert_eq!(
            doc["operations"]["catalogPublishesPingEvents"]["action"],
            "send"
        );
        assert_eq!(
            doc["operations"]["billingReceivesPingEvents"]["action"],
            "receive"
        );
    }
}
