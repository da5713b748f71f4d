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
    /// The `next_cursor` of the previous page; omit for the first page. Opaque and
    /// self-checking: do not build or edit one; a cursor this API did not return is a 400.
    #[param(pattern = r"^1[0-9a-z]{6,18}$")]
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

/// An opaque cursor for "items after this id". It checks itself, so that a string the
/// server never issued is refused (400 naming `cursor`) instead of silently paging from
/// wherever it happens to decode to:
///
/// ```text
/// 1 <id in base 36> <check: 5 base-36 digits>
/// ```
///
/// The leading `1` is the format's version (a later format gets another digit, and old
/// cursors can still be read or refused by name). The check is 25 bits of a keyed 64-bit
/// mix of version and id: any edit of a cursor is caught with odds of about 1 in 60 million.
/// It is a check, not a secret: a cursor grants nothing a client could not list anyway.
/// Cursors do not depend on the process, so they survive restarts and work on every
/// replica.
pub fn encode_cursor(after_id: i64) -> String {
    let id = after_id.max(0) as u64;
    let mut out = String::with_capacity(1 + 13 + CHECK_DIGITS);
    out.push(CURSOR_VERSION as char);
    push_base36(&mut out, id, 1);
    push_base36(&mut out, check_of(id), CHECK_DIGITS);
    out
}

/// The format's version, the cursor's first character.
const CURSOR_VERSION: u8 = b'1';
/// Base-36 digits of the check: 36^5 ≈ 2^25.8.
const CHECK_DIGITS: usize = 5;
const CHECK_RANGE: u64 = 36u64.pow(CHECK_DIGITS as u32);
/// Longest cursor: version, 13 digits of a u64, the check.
const MAX_CURSOR: usize = 1 + 13 + CHECK_DIGITS;
const CURSOR_DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` in base 36, left-padded with zeros to at least `width` digits.
fn push_base36(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [0u8; 13];
    let mut len = 0;
    while n > 0 || len < width {
        digits[len] = CURSOR_DIGITS[(n % 36) as usize];
        n /= 36;
        len += 1;
    }
    out.extend(digits[..len].iter().rev().map(|d| *d as char));
}

/// The check of cursor version 1 for `id`: splitmix64's finaliser over the id mixed with a
/// fixed key, reduced to [`CHECK_DIGITS`] base-36 digits. Deterministic on every platform.
fn check_of(id: u64) -> u64 {
    let mut z = id ^ 0x6272_6967_6164_6531; // "brigade1"
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % CHECK_RANGE
}

fn base36(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, b| {
        let digit = CURSOR_DIGITS.iter().position(|d| d == b)? as u64;
        n.checked_mul(36)?.checked_add(digit)
    })
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes = raw.as_bytes();
    if bytes.len() < 1 + 1 + CHECK_DIGITS || bytes.len() > MAX_CURSOR {
        return None;
    }
    let (version, rest) = bytes.split_first()?;
    if *version != CURSOR_VERSION {
        return None;
    }
    let (id, check) = rest.split_at(rest.len() - CHECK_DIGITS);
    // One spelling per id: no leading zeros, as `encode_cursor` writes it.
    if id.len() > 1 && id[0] == b'0' {
        return None;
    }
    let id = base36(id)?;
    if base36(check)? != check_of(id) {
        return None;
    }
    i64::try_from(id).ok()
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
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
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

/// [`json_with_etag`] for a body already written as JSON ([`json`]): its tag is a digest of it.
pub fn written_json_with_etag(if_none_match: &IfNoneMatch, body: Vec<u8>) -> Response {
    let Ok(etag) = HeaderValue::from_str(&etag_of(&body)) else {
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

/// An operation of a document: its HTTP method and its path template.
pub type OperationAt<'a> = (http::Method, &'a str);

/// Documents an OpenAPI link on `from`'s `status` response: the operation `to` can be
/// called next with `parameters` (name → runtime expression, e.g. `$response.body#/id`).
/// Links let a client — and a stateful fuzzer such as Schemathesis — chain a create into
/// the reads, updates and deletes of what it created. Linked by `operationRef`, since
/// operation ids repeat across a face's resources. A missing operation is left alone.
pub fn link(
    api: &mut utoipa::openapi::OpenApi,
    from: OperationAt<'_>,
    status: &str,
    name: &str,
    to: OperationAt<'_>,
    parameters: &[(&str, &str)],
) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;

    let pointer = |path: &str| path.replace('~', "~0").replace('/', "~1");
    let mut link = LinkBuilder::new().operation_ref(format!(
        "#/paths/{}/{}",
        pointer(to.1),
        to.0.as_str().to_ascii_lowercase()
    ));
    for (parameter, expression) in parameters {
        link = link.parameter(*parameter, *expression);
    }
    let Some(item) = api.paths.paths.get_mut(from.1) else {
        return;
    };
    let operation = match from.0 {
        http::Method::GET => item.get.as_mut(),
        http::Method::POST => item.post.as_mut(),
        http::Method::PUT => item.put.as_mut(),
        http::Method::PATCH => item.patch.as_mut(),
        http::Method::DELETE => item.delete.as_mut(),
        _ => None,
    };
    if let Some(RefOr::T(response)) =
        operation.and_then(|op| op.responses.responses.get_mut(status))
    {
        response
            .links
            .insert(name.to_owned(), RefOr::T(link.build()));
    }
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

