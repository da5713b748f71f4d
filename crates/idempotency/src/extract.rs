//! The extractor a POST handler takes instead of `server::extract::Json`.

use axum::extract::{FromRequest, OriginalUri, Request};
use problem::Problem;
use serde::de::DeserializeOwned;
use server::extract::{body_bytes, parse_json};

use crate::key::{ClientScope, Fingerprint, HEADER, IdempotencyKey, invalid};

/// A JSON body together with what identifies the request for idempotency: the key (a
/// missing or malformed one is a 400 before the body is even read), the client's scope
/// and the fingerprint of the raw bytes. Body failures are `server::extract`'s problems
/// (415, 413, 400, 422).
#[derive(Debug, Clone)]
pub struct IdempotentJson<T> {
    pub key: IdempotencyKey,
    /// The client the key belongs to ([`ClientScope`], or `anonymous`).
    pub scope: String,
    pub fingerprint: Fingerprint,
    pub body: T,
}

impl<T, S> FromRequest<S> for IdempotentJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Problem> {
        let key = key_from(req.headers())?;
        let scope = req
            .extensions()
            .get::<ClientScope>()
            .map_or_else(|| ClientScope::ANONYMOUS.to_owned(), |s| s.0.clone());
        // Inside a nested router `uri()` has lost its prefix; fingerprint what the client
        // sent, so the same request hashes the same however the service is mounted.
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().clone(), |o| o.0.clone());
        let path_and_query = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let method = req.method().clone();
        let headers = req.headers().clone();

        let bytes = body_bytes(req).await?;
        let body = parse_json(&headers, &bytes)?;
        Ok(Self {
            key,
            scope,
            fingerprint: Fingerprint::of(&method, &path_and_query, &bytes),
            body,
        })
    }
}

/// Exactly one `Idempotency-Key` header, well formed.
fn key_from(headers: &http::HeaderMap) -> Result<IdempotencyKey, Problem> {
    let mut values = headers.get_all(HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(HEADER) {
            invalid("must be sent once")
        } else {
            invalid("is required on every POST")
        });
    };
    let raw = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII characters only"))?;
    IdempotencyKey::parse(raw)
}
