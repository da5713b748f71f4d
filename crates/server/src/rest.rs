//! What every REST face shares: keyset pagination with opaque cursors, entity tags and
//! conditional requests, and the OpenAPI document with its interactive page.

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use problem::{FieldError, Problem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items one page may hold; a larger `limit` is refused, not silently clamped.
pub const MAX_LIMIT: u32 = 200;

/// `?limit=&cursor=` of every list endpoint.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items to return, 1–200 (default 50). Out of range is a 400 problem.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page; omit for the first page. Opaque: do not
    /// build or parse one.
    #[param(pattern = r"^[0-9a-z]{1,12}$")]
    pub cursor: Option<String>,
}

/// A validated page request: where to start after, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<i64>,
    pub limit: u32,
}

impl PageQuery {
    /// Validates `limit` and decodes `cursor`, reporting both if both are bad.
    pub fn parse(&self) -> Result<PageRequest, Problem> {
        let mut errors = Vec::new();
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=i64::from(MAX_LIMIT)).contains(&n) => n as u32,
            Some(_) => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                ));
                DEFAULT_LIMIT
            }
        };
        let after = match self.cursor.as_deref() {
            None => None,
            Some(raw) => match decode_cursor(raw) {
                Some(id) => Some(id),
                None => {
                    errors.push(FieldError::new(
                        "cursor",
                        "is not a cursor this API returned",
                    ));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(PageRequest { after, limit })
        } else {
            Err(Problem::invalid_request("invalid paging parameters").with_errors(errors))
        }
    }
}

/// An opaque cursor for "items after this id": the id in base 36. Opaque so that the
/// ordering key can change without breaking clients; every string the documented pattern
/// admits (`^[0-9a-z]{1,12}$`) decodes, so the contract and the server agree exactly.
pub fn encode_cursor(after_id: i64) -> String {
    let mut n = after_id.max(0) as u64;
    let mut digits = Vec::new();
    loop {
        digits.push(CURSOR_DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

const CURSOR_DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn decode_cursor(raw: &str) -> Option<i64> {
    if raw.is_empty() || raw.len() > 12 {
        return None;
    }
    let mut n: i64 = 0;
    for b in raw.bytes() {
        let digit = CURSOR_DIGITS.iter().position(|d| *d == b)? as i64;
        n = n.checked_mul(36)?.checked_add(digit)?;
    }
    Some(n)
}

/// One page of a list: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in key order: the extra row only
    /// tells whether another page exists, so the last page never links to an empty one.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: u32,
        key: impl Fn(&R) -> i64,
        render: impl Fn(R) -> T,
    ) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if has_more {
            rows.last().map(|r| encode_cursor(key(r)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(render).collect(),
            next_cursor,
        }
    }
}

/// A strong entity tag for a representation's bytes.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex(&digest[..12]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entity tags in an `If-None-Match` or `If-Match` value (`*` included as is).
fn tags(value: Option<&HeaderValue>) -> Option<Vec<&str>> {
    let raw = value?.to_str().ok()?;
    Some(
        raw.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// A GET's `If-None-Match`, for [`json_with_etag`]. Its own extractor so that a handler
/// needs no clone of the whole `HeaderMap` for one header.
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch(pub Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(
            parts.headers.get(header::IF_NONE_MATCH).cloned(),
        ))
    }
}

impl IfNoneMatch {
    /// Whether the client already has `etag`. Weak comparison, as RFC 9110 says for
    /// `If-None-Match`: `W/"x"` matches `"x"`.
    pub fn matches(&self, etag: &str) -> bool {
        match tags(self.0.as_ref()) {
            Some(tags) => tags
                .iter()
                .any(|t| *t == "*" || t.trim_start_matches("W/") == etag),
            None => false,
        }
    }
}

/// Whether `If-Match` allows a change to a resource whose current tag is `etag`. Strong
/// comparison: a weak tag never matches. `None` when the header is absent.
pub fn if_match(headers: &HeaderMap, etag: &str) -> Option<bool> {
    tags(headers.get(header::IF_MATCH)).map(|tags| tags.iter().any(|t| *t == "*" || *t == etag))
}

/// A JSON `200 OK` with its `ETag`, or `304 Not Modified` when the client has it already.
/// Without a tag, the tag is a digest of the body.
pub fn json_with_etag<T: Serialize>(
    if_none_match: &IfNoneMatch,
    etag: Option<String>,
    value: &T,
) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(err) => return Problem::internal(err).into_response(),
    };
    let etag = etag.unwrap_or_else(|| etag_of(&body));
    let Ok(etag) = HeaderValue::from_str(&etag) else {
        return Problem::internal(std::io::Error::other("unrepresentable ETag")).into_response();
    };
    rendered_with_etag(if_none_match, etag, body.into())
}

/// [`json_with_etag`] for a body already rendered as JSON.
pub fn rendered_with_etag(
    if_none_match: &IfNoneMatch,
    etag: HeaderValue,
    body: bytes::Bytes,
) -> Response {
    if if_none_match.matches(etag.to_str().unwrap_or_default()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    // Room for these two and the stack's four (CORS, correlation, trace) in one go.
    headers.reserve(6);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag);
    response
}

/// What every REST face promises, as its OpenAPI description says it.
pub const API_CONVENTIONS: &str = "\
**Errors** are `application/problem+json` (RFC 9457) with a stable `type` URI \
(`https://brigade.dev/problems/<kind>`): branch on `type`, not on `title` or `detail`. \
Validation failures list every bad field in `errors`. Every response carries \
`X-Correlation-ID` (send your own to follow a request across services) and `traceparent`.

