//! What identifies a request: the client's key, the client's scope and the request's
//! fingerprint.

use std::fmt::Write as _;

use problem::{FieldError, Problem};
use sha2::{Digest, Sha256};

/// The request header carrying the key (lower case, as `http` spells header names).
pub const HEADER: &str = "idempotency-key";

/// Set to `true` on a response served from the record rather than by running the handler.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The longest key accepted, in characters.
const MAX_LEN: usize = 255;

/// A client-chosen `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header's value. The draft defines it as a structured-field string
    /// (`"8e03978e"`), while most clients send it bare (Stripe); both name the same key.
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        let key = raw
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(raw);
        if key.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if key.len() > MAX_LEN {
            return Err(invalid("must be at most 255 characters"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "must be visible ASCII characters only (no spaces or control characters)",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A 400 naming the header, the shape every missing or malformed key gets.
pub(crate) fn invalid(reason: &str) -> Problem {
    Problem::invalid_request(format!("the Idempotency-Key header {reason}"))
        .with_errors(vec![FieldError::new("Idempotency-Key", reason)])
}

/// Whose keys these are: set by the token check of the service's guard
/// (`server::identity`).
pub use server::identity::ClientScope;

/// The request a key was first used for: SHA-256 of method, path and query, and the raw
/// body, as lowercase hex. A key sent again with another fingerprint is a client bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(method: &http::Method, path_and_query: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        // Neither a method nor a request target can contain a newline, so the separators
        // keep ("POST", "/a", "b") and ("POST", "/ab", "") apart.
        hasher.update(method.as_str().as_bytes());
        hasher.update(b"\n");
        hasher.update(path_and_query.as_bytes());
        hasher.update(b"\n");
        hasher.update(body);
        let mut hex = String::with_capacity(64);
        for byte in hasher.finalize() {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