/// Unix milliseconds as an RFC 3339 UTC timestamp, the wire's format for instants:
/// `2026-12-03T21:18:27.219Z`, the fraction without trailing zeros and left out when zero
/// (as the `time` crate writes it; a test holds the two equal). Years outside 0–9999,
/// which RFC 3339 cannot write, give an empty string.
///
/// Written by hand: every row of every list has two of these, and going through `time`'s
/// formatter cost ~5% of a page of products (BENCHMARKS.md, issue 12).
pub fn rfc3339(millis: i64) -> String {
    let mut out = Vec::with_capacity(24);
    json::write_rfc3339_digits(&mut out, millis);
    String::from_utf8(out).unwrap_or_default()
}

/// JSON written by hand, for list pages: a page of 50 items through serde's derived
/// impls escaped every key of every item, and built each item's strings (two timestamps, a
/// copy of the name) only to serialize them once (BENCHMARKS.md, issue 12). Each face
/// that writes an item this way keeps a test that its bytes equal its serde view's.
pub mod json {
    /// `{"items":[...],"next_cursor":"..."|null}`, the bytes `serde_json` writes for
    /// [`super::Page`], from up to `limit + 1` rows in key order (as [`super::Page::from_rows`]).
    pub fn page<R>(
        mut rows: Vec<R>,
        limit: u32,
        key: impl Fn(&R) -> i64,
        mut write_item: impl FnMut(&mut Vec<u8>, &R),
    ) -> Vec<u8> {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if has_more {
            rows.last().map(|r| super::encode_cursor(key(r)))
        } else {
            None
        };
        let mut out = Vec::with_capacity(40 + rows.len() * 192);
        out.extend_from_slice(b"{\"items\":[");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_item(&mut out, row);
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        match next {
            Some(cursor) => string(&mut out, &cursor),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out
    }

    /// A JSON string, escaped as `serde_json` escapes it.
    pub fn string(out: &mut Vec<u8>, value: &str) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }

    /// An integer, as `serde_json` writes it.
    pub fn int(out: &mut Vec<u8>, value: i64) {
        let _ = serde_json::to_writer(&mut *out, &value);
    }

    /// A float, as `serde_json` writes it (shortest round-trip form; `null` if not finite).
    pub fn float(out: &mut Vec<u8>, value: f64) {
        let _ = serde_json::to_writer(&mut *out, &value);
    }