**Idempotency.** Every `POST` requires an `Idempotency-Key` header (1–255 visible ASCII \
characters). A retry with the same key and the same request returns the first response \
byte for byte with `Idempotent-Replayed: true` and performs no second write. A retry while \
the first is still in flight gets 409 `idempotency-key-in-use` (retry after `Retry-After`); \
the same key with a different method, path or body gets 422 `idempotency-key-reused`. \
A request refused by validation is not remembered, so it may be fixed and retried with the \
same key. Keys are kept for 24 hours, then purged.

**Pagination.** Lists take `limit` (1–200, default 50; out of range is a 400, never a \
silent clamp) and an opaque `cursor`, and return `next_cursor` (`null` on the last page). \
Items come in id order, so concurrent inserts never shift a page or repeat an item.

**Caching and concurrency.** `GET` responses carry an `ETag`; send it in `If-None-Match` to \
get 304, or in `If-Match` on `PATCH` to change a resource only if nobody changed it since \
(412 otherwise).";

/// Splits a face's documented router into its routes and its finished OpenAPI document:
/// the service's `intro`, the shared conventions, and every problem response documented.
pub fn split<S>(
    router: utoipa_axum::router::OpenApiRouter<S>,
    intro: &str,
) -> (Router<S>, utoipa::openapi::OpenApi)
where
    S: Clone + Send + Sync + 'static,
{
    let (routes, mut api) = router.split_for_parts();
    api.info.description = Some(format!("{intro}\n\n{API_CONVENTIONS}"));
    document_problems(&mut api);
    (routes, api)
}

/// `/openapi.json` and an interactive page at `/docs`, both served from the binary
/// (Swagger UI is vendored at build time: no CDN is needed).
pub fn docs(api: utoipa::openapi::OpenApi) -> Router {
    Router::from(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", api))
}

/// Documents, on every operation of `api`, the problems the shared machinery can answer
/// with, so that the contract lists every status a client can really see: 400 (bad query,
/// header or path), 500 and 503 everywhere; 413, 415 and 422 where there is a body; 404
/// where there is a path parameter. Responses an operation documents itself are kept.
pub fn document_problems(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let problem = |description: &str| -> RefOr<utoipa::openapi::Response> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for item in api.paths.paths.values_mut() {
        let ops = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            let has_body = op.request_body.is_some();
            let has_path_param = op
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path));
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| problem(description));
            };
            add(
                "400",
                "The request is malformed (query, header, path or JSON syntax).",
            );
            add("500", "An unexpected error; quote the correlation_id.");
            add(
                "503",
                "A dependency is unavailable or the service is shedding load; retry with backoff (see Retry-After).",
            );
            if has_body {
                add("413", "The body is larger than 64 KiB.");
                add("415", "The body is not application/json.");
                add(
                    "422",
                    "The body is well-formed JSON but breaks the rules; `errors` lists every bad field.",
                );
            }
            if has_path_param {
                add("404", "No such resource.");
            }
        }
    }
}

/// Unix milliseconds as an RFC 3339 UTC timestamp, the wire's format for instants.
pub fn rfc3339(millis: i64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let c = encode_cursor(42);
        assert_eq!(decode_cursor(&c), Some(42));
        assert_eq!(decode_cursor(&encode_cursor(0)), Some(0));
        assert_eq!(
            decode_cursor(&encode_cursor(i64::MAX / 2)),
            Some(i64::MAX / 2)
        );
        // Every string of the documented pattern decodes.
        assert_eq!(
            decode_cursor("zzzzzzzzzzzz"),
            Some(4_738_381_338_321_616_895)
        );
        assert_eq!(decode_cursor(""), None);
        assert_eq!(decode_cursor("ABC"), None);
        assert_eq!(decode_cursor("!!!"), None);
        assert_eq!(decode_cursor("0000000000000"), None);
    }

    #[test]
    fn limits_are_checked_not_clamped() {
        let q = |limit| PageQuery {
            limit,
            cursor: None,
        };
        assert_eq!(q(None).parse().unwrap().limit, 50);
        assert_eq!(q(Some(200)).parse().unwrap().limit, 200);
        for bad in [0, -1, 201] {
            let err = q(Some(bad)).parse().unwrap_err();
            assert_eq!(err.errors()[0].field, "limit");
        }
        let both = PageQuery {
            limit: Some(0),
            cursor: Some("ZZ".into()),
        }
        .parse()
        .unwrap_err();
        assert_eq!(both.errors().len(), 2);
    }

    #[test]
    fn pages_link_only_when_more_rows_exist() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |r| *r, |r| r);
        assert_eq!(page.items, [1, 2]);
        assert_eq!(page.next_cursor, Some(encode_cursor(2)));
        let last = Page::from_rows(vec![1, 2], 2, |r| *r, |r| r);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn conditional_headers_compare_as_rfc_9110_says() {
        let none_match = IfNoneMatch(Some(HeaderValue::from_static("W/\"a\", \"b\"")));
        assert!(none_match.matches("\"a\""));
        assert!(none_match.matches("\"b\""));
        assert!(!none_match.matches("\"c\""));
        assert!(!IfNoneMatch(None).matches("\"a\""));
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"a\""));
        assert_eq!(if_match(&h, "\"a\""), Some(false));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"a\""));
        assert_eq!(if_match(&h, "\"a\""), Some(true));
        assert_eq!(if_match(&HeaderMap::new(), "\"a\""), None);
    }
}
