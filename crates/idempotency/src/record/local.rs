//! [`Idempotency::run`] on a SQLite file's rusqlite writer ([`storage::Writer`]): the
//! claim, the work, the record and the commit in one call on the writer's connection,
//! with no await while the write lock is held (why: `storage`'s writer module).
//!
//! The same statements and decisions as the sqlx path (`CLAIM`, `READ`, `TAKE_OVER`,
//! `RECORD`, `decide`); the idempotency tests run both paths, PostgreSQL's through sqlx
//! and SQLite's through here.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use problem::Problem;
use storage::rusqlite::{self, Connection, OptionalExtension, params};
use storage::{SqliteError, StoreError};

use super::{
    CLAIM, Clock, Decision, Idempotency, READ, RECORD, Row, Stored, TAKE_OVER, decide, in_use,
    millis, repeatable, replay, reused,
};
use crate::extract::IdempotentJson;
use crate::key::{Fingerprint, IdempotencyKey};

/// Why the transaction rolls back: the problem to answer with.
struct Abort(Problem);

impl From<SqliteError> for Abort {
    fn from(e: SqliteError) -> Self {
        Abort(StoreError::from(e).into())
    }
}

impl From<rusqlite::Error> for Abort {
    fn from(e: rusqlite::Error) -> Self {
        Abort::from(SqliteError::from(e))
    }
}

impl Idempotency {
    /// Whether this store's database has a rusqlite writer (a SQLite file), so that
    /// [`Idempotency::execute_local`] can run.
    pub fn writes_locally(&self) -> bool {
        self.db.local_writer().is_some()
    }

    /// [`Idempotency::execute`] with the work as a synchronous function on the SQLite
    /// file's rusqlite writer: claim, `work`, record and commit in one transaction,
    /// without an await in between. `work` writes through the connection it is given (a
    /// savepoint inside the transaction) and returns the response, whose body must be in
    /// memory (a `Json` or bytes body). Same protocol and answers as
    /// [`Idempotency::run`]; only for databases that [`writes_locally`].
    ///
    /// [`writes_locally`]: Idempotency::writes_locally
    pub async fn execute_local<T, W>(&self, request: &IdempotentJson<T>, work: W) -> Response
    where
        W: FnOnce(&Connection) -> Result<Response, Problem> + Send + 'static,
    {
        self.run_local(&request.scope, &request.key, &request.fingerprint, work)
            .await
    }

    /// [`Idempotency::run`] on the rusqlite writer (see [`Idempotency::execute_local`]).
    pub async fn run_local<W>(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        work: W,
    ) -> Response
    where
        W: FnOnce(&Connection) -> Result<Response, Problem> + Send + 'static,
    {
        let Some(writer) = self.db.local_writer() else {
            return Problem::internal(std::io::Error::other(
                "run_local on a database without a rusqlite writer",
            ))
            .into_response();
        };
        let claim = LocalClaim {
            scope: scope.to_owned(),
            key: key.as_str().to_owned(),
            fingerprint: fingerprint.as_str().to_owned(),
            clock: Arc::clone(&self.clock),
            lock_timeout: millis(self.settings.lock_timeout),
            ttl: millis(self.settings.ttl),
        };
        // The work may run in another request's task (the writer commits a group of them
        // at once) or on the blocking pool: it runs in this request's context, so a
        // refusal it records names this request (correlation ID, instance).
        let ctx = telemetry::context::current();
        let written = writer
            .write(move |tx: &mut rusqlite::Savepoint<'_>| match ctx {
                Some(ctx) => telemetry::context::sync_scope(ctx, || claim.run(tx, work)),
                None => claim.run(tx, work),
            })
            .await;
        match written {
            Ok(response) => response,
            Err(Abort(problem)) => problem.into_response(),
        }
    }
}

/// One request's claim, owned, for the writer's connection.
struct LocalClaim {
    scope: String,
    key: String,
    fingerprint: String,
    clock: Arc<dyn Clock>,
    lock_timeout: i64,
    ttl: i64,
}

