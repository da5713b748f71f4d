//! Stripe-style `Idempotency-Key`s for every service's POST handlers: a retried request
//! gets the first attempt's response, byte for byte, and never writes twice.
//!
//! Keys live in the service's own database (`idempotency_keys`, [`MIGRATIONS`]), unique
//! per client scope by primary key, so the guarantee holds across restarts and across
//! processes. A write whose work is all in the service's database runs in one
//! transaction ([`Idempotency::run`], which [`Idempotency::execute`] and `execute_grpc`
//! use): claim, write and record commit together or not at all, and a concurrent request
//! with the same key waits and replays. Work that calls other services first takes two
//! phases, so the database's write lock is not held meanwhile:
//!
//! 1. [`Idempotency::begin`] claims the key with one autocommit insert (or replays the
//!    stored response, or refuses with 409 in use / 422 reused);
//! 2. [`Claim::finish`] stores the response in the transaction that holds the write and
//!    commits both. A crash in between leaves only a claim that times out.
//!
//! ```no_run
//! use axum::response::{IntoResponse, Response};
//! use idempotency::{Begin, Idempotency, IdempotentJson};
//! use problem::Problem;
//! use storage::{Database, StoreError};
//!
//! async fn create(idem: &Idempotency, db: &Database, req: IdempotentJson<serde_json::Value>) -> Response {
//!     let claim = match idem.begin(&req.scope, &req.key, &req.fingerprint).await {
//!         Ok(Begin::Claimed(claim)) => claim,
//!         Ok(Begin::Replay(response)) => return response,
//!         Err(problem) => return problem.into_response(),
//!     };
//!     let mut tx = match db.begin_write().await {
//!         Ok(tx) => tx,
//!         Err(err) => {
//!             claim.release().await;
//!             return Problem::from(StoreError::from(err)).into_response();
//!         }
//!     };
//!     let result = sqlx::query("INSERT INTO things (body) VALUES ($1)")
//!         .bind(req.body.to_string())
//!         .execute(&mut *tx)
//!         .await
//!         .map(|_| (http::StatusCode::CREATED, "created").into_response())
//!         .map_err(|err| Problem::from(StoreError::from(err)));
//!     claim.finish(tx, result).await
//! }
//! ```
#![forbid(unsafe_code)]

mod extract;
mod graphql;
mod grpc;
mod key;
mod keyed;
mod record;

pub use extract::IdempotentJson;
pub use graphql::GraphqlWrite;
pub use key::{ClientScope, Fingerprint, HEADER, IdempotencyKey, REPLAYED_HEADER};
pub use keyed::{GrpcWrite, Keyed};
pub use record::{
    Begin, Claim, Clock, Idempotency, IdempotencySettings, MIGRATIONS, Pause, SystemClock,
};