    /// An optional string: the string, or `null`.
    pub fn opt_string(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            Some(v) => string(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// [`super::rfc3339`] as a JSON string (it needs no escaping).
    pub fn rfc3339(out: &mut Vec<u8>, millis: i64) {
        out.push(b'"');
        write_rfc3339_digits(out, millis);
        out.push(b'"');
    }

    /// The digits of [`super::rfc3339`], appended to `out`.
    pub(super) fn write_rfc3339_digits(out: &mut Vec<u8>, millis: i64) {
        let secs = millis.div_euclid(1000);
        let ms = millis.rem_euclid(1000) as u32;
        let (year, month, day) = telemetry::civil_from_days(secs.div_euclid(86_400));
        let Ok(year @ 0..=9999) = u32::try_from(year) else {
            return;
        };
        let of_day = secs.rem_euclid(86_400) as u32;
        // Digits straight into a buffer: `write!` with padded integers cost more than the
        // row's database read.
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, of_day / 3600);
        put(14, 2, of_day / 60 % 60);
        put(17, 2, of_day % 60);
        put(20, 3, ms);
        // The fraction without trailing zeros, and none at all when it is zero.
        let end = match ms {
            0 => 19,
            ms if ms % 100 == 0 => 21,
            ms if ms % 10 == 0 => 22,
            _ => 23,
        };
        out.extend_from_slice(&text[..end]);
        out.push(b'Z');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        for id in [0, 1, 2, 42, 2_999, 1 << 40, i64::MAX] {
            let c = encode_cursor(id);
            assert_eq!(decode_cursor(&c), Some(id), "{c}");
            assert!(c.len() <= MAX_CURSOR && c.starts_with('1'), "{c}");
        }
        assert_eq!(encode_cursor(-5), encode_cursor(0));
        // What `?cursor=abc` and `?cursor=2999` used to page from: no longer cursors.
        for forged in ["", "abc", "2999", "ABC", "!!!", "zzzzzzzzzzzz", "1", "12"] {
            assert_eq!(decode_cursor(forged), None, "{forged:?}");
        }
        // Another version, or any one character changed, is refused.
        let good = encode_cursor(2_999);
        assert_eq!(decode_cursor(&format!("2{}", &good[1..])), None);
        let mut caught = 0;
        let mut tried = 0;
        for i in 1..good.len() {
            for d in CURSOR_DIGITS {
                let mut edited = good.clone().into_bytes();
                if edited[i] == *d {
                    continue;
                }
                edited[i] = *d;
                tried += 1;
                let edited = String::from_utf8(edited).unwrap();
                if decode_cursor(&edited).is_none() {
                    caught += 1;
                }
            }
        }
        assert_eq!(
            caught, tried,
            "every one-character edit of {good} is refused"
        );
        // The same id spelled with a leading zero is not a cursor the server wrote.
        let padded = format!("10{}", &good[1..]);
        assert_eq!(decode_cursor(&padded), None, "{padded}");
        // Longer than any cursor, or past i64.
        assert_eq!(decode_cursor(&"1".repeat(MAX_CURSOR + 1)), None);
        let mut past = String::from("1");
        push_base36(&mut past, u64::MAX, 1);
        push_base36(&mut past, check_of(u64::MAX), CHECK_DIGITS);
        assert_eq!(decode_cursor(&past), None);
    }

    #[test]
    fn timestamps_are_written_as_the_time_crate_writes_them() {
        let by_time = |millis: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default()
        };
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut samples = vec![
            0,
            1,
            10,
            100,
            120,
            999,
            -1,
            -1000,
            951_782_400_000,
            1_796_256_000_000,
            253_402_300_799_999,
            -62_167_219_200_000,
        ];
        for _ in 0..10_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            samples.push((rng % 253_402_300_800_000) as i64);
        }
        for millis in samples {
            assert_eq!(rfc3339(millis), by_time(millis), "{millis}");
        }
        assert_eq!(rfc3339(1_796_256_000_120), "2026-12-03T00:00:00.12Z");
        let mut quoted = Vec::new();
        json::rfc3339(&mut quoted, 1_796_256_000_120);
        assert_eq!(quoted, b"\"2026-12-03T00:00:00.12Z\"");
        assert_eq!(rfc3339(i64::MAX), "");
        assert_eq!(rfc3339(-62_167_219_200_001), "");
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
    fn a_hand_written_page_is_the_page_serde_writes() {
        for (rows, limit) in [
            (vec![], 5),
            (vec![1, 2], 5),
            (vec![1, 2, 3], 2),
            (vec![7], 1),
        ] {
            let by_serde =
                serde_json::to_vec(&Page::from_rows(rows.clone(), limit, |r| *r, |r| r)).unwrap();
            let by_hand = json::page(rows, limit, |r| *r, |out, r| json::int(out, *r));
            assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
        let mut out = Vec::new();
        json::opt_string(&mut out, Some("a\"b\\c\u{1}é"));
        json::opt_string(&mut out, None);
        json::float(&mut out, 999.99);
        json::float(&mut out, f64::NAN);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{}null999.99null",
                serde_json::to_string("a\"b\\c\u{1}é").unwrap()
            )
        );
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
