//! `Idempotency::run`: claim, write and record in one transaction, on both backends; the
//! same properties for `run_local` (SQLite's rusqlite writer) in `local`, through
//! [`Path`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use idempotency::{Idempotency, MIGRATIONS, REPLAYED_HEADER};
use problem::{Kind, Problem};
use storage::Database;

use crate::helpers::{count, create_effects, created, fingerprint, idempotency, key, read};

storage::backend_tests!(&[&MIGRATIONS];
    concurrent_requests_with_one_key_write_once_and_the_rest_replay,
    a_client_error_is_recorded_without_the_work_s_writes,
    a_server_error_leaves_nothing_behind,
    the_key_decides_before_the_call_out,
);

/// Which one-transaction protocol a test drives.
#[derive(Debug, Clone, Copy)]
pub enum Path {
    /// `Idempotency::run`: sqlx, both backends.
    Tx,
    /// `Idempotency::run_local`: SQLite's rusqlite writer.
    Local,
}

async fn concurrent_requests_with_one_key_write_once_and_the_rest_replay(db: &Database) {
    one_key_writes_once_and_the_rest_replay(db, Path::Tx).await;
}

async fn a_client_error_is_recorded_without_the_work_s_writes(db: &Database) {
    a_client_error_is_recorded_without_writes(db, Path::Tx).await;
}

async fn a_server_error_leaves_nothing_behind(db: &Database) {
    a_server_error_leaves_nothing(db, Path::Tx).await;
}

/// Inserts effect `id` in the work's transaction and answers 201, or fails with `fail`.
pub async fn run_once(
    idem: &Idempotency,
    path: Path,
    raw_key: &str,
    id: i64,
    fail: Option<Kind>,
    runs: Arc<AtomicUsize>,
) -> axum::response::Response {
    let (k, fp) = (key(raw_key), fingerprint("{}"));
    if let Path::Local = path {
        return idem
            .run_local("anonymous", &k, &fp, move |conn| {
                runs.fetch_add(1, Ordering::SeqCst);
                conn.execute("INSERT INTO effects (id) VALUES (?1)", [id])
                    .map_err(Problem::internal)?;
                match fail {
                    Some(kind) => Err(Problem::new(kind).with_detail("refused")),
                    None => Ok(created(id)),
                }
            })
            .await;
    }
    idem.run("anonymous", &k, &fp, |mut tx| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        let inserted = sqlx::query("INSERT INTO effects (id) VALUES ($1)")
            .bind(id)
            .execute(&mut *tx)
            .await;
        let result = match (inserted, fail) {
            (Err(err), _) => Err(Problem::internal(err)),
            (Ok(_), Some(kind)) => Err(Problem::new(kind).with_detail("refused")),
            (Ok(_), None) => Ok(created(id)),
        };
        (tx, result)
    })
    .await
}

pub async fn one_key_writes_once_and_the_rest_replay(db: &Database, path: Path) {
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (idem, runs) = (idem.clone(), runs.clone());
            tokio::spawn(
                async move { read(run_once(&idem, path, "one", i, None, runs).await).await },
            )
        })
        .collect();
    let (mut first, mut replays) = (Vec::new(), Vec::new());
    for task in tasks {
        let (status, headers, body) = task.await.unwrap();
        // One transaction holds the key until it commits: the others wait and replay
        // rather than hearing 409.
        assert_eq!(status, StatusCode::CREATED, "{body:?}");
        if headers.contains_key(REPLAYED_HEADER) {
            replays.push(body);
        } else {
            first.push(body);
        }
    }
    assert_eq!((first.len(), replays.len()), (1, 19));
    assert!(
        replays.iter().all(|b| *b == first[0]),
        "replays are byte-identical"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran once");
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}

pub async fn a_client_error_is_recorded_without_writes(db: &Database, path: Path) {
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let runs = Arc::new(AtomicUsize::new(0));
    let refused = run_once(
        &idem,
        path,
        "k",
        1,
        Some(Kind::ValidationFailed),
        runs.clone(),
    )
    .await;
    let (status, _, body) = read(refused).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM effects").await,
        0,
        "rolled back"
    );
    // A retry replays the refusal and does not run the work again.
    let (r_status, r_headers, r_body) =
        read(run_once(&idem, path, "k", 1, None, runs.clone()).await).await;
    assert_eq!((r_status, r_body), (status, body));
    assert_eq!(r_headers[REPLAYED_HEADER], "true");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 0);
}

pub async fn a_server_error_leaves_nothing(db: &Database, path: Path) {
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let runs = Arc::new(AtomicUsize::new(0));
    let failed = run_once(&idem, path, "k", 1, Some(Kind::Unavailable), runs.clone()).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(count(db, "SELECT COUNT(*) FROM idempotency_keys").await, 0);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 0);
    // The retry runs the work and writes.
    let (status, headers, _) = read(run_once(&idem, path, "k", 1, None, runs.clone()).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!headers.contains_key(REPLAYED_HEADER));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}

/// `run_after`: a request the key already answered is answered again (replay, or 422 for
/// a reused key) without calling out; a new one calls out first, and a failed call-out is
/// the answer, not remembered.
async fn the_key_decides_before_the_call_out(db: &Database) {
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let calls = Arc::new(AtomicUsize::new(0));
    let call_out = |result: Result<(), Problem>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            result
        }
    };
    let work = |id: i64| {
        move |mut tx: storage::WriteTx| async move {
            let wrote = sqlx::query("INSERT INTO effects (id) VALUES ($1)")
                .bind(id)
                .execute(&mut *tx)
                .await;
            let result = wrote.map(|_| created(id)).map_err(Problem::internal);
            (tx, result)
        }
    };
    let (k, fp) = (key("review-1"), fingerprint(r#"{"rating":5}"#));
    let first = idem
        .run_after("s", &k, &fp, call_out(Ok(())), work(1))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The dependency is down now: the answered request is replayed all the same.
    let down = || call_out(Err(Problem::new(Kind::Unavailable)));
    let (status, headers, _) = read(idem.run_after("s", &k, &fp, down(), work(1)).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[REPLAYED_HEADER], "true");
    let other = fingerprint(r#"{"rating":1}"#);
    let reused = idem.run_after("s", &k, &other, down(), work(2)).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no call-out for an answered key"
    );

    // A new request calls out; its failure is not recorded, so a retry calls out again.
    let new = key("review-2");
    let failed = idem.run_after("s", &new, &fp, down(), work(3)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let failed = idem.run_after("s", &new, &fp, down(), work(3)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
    let done = idem
        .run_after("s", &new, &fp, call_out(Ok(())), work(3))
        .await;
    assert_eq!(done.status(), StatusCode::CREATED);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 2);
}
