//! A manual clock, fixtures and response readers shared by the modules.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use idempotency::{
    Begin, Claim, Clock, Fingerprint, Idempotency, IdempotencyKey, IdempotencySettings,
};
use problem::{Kind, Problem};
use storage::Database;

/// Time that moves only when a test says so.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The store on `db` with default settings (24 h TTL, 30 s lock) and a manual clock.
pub fn idempotency(db: &Database) -> (Idempotency, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let idem =
        Idempotency::new(db.clone(), IdempotencySettings::default()).with_clock(clock.clone());
    (idem, clock)
}

pub fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).unwrap()
}

pub fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of(&Method::POST, "/v1/things", body.as_bytes())
}

/// `begin` that must claim.
pub async fn claim(idem: &Idempotency, key: &IdempotencyKey, fp: &Fingerprint) -> Claim {
    match idem.begin("anonymous", key, fp).await.unwrap() {
        Begin::Claimed(claim) => claim,
        Begin::Replay(response) => panic!("expected a claim, got a replay: {response:?}"),
    }
}

/// `begin` that must replay.
pub async fn replay(idem: &Idempotency, key: &IdempotencyKey, fp: &Fingerprint) -> Response {
    match idem.begin("anonymous", key, fp).await.unwrap() {
        Begin::Replay(response) => response,
        Begin::Claimed(claim) => panic!("expected a replay, got a claim: {claim:?}"),
    }
}

/// `begin` that must be refused, with this kind.
pub async fn refused(
    idem: &Idempotency,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    kind: Kind,
) -> Problem {
    let problem = idem.begin("anonymous", key, fp).await.unwrap_err();
    assert_eq!(problem.kind(), kind, "{problem}");
    problem
}

/// What a handler's successful write answers: a created resource with the headers that
/// matter and one that does not.
pub fn created(id: i64) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::LOCATION, format!("/v1/things/{id}")),
            (header::ETAG, "\"1\"".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        format!(r#"{{"id":{id},"name":"thing"}}"#),
    )
        .into_response()
}

pub async fn read(response: Response) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes)
}

pub async fn count(db: &Database, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

/// A write transaction that has written effect `id` (a request's write, before its
/// claim finishes).
pub async fn write_effect(db: &Database, id: i64) -> storage::WriteTx {
    let mut tx = db.begin_write().await.unwrap();
    sqlx::query("INSERT INTO effects (id) VALUES ($1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// The table a test's "write" goes to.
pub async fn create_effects(db: &Database) {
    sqlx::query("CREATE TABLE effects (id BIGINT PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
}
