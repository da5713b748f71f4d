//! Begin and finish against both backends: claims, replays, refusals, expiry and crashes.

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use http::{StatusCode, header};
use idempotency::{Begin, Idempotency, IdempotencySettings, MIGRATIONS, Pause, REPLAYED_HEADER};
use problem::{FieldError, Kind, Problem};
use storage::Database;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    claim, count, create_effects, created, fingerprint, idempotency, key, read, refused, replay,
    write_effect,
};

storage::backend_tests!(&[&MIGRATIONS];
    a_retry_replays_the_stored_response_byte_for_byte,
    a_different_request_with_the_same_key_is_refused,
    a_key_in_flight_is_in_use_until_its_lock_times_out,
    a_claim_taken_over_cannot_commit_its_write,
    a_take_over_that_loses_to_the_holder_s_completion_replays_it,
    server_errors_release_the_key,
    client_errors_are_recorded_and_replayed,
    the_effect_and_its_record_commit_together,
    a_crash_between_phases_leaves_only_a_lock,
    one_of_a_hundred_concurrent_requests_claims,
    expired_keys_are_new_again_and_purged,
    records_survive_reopening_the_database,
    the_purger_runs_until_stopped,
);

async fn a_retry_replays_the_stored_response_byte_for_byte(db: &Database) {
    let (idem, _) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint(r#"{"name":"thing"}"#));
    let first = claim(&idem, &k, &fp).await;
    let tx = db.begin_write().await.unwrap();
    let (status, headers, body) = read(first.finish(tx, Ok(created(7))).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(&body[..], br#"{"id":7,"name":"thing"}"#);
    assert!(headers.get(REPLAYED_HEADER).is_none());
    // What finish returns is what the record holds: only the headers that matter.
    assert!(headers.get(header::CACHE_CONTROL).is_none());

    let (r_status, r_headers, r_body) = read(replay(&idem, &k, &fp).await).await;
    assert_eq!(r_status, status);
    assert_eq!(r_body, body);
    for name in [header::CONTENT_TYPE, header::LOCATION, header::ETAG] {
        assert_eq!(r_headers.get(&name), headers.get(&name), "{name}");
    }
    assert_eq!(r_headers[header::LOCATION], "/v1/things/7");
    assert_eq!(r_headers[REPLAYED_HEADER], "true");
    assert_eq!(r_headers.len(), headers.len() + 1);

    // An empty body is stored as empty, not as "no response".
    let (k2, fp2) = (key("delete-1"), fingerprint(""));
    let second = claim(&idem, &k2, &fp2).await;
    let tx = db.begin_write().await.unwrap();
    second
        .finish(tx, Ok(StatusCode::NO_CONTENT.into_response()))
        .await;
    let (status, _, body) = read(replay(&idem, &k2, &fp2).await).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
}

async fn a_different_request_with_the_same_key_is_refused(db: &Database) {
    let (idem, _) = idempotency(db);
    let k = key("order-1");
    let (fp, other) = (fingerprint(r#"{"qty":1}"#), fingerprint(r#"{"qty":2}"#));
    let first = claim(&idem, &k, &fp).await;
    // Even while the first request runs.
    refused(&idem, &k, &other, Kind::IdempotencyKeyReused).await;
    let tx = db.begin_write().await.unwrap();
    let (_, _, body) = read(first.finish(tx, Ok(created(1))).await).await;

    let problem = refused(&idem, &k, &other, Kind::IdempotencyKeyReused).await;
    assert_eq!(
        problem.into_response().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // The record is untouched: the original request still replays.
    let (status, _, replayed) = read(replay(&idem, &k, &fp).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replayed, body);
    // The same key in another client's scope is another key.
    assert!(matches!(
        idem.begin("client-b", &k, &other).await.unwrap(),
        Begin::Claimed(_)
    ));
}

async fn a_key_in_flight_is_in_use_until_its_lock_times_out(db: &Database) {
    let (idem, clock) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let _crashed = claim(&idem, &k, &fp).await;

    let problem = refused(&idem, &k, &fp, Kind::IdempotencyKeyInUse).await;
    assert_eq!(problem.retry_after(), Some(Duration::from_secs(1)));
    let response = problem.into_response();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");

    clock.advance(Duration::from_secs(29));
    refused(&idem, &k, &fp, Kind::IdempotencyKeyInUse).await;

    // Lock timed out: of the retries racing to take over, exactly one wins.
    clock.advance(Duration::from_secs(1));
    let takers: Vec<_> = (0..10)
        .map(|_| {
            let (idem, k, fp) = (idem.clone(), k.clone(), fp.clone());
            tokio::spawn(async move { idem.begin("anonymous", &k, &fp).await })
        })
        .collect();
    let (mut claimed, mut in_use) = (0, 0);
    for taker in takers {
        match taker.await.unwrap() {
            Ok(Begin::Claimed(_)) => claimed += 1,
            Err(p) if p.kind() == Kind::IdempotencyKeyInUse => in_use += 1,
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!((claimed, in_use), (1, 9));
}

async fn a_claim_taken_over_cannot_commit_its_write(db: &Database) {
    create_effects(db).await;
    let (idem, clock) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let slow = claim(&idem, &k, &fp).await;
    clock.advance(Duration::from_secs(31));
    let retry = claim(&idem, &k, &fp).await;

    // The slow first attempt finally finishes: its write must not land.
    let tx = write_effect(db, 1).await;
    let response = slow.finish(tx, Ok(created(1))).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 0);

    let tx = write_effect(db, 2).await;
    let (_, _, body) = read(retry.finish(tx, Ok(created(2))).await).await;
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
    assert_eq!(read(replay(&idem, &k, &fp).await).await.2, body);
}

/// Issue 13, bug 1: the holder outlives its lock, a retry reads the row and decides to
/// take over, and the holder completes before the retry's compare-and-set. The retry must
/// replay the holder's answer, not wipe it and run the write a second time.
async fn a_take_over_that_loses_to_the_holder_s_completion_replays_it(db: &Database) {
    create_effects(db).await;
    let (idem, clock) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let holder = claim(&idem, &k, &fp).await;
    clock.advance(Duration::from_secs(31));

    // The retry, as another process would be: its own pool, paused at the take-over.
    let other = Database::open(db.url(), &settings::PoolSettings::default(), &[&MIGRATIONS])
        .await
        .unwrap();
    let pause = Arc::new(Pause::default());
    let retrying = Idempotency::new(other.clone(), IdempotencySettings::default())
        .with_clock(clock.clone())
        .with_take_over_pause(pause.clone());
    let retry = tokio::spawn({
        let (k, fp) = (k.clone(), fp.clone());
        async move { retrying.begin("anonymous", &k, &fp).await }
    });
    tokio::time::timeout(Duration::from_secs(10), pause.reached.notified())
        .await
        .expect("the retry never reached its take-over");

    // Meanwhile the holder finishes its write and records its answer.
    let tx = write_effect(db, 1).await;
    let (status, _, body) = read(holder.finish(tx, Ok(created(1))).await).await;
    assert_eq!(status, StatusCode::CREATED);

    pause.resume.notify_one();
    let outcome = tokio::time::timeout(Duration::from_secs(10), retry)
        .await
        .expect("the retry never finished")
        .unwrap();
    match outcome {
        Ok(Begin::Replay(response)) => assert_eq!(read(response).await.2, body),
        Ok(Begin::Claimed(_)) => panic!("the retry took over a completed key: a second write"),
        Err(problem) => panic!("the retry was refused: {problem:?}"),
    }
    // The holder's answer stands, and the write happened once.
    assert_eq!(read(replay(&idem, &k, &fp).await).await.2, body);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
    other.close().await;
}

async fn server_errors_release_the_key(db: &Database) {
    let (idem, _) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    for problem in [
        Problem::unavailable("the payment provider is down"),
        Problem::internal("boom"),
        // 4xx, but retryable: a retry may succeed, so it must run again.
        Problem::new(Kind::RateLimited),
    ] {
        let expected = problem.kind().http_status();
        let first = claim(&idem, &k, &fp).await;
        let tx = db.begin_write().await.unwrap();
        assert_eq!(first.finish(tx, Err(problem)).await.status(), expected);
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM idempotency_keys").await,
            0,
            "{expected}"
        );
    }
    // The retry runs the request for real.
    let retry = claim(&idem, &k, &fp).await;
    retry.release().await;
    claim(&idem, &k, &fp).await.release().await;
}

async fn client_errors_are_recorded_and_replayed(db: &Database) {
    let (idem, _) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint(r#"{"qty":0}"#));
    let first = claim(&idem, &k, &fp).await;
    let tx = db.begin_write().await.unwrap();
    let refusal = Problem::validation(vec![FieldError::new("qty", "must be at least 1")]);
    let (status, headers, body) = read(first.finish(tx, Err(refusal)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers[header::CONTENT_TYPE], problem::PROBLEM_JSON);

    let (r_status, r_headers, r_body) = read(replay(&idem, &k, &fp).await).await;
    assert_eq!(r_status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r_headers[header::CONTENT_TYPE], problem::PROBLEM_JSON);
    assert_eq!(r_headers[REPLAYED_HEADER], "true");
    assert_eq!(r_body, body);
    let problem: problem::ProblemBody = serde_json::from_slice(&r_body).unwrap();
    assert_eq!(problem.errors[0].field, "qty");
}

async fn the_effect_and_its_record_commit_together(db: &Database) {
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let first = claim(&idem, &k, &fp).await;
    let tx = write_effect(db, 1).await;
    let response = first.finish(tx, Ok(created(1))).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM idempotency_keys WHERE state = 'completed'"
        )
        .await,
        1
    );
    // A retry replays and writes nothing.
    replay(&idem, &k, &fp).await;
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);

    // A failed request's write is rolled back with it.
    let (k2, fp2) = (key("order-2"), fingerprint("{}"));
    let second = claim(&idem, &k2, &fp2).await;
    let tx = write_effect(db, 2).await;
    second
        .finish(tx, Err(Problem::new(Kind::BusinessRuleViolated)))
        .await;
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}

async fn a_crash_between_phases_leaves_only_a_lock(db: &Database) {
    create_effects(db).await;
    let (idem, clock) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let crashed = claim(&idem, &k, &fp).await;
    let tx = write_effect(db, 1).await;
    // The process dies mid-request: neither the transaction nor the claim finishes.
    drop(tx);
    drop(crashed);

    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 0);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM idempotency_keys WHERE state = 'completed'"
        )
        .await,
        0
    );
    refused(&idem, &k, &fp, Kind::IdempotencyKeyInUse).await;
    clock.advance(Duration::from_secs(30));
    let retry = claim(&idem, &k, &fp).await;
    let tx = write_effect(db, 1).await;
    assert_eq!(
        retry.finish(tx, Ok(created(1))).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}

async fn one_of_a_hundred_concurrent_requests_claims(db: &Database) {
    let (idem, _) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (idem, k, fp) = (idem.clone(), k.clone(), fp.clone());
            tokio::spawn(async move { idem.begin("anonymous", &k, &fp).await })
        })
        .collect();
    let (mut claimed, mut in_use) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Begin::Claimed(claim)) => claimed.push(claim),
            Err(p) if p.kind() == Kind::IdempotencyKeyInUse => in_use += 1,
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!((claimed.len(), in_use), (1, 99));
    assert_eq!(count(db, "SELECT COUNT(*) FROM idempotency_keys").await, 1);
}

