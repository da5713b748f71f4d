//! A POST handler built the way services will build theirs, driven through a router with
//! `oneshot`, on both backends.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{Request, StatusCode, header};
use idempotency::{Begin, Idempotency, IdempotentJson, MIGRATIONS, REPLAYED_HEADER};
use problem::{Kind, Problem, ProblemBody};
use storage::{Database, StoreError};
use tower::ServiceExt;

use crate::helpers::{count, create_effects, idempotency, read};

storage::backend_tests!(&[&MIGRATIONS];
    a_post_handler_writes_once_and_replays,
);

#[derive(Clone)]
struct AppState {
    db: Database,
    idem: Idempotency,
}

#[derive(serde::Deserialize)]
struct NewThing {
    id: i64,
}

async fn create_thing(State(app): State<AppState>, req: IdempotentJson<NewThing>) -> Response {
    let claim = match app.idem.begin(&req.scope, &req.key, &req.fingerprint).await {
        Ok(Begin::Claimed(claim)) => claim,
        Ok(Begin::Replay(response)) => return response,
        Err(problem) => return problem.into_response(),
    };
    let mut tx = match app.db.begin_write().await {
        Ok(tx) => tx,
        Err(err) => {
            claim.release().await;
            return Problem::from(StoreError::from(err)).into_response();
        }
    };
    let result = sqlx::query("INSERT INTO effects (id) VALUES ($1)")
        .bind(req.body.id)
        .execute(&mut *tx)
        .await
        .map(|_| {
            (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/v1/things/{}", req.body.id))],
                axum::Json(serde_json::json!({ "id": req.body.id })),
            )
                .into_response()
        })
        .map_err(|err| Problem::from(StoreError::from(err)));
    claim.finish(tx, result).await
}

fn post_thing(key: &str, body: &str) -> Request<Body> {
    Request::post("/v1/things")
        .header("idempotency-key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn a_post_handler_writes_once_and_replays(db: &Database) {
    create_effects(db).await;
    let (idem, _) = idempotency(db);
    let app = Router::new()
        .route("/v1/things", post(create_thing))
        .with_state(AppState {
            db: db.clone(),
            idem,
        });

    let first = app
        .clone()
        .oneshot(post_thing("k-1", r#"{"id":5}"#))
        .await
        .unwrap();
    let (status, headers, body) = read(first).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[header::LOCATION], "/v1/things/5");
    assert!(headers.get(REPLAYED_HEADER).is_none());

    // The quoted form of the draft names the same key.
    let retry = app
        .clone()
        .oneshot(post_thing("\"k-1\"", r#"{"id":5}"#))
        .await
        .unwrap();
    let (r_status, r_headers, r_body) = read(retry).await;
    assert_eq!((r_status, &r_body), (status, &body));
    assert_eq!(r_headers[REPLAYED_HEADER], "true");
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);

    // Same key, another body: refused, nothing written.
    let reused = app.oneshot(post_thing("k-1", r#"{"id":6}"#)).await.unwrap();
    let (status, _, body) = read(reused).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let problem: ProblemBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem.type_uri, Kind::IdempotencyKeyReused.type_uri());
    assert_eq!(count(db, "SELECT COUNT(*) FROM effects").await, 1);
}
