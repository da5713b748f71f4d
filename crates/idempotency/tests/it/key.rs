//! Parsing keys and computing fingerprints: no database involved.

use http::Method;
use idempotency::{Fingerprint, IdempotencyKey};
use problem::Kind;

fn rejects(raw: &str) {
    let problem = IdempotencyKey::parse(raw).unwrap_err();
    assert_eq!(problem.kind(), Kind::InvalidRequest, "{raw:?}");
    assert_eq!(problem.errors()[0].field, "Idempotency-Key", "{raw:?}");
}

#[test]
fn refuses_empty_long_and_invisible_keys() {
    rejects("");
    rejects("\"\"");
    rejects(&"a".repeat(256));
    rejects(&format!("\"{}\"", "a".repeat(256)));
    rejects("a b");
    rejects(" abc");
    rejects("abc\t");
    rejects("abc\n");
    rejects("abc\u{7f}");
    rejects("\u{0}");
    rejects("clé");
    rejects("ключ");
}

#[test]
fn accepts_visible_ascii_up_to_255_and_the_quoted_form() {
    let longest = "a".repeat(255);
    assert_eq!(IdempotencyKey::parse(&longest).unwrap().as_str(), longest);
    let every_visible: String = ('!'..='~').collect();
    assert_eq!(
        IdempotencyKey::parse(&every_visible).unwrap().as_str(),
        every_visible
    );
    let uuid = "8e03978e-40d5-43e8-bc93-6894a57f9324";
    assert_eq!(
        IdempotencyKey::parse(&format!("\"{uuid}\"")).unwrap(),
        IdempotencyKey::parse(uuid).unwrap()
    );
    // The quotes do not count towards the limit.
    let quoted = format!("\"{longest}\"");
    assert_eq!(IdempotencyKey::parse(&quoted).unwrap().as_str(), longest);
}

#[test]
fn fingerprints_tell_requests_apart() {
    let fp = |m: &Method, p: &str, b: &str| Fingerprint::of(m, p, b.as_bytes());
    let base = fp(&Method::POST, "/v1/orders", r#"{"qty":1}"#);
    assert_eq!(base, fp(&Method::POST, "/v1/orders", r#"{"qty":1}"#));
    assert_eq!(base.as_str().len(), 64);
    assert!(
        base.as_str()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_ne!(base, fp(&Method::PUT, "/v1/orders", r#"{"qty":1}"#));
    assert_ne!(base, fp(&Method::POST, "/v1/orders?x=1", r#"{"qty":1}"#));
    assert_ne!(base, fp(&Method::POST, "/v1/orders", r#"{"qty":2}"#));
    // Where the path ends and the body starts is part of the hash.
    assert_ne!(fp(&Method::POST, "/a", "b"), fp(&Method::POST, "/ab", ""));
    // SHA-256 of "POST\n/\n", so the hex encoding itself is pinned.
    assert_eq!(
        fp(&Method::POST, "/", "").as_str(),
        "34328eb739983cd49311d0247d3d36a504ff22d7954f86b0992ae0c4c805c774"
    );
}