async fn expired_keys_are_new_again_and_purged(db: &Database) {
    let (idem, clock) = idempotency(db);
    let day = Duration::from_secs(24 * 60 * 60);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let first = claim(&idem, &k, &fp).await;
    let tx = db.begin_write().await.unwrap();
    first.finish(tx, Ok(created(1))).await;

    clock.advance(day - Duration::from_millis(1));
    assert_eq!(idem.purge_expired().await.unwrap(), 0);
    replay(&idem, &k, &fp).await;

    // Expired: even before the purger runs, no replay is served; the key is claimed anew.
    clock.advance(Duration::from_millis(1));
    let again = claim(&idem, &k, &fp).await;
    again.release().await;

    // A finished key whose day is up is purged, and is then free for any request.
    let (k2, fp2) = (key("order-2"), fingerprint("{}"));
    let second = claim(&idem, &k2, &fp2).await;
    let tx = db.begin_write().await.unwrap();
    second.finish(tx, Ok(created(2))).await;
    clock.advance(day);
    assert_eq!(idem.purge_expired().await.unwrap(), 1);
    assert_eq!(count(db, "SELECT COUNT(*) FROM idempotency_keys").await, 0);
    claim(&idem, &k2, &fingerprint(r#"{"other":true}"#))
        .await
        .release()
        .await;
}

async fn records_survive_reopening_the_database(db: &Database) {
    let (idem, clock) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let first = claim(&idem, &k, &fp).await;
    let tx = db.begin_write().await.unwrap();
    let (_, _, body) = read(first.finish(tx, Ok(created(1))).await).await;
    db.close().await;

    // A restart (or another process): a new pool on the same database.
    let reopened = Database::open(db.url(), &settings::PoolSettings::default(), &[&MIGRATIONS])
        .await
        .unwrap();
    let idem = Idempotency::new(reopened.clone(), IdempotencySettings::default()).with_clock(clock);
    let (_, headers, replayed) = read(replay(&idem, &k, &fp).await).await;
    assert_eq!(replayed, body);
    assert_eq!(headers[REPLAYED_HEADER], "true");
    reopened.close().await;
}

async fn the_purger_runs_until_stopped(db: &Database) {
    let (idem, clock) = idempotency(db);
    let (k, fp) = (key("order-1"), fingerprint("{}"));
    let first = claim(&idem, &k, &fp).await;
    let tx = db.begin_write().await.unwrap();
    first.finish(tx, Ok(created(1))).await;
    clock.advance(Duration::from_secs(24 * 60 * 60));

    let stop = CancellationToken::new();
    let purger = tokio::spawn(
        idem.clone()
            .run_purger(Duration::from_secs(3600), stop.clone()),
    );
    // Its first round runs at once; wait for it without sleeping (bounded, not timed).
    tokio::time::timeout(Duration::from_secs(10), async {
        while count(db, "SELECT COUNT(*) FROM idempotency_keys").await > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the purger's first round deletes the expired key");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), purger)
        .await
        .expect("the purger stops when cancelled")
        .unwrap();
}
