//! Extractors whose rejections are problems from the one table, so that even what the
//! framework refuses (malformed JSON, a wrong content type, an oversized body, a bad
//! query string or path segment) comes back as problem+json (axum's
//! `examples/error-handling` pattern).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use problem::{FieldError, Kind, Problem};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The largest request body any endpoint accepts (a product or a review is far smaller).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body. Refuses a non-JSON `Content-Type` with 415, a body over
/// [`MAX_BODY_BYTES`] with 413, malformed JSON with 400 and well-formed JSON of the wrong
/// shape with 422 naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Problem> {
        let headers = req.headers().clone();
        let body = body_bytes(req).await?;
        parse_json(&headers, &body).map(Json)
    }
}

/// Buffers a request body, at most [`MAX_BODY_BYTES`] of it, mapping failures to problems.
///
/// The cap is enforced here, where bodies are read, rather than by axum's
/// `DefaultBodyLimit` layer: that layer wrote the limit into the extensions of every
/// request, reads included, which cost a measurable share of a cached product read
/// (BENCHMARKS.md, issue 3).
pub async fn body_bytes(req: Request) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(Kind::PayloadTooLarge)
            .with_detail(format!("the body must be at most {MAX_BODY_BYTES} bytes"))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        // Its own cap, or one the body carried in already (a gateway forwarding in
        // process caps what it streams through).
        Err(err)
            if std::iter::successors(Some(&*err as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<LengthLimitError>()) =>
        {
            Err(too_large())
        }
        Err(err) => Err(Problem::invalid_request(format!(
            "the body could not be read: {err}"
        ))),
    }
}

/// Whether the request says its body is JSON (`application/json` or any `+json` type,
/// such as `application/merge-patch+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body already buffered (the idempotency layer needs the raw bytes too).
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(Kind::UnsupportedMediaType)
            .with_detail("send the body as application/json"));
    }
    // Every body Brigade accepts is a JSON object; serde would otherwise read a struct
    // from an array (`[null, null]`), which the contract does not allow.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map_err(|e| Problem::invalid_request(format!("the body is not valid JSON: {e}")))?;
        return Err(Problem::validation(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { "body".to_owned() } else { path };
                Problem::validation(vec![FieldError::new(field, clean_reason(&inner))])
            }
            _ => Problem::invalid_request(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    // Trailing characters after the document are malformed JSON too.
    de.end()
        .map_err(|e| Problem::invalid_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// serde's message without the " at line 1 column 9" suffix, which the field path replaces.
fn clean_reason(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A query string; a bad one is a 400 problem naming what was wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|rejection: QueryRejection| {
                Problem::invalid_request(format!("invalid query string: {}", rejection.body_text()))
            })
    }
}

/// Path parameters; a segment of the wrong type (`/v1/products/abc`) is a 400 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|rejection: PathRejection| {
                Problem::invalid_request(format!("invalid path: {}", rejection.body_text()))
            })
    }
}

/// Deserializes a JSON integer the way JSON Schema defines one: any number with a zero
/// fractional part, so `17786.0` is the integer 17786 (as the OpenAPI contract promises),
/// while `1.5` or a number beyond `i64` is refused.
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("integer out of range"))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // 2^63 is exactly representable; anything at or beyond it does not fit.
            if v.fract() == 0.0
                && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v)
            {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
    }

    deserializer.deserialize_any(Visitor)
}

/// [`integer`] for optional fields; `null` means absent, as for the other optional fields.
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Integer(#[serde(deserialize_with = "integer")] i64);

    Ok(Option::<Integer>::deserialize(deserializer)?.map(|Integer(n)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "integer")]
        n: i64,
    }

    fn n(json: &str) -> Result<i64, serde_json::Error> {
        serde_json::from_str::<Body>(json).map(|b| b.n)
    }

    #[test]
    fn integers_are_json_schema_integers() {
        assert_eq!(n(r#"{"n": 5}"#).unwrap(), 5);
        assert_eq!(n(r#"{"n": 17786.0}"#).unwrap(), 17786);
        assert_eq!(n(r#"{"n": -3.0}"#).unwrap(), -3);
        assert!(n(r#"{"n": 1.5}"#).is_err());
        assert!(n(r#"{"n": 1e300}"#).is_err());
        assert!(n(r#"{"n": 9223372036854775808}"#).is_err());
        assert!(n(r#"{"n": "5"}"#).is_err());
    }

    /// Bodies in chunks with no `Content-Length` (what a streaming client sends) are
    /// capped while they are read; a declared length over the cap is refused unread.
    #[tokio::test]
    async fn bodies_over_the_cap_are_413_problems_declared_or_not() {
        let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
        let chunks = (0..5).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        let streamed = Request::new(axum::body::Body::from_stream(futures::stream::iter(chunks)));
        let err = body_bytes(streamed).await.unwrap_err();
        assert_eq!(err.kind(), Kind::PayloadTooLarge);

        let declared = Request::builder()
            .header(header::CONTENT_LENGTH, (MAX_BODY_BYTES + 1).to_string())
            .body(axum::body::Body::empty())
            .unwrap();
        let err = body_bytes(declared).await.unwrap_err();
        assert_eq!(err.kind(), Kind::PayloadTooLarge);

        let exact = Request::new(axum::body::Body::from(vec![b'x'; MAX_BODY_BYTES]));
        assert_eq!(body_bytes(exact).await.unwrap().len(), MAX_BODY_BYTES);
    }
}