impl LocalClaim {
    /// Inside the writer's transaction: `Ok` commits, `Err` rolls back.
    fn run<W>(self, tx: &mut rusqlite::Savepoint<'_>, work: W) -> Result<Response, Abort>
    where
        W: FnOnce(&Connection) -> Result<Response, Problem>,
    {
        let token = match self.claim(tx)? {
            Claimed::Token(token) => token,
            // Nothing written: committing the empty transaction is harmless.
            Claimed::Replay(response) => return Ok(response),
        };
        // The work in a savepoint: a refusal undoes it and keeps the claim, to record.
        let mut savepoint = tx.savepoint()?;
        let outcome = work(&savepoint);
        let (stored, extensions) = match outcome {
            Ok(response) => {
                savepoint.commit()?;
                capture_now(response)?
            }
            Err(problem) => {
                savepoint.rollback()?;
                drop(savepoint);
                if !repeatable(&problem) {
                    // Rolls the claim back too: a retry runs again.
                    return Err(Abort(problem));
                }
                capture_now(problem.into_response())?
            }
        };
        let recorded = tx.prepare_cached(RECORD)?.execute(params![
            i64::from(stored.status.as_u16()),
            stored.headers_json(),
            stored.body.as_ref(),
            self.scope,
            self.key,
            token,
        ])?;
        if recorded != 1 {
            // Our own claim, in our own transaction, under the write lock: cannot happen.
            return Err(Abort(Problem::internal(std::io::Error::other(
                "the idempotency claim vanished inside its own transaction",
            ))));
        }
        Ok(stored.into_response_with(extensions))
    }

    /// [`Idempotency::claim_on`]'s protocol, under the write lock: nobody can change the
    /// row between the read and the take-over, so one pass decides.
    fn claim(&self, conn: &Connection) -> Result<Claimed, Abort> {
        let now = self.clock.now_millis();
        let token = uuid::Uuid::new_v4().to_string();
        let locked_until = now.saturating_add(self.lock_timeout);
        let expires_at = now.saturating_add(self.ttl);
        let inserted = conn.prepare_cached(CLAIM)?.execute(params![
            self.scope,
            self.key,
            self.fingerprint,
            token,
            locked_until,
            now,
            expires_at,
        ])?;
        if inserted == 1 {
            return Ok(Claimed::Token(token));
        }
        let row = conn
            .prepare_cached(READ)?
            .query_row(params![self.scope, self.key], |r| {
                Ok(Row {
                    fingerprint: r.get(0)?,
                    state: r.get(1)?,
                    claim_token: r.get(2)?,
                    locked_until: r.get(3)?,
                    status: r.get(4)?,
                    headers: r.get(5)?,
                    body: r.get(6)?,
                    expires_at: r.get(7)?,
                })
            })
            .optional()?;
        // The insert conflicted with a row that is there: we hold the write lock.
        let Some(row) = row else {
            return Err(Abort(in_use()));
        };
        match decide(&row, &self.fingerprint, now) {
            Decision::Reused => return Err(Abort(reused())),
            Decision::InUse => return Err(Abort(in_use())),
            Decision::Replay => return replay(row).map(Claimed::Replay).map_err(Abort),
            Decision::TakeOver => {}
        }
        let taken = conn.prepare_cached(TAKE_OVER)?.execute(params![
            self.fingerprint,
            token,
            locked_until,
            now,
            expires_at,
            self.scope,
            self.key,
            row.claim_token,
            row.state,
        ])?;
        if taken == 1 {
            Ok(Claimed::Token(token))
        } else {
            Err(Abort(in_use()))
        }
    }
}

enum Claimed {
    Token(String),
    Replay(Response),
}

/// `response` as the record keeps it (see `Stored::capture`), without awaiting.
fn capture_now(response: Response) -> Result<(Stored, http::Extensions), Abort> {
    let (parts, body) = response.into_parts();
    let bytes = body_now(body).map_err(Abort)?;
    Ok((
        Stored::capture(parts.status, &parts.headers, bytes),
        parts.extensions,
    ))
}

/// The bytes of a body that is already in memory (our handlers' `Json` and byte
/// bodies), without awaiting: the writer's transaction must not yield.
fn body_now(body: Body) -> Result<Bytes, Problem> {
    let collect = pin!(axum::body::to_bytes(body, usize::MAX));
    match collect.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(bytes)) => Ok(bytes),
        Poll::Ready(Err(err)) => Err(Problem::internal(err)),
        Poll::Pending => Err(Problem::internal(std::io::Error::other(
            "a response body written on the rusqlite writer was not in memory",
        ))),
    }
}
