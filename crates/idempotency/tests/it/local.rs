//! `Idempotency::run_local`: the one-transaction protocol on a SQLite file's rusqlite
//! writer (PostgreSQL has none). The same properties as `one_tx` for `run`, plus the
//! meetings with the two-phase protocol that can only happen across paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use idempotency::{Idempotency, MIGRATIONS, REPLAYED_HEADER};
use problem::Kind;

use crate::helpers::{claim, count, create_effects, created, fingerprint, idempotency, key, read};
use crate::one_tx::{self, Path};

async fn run_once(
    idem: &Idempotency,
    raw_key: &str,
    id: i64,
    fail: Option<Kind>,
    runs: Arc<AtomicUsize>,
) -> axum::response::Response {
    one_tx::run_once(idem, Path::Local, raw_key, id, fail, runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_write_once_and_the_rest_replay() {
    let t = storage::testing::sqlite(&[&MIGRATIONS]).await;
    assert!(idempotency(&t.db).0.writes_locally());
    one_tx::one_key_writes_once_and_the_rest_replay(&t.db, Path::Local).await;
}

#[tokio::test]
async fn a_client_error_is_recorded_without_the_work_s_writes() {
    let t = storage::testing::sqlite(&[&MIGRATIONS]).await;
    one_tx::a_client_error_is_recorded_without_writes(&t.db, Path::Local).await;
}

#[tokio::test]
async fn a_server_error_leaves_nothing_behind() {
    let t = storage::testing::sqlite(&[&MIGRATIONS]).await;
    one_tx::a_server_error_leaves_nothing(&t.db, Path::Local).await;
}

/// A two-phase claim in flight (another request, through `begin`) makes the local path
/// answer 409 without running; once its lock has run out (its holder died), the local
/// path takes the key over and the dead holder can no longer record.
#[tokio::test]
async fn a_claim_in_flight_is_refused_then_taken_over_when_its_lock_runs_out() {
    let t = storage::testing::sqlite(&[&MIGRATIONS]).await;
    let db = &t.db;
    create_effects(db).await;
    let (idem, clock) = idempotency(db);
    let runs = Arc::new(AtomicUsize::new(0));
    let held = claim(&idem, &key("k"), &fingerprint("{}")).await;

    let busy = run_once(&idem, "k", 1, None, runs.clone()).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    clock.advance(Duration::from_secs(31));
    let (status, headers, _) = read(run_once(&idem, "k", 1, None, runs.clone()).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!headers.contains_key(REPLAYED_HEADER));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The dead holder wakes up: its record is fenced off, its write rolled back.
    let tx = db.begin_write().await.unwrap();
    let late = held.finish(tx, Ok(created(2))).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}

/// The same key with another body is refused (422) on the local path too.
#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let t = storage::testing::sqlite(&[&MIGRATIONS]).await;
    let db = &t.db;
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        run_once(&idem, "k", 1, None, runs.clone()).await.status(),
        StatusCode::CREATED
    );
    let other = idem
        .run_local("anonymous", &key("k"), &fingerprint("{\"x\":1}"), |_| {
            Ok(created(9))
        })
        .await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}

/// PostgreSQL has no local writer: the call says so (500) and writes nothing.
#[tokio::test]
async fn postgres_has_no_local_path() {
    let t = storage::testing::postgres(&[&MIGRATIONS]).await;
    let (idem, _) = idempotency(&t.db);
    assert!(!idem.writes_locally());
    let answer = idem
        .run_local("anonymous", &key("k"), &fingerprint("{}"), |_| {
            Ok(created(1))
        })
        .await;
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM idempotency_keys").await,
        0
    );
}
