//! The record of each key in the service's own database, and the two phases around a
//! request's write: [`Idempotency::begin`] claims the key, [`Claim::finish`] stores the
//! response in the write's own transaction.

mod local;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use problem::{Kind, Problem};
use sqlx::{Any, AnyConnection, Executor, FromRow};
use storage::{Database, Migrations, StoreError, WriteTx};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::extract::IdempotentJson;
use crate::key::{Fingerprint, IdempotencyKey, REPLAYED_HEADER};

/// The `idempotency_keys` table. Every service that takes POSTs adds these to its own.
pub static MIGRATIONS: Migrations = Migrations {
    owner: "idempotency",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

/// The response headers a replay must repeat; the rest (date, correlation, tracing)
/// describe the delivery, not the result.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

// The statements of a claim and its record, shared by sqlx (`Idempotency::claim_on`,
// `Claim::record`) and the rusqlite writer (`local`). `$n` parameters appear in order, so
// rusqlite's positional binding matches sqlx's.

/// Claims a new key: the primary key decides who is first, across tasks and processes.
pub(crate) const CLAIM: &str = "INSERT INTO idempotency_keys \
       (scope, key, fingerprint, state, claim_token, locked_until, created_at, expires_at) \
     VALUES ($1, $2, $3, 'in_flight', $4, $5, $6, $7) \
     ON CONFLICT (scope, key) DO NOTHING";

/// The row a losing claim decides on.
pub(crate) const READ: &str = "SELECT fingerprint, state, claim_token, locked_until, status, \
       headers, body, expires_at \
     FROM idempotency_keys WHERE scope = $1 AND key = $2";

/// Takes over a forgotten key or a dead holder's claim: a compare-and-set on what was read.
pub(crate) const TAKE_OVER: &str = "UPDATE idempotency_keys SET fingerprint = $1, \
       state = 'in_flight', claim_token = $2, locked_until = $3, status = NULL, \
       headers = NULL, body = NULL, created_at = $4, expires_at = $5 \
     WHERE scope = $6 AND key = $7 AND claim_token = $8 AND state = $9";

/// Completes our claim with its response (fenced by the claim's token).
pub(crate) const RECORD: &str = "UPDATE idempotency_keys SET state = 'completed', status = $1, \
       headers = $2, body = $3 \
     WHERE scope = $4 AND key = $5 AND claim_token = $6 AND state = 'in_flight'";

/// What a client that hits a key in use is told to wait.
const IN_USE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often `begin` goes round when the row changes under it (released, purged or taken
/// over between its statements) before it tells the client to come back.
const ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct IdempotencySettings {
    /// How long a key is remembered after its first use; an expired key is new again.
    pub ttl: Duration,
    /// How long a claim holds the key. A claim whose holder crashed is taken over by a
    /// retry after this; it must exceed the slowest request, or a retry may run while the
    /// first is still going (its write is then refused, see [`Claim::finish`]).
    pub lock_timeout: Duration,
}

impl From<&settings::IdempotencySettings> for IdempotencySettings {
    fn from(configured: &settings::IdempotencySettings) -> Self {
        Self {
            ttl: configured.ttl,
            lock_timeout: configured.lock_timeout,
        }
    }
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 60 * 60),
            lock_timeout: Duration::from_secs(30),
        }
    }
}

/// The time expiry is measured by. Tests inject a manual clock instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Unix milliseconds, as stored in the table.
    fn now_millis(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        storage::now_millis()
    }
}

/// The idempotency store of one service's database. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    db: Database,
    settings: IdempotencySettings,
    clock: Arc<dyn Clock>,
    /// A test seam: where a take-over stops between reading the row and updating it.
    take_over_pause: Option<Arc<Pause>>,
}

/// A place where a claim stops until a test lets it go: it signals `reached`, then waits
/// for `resume`. Only tests set one ([`Idempotency::with_take_over_pause`]), to interleave
/// another request at exactly that point.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Pause {
    pub reached: tokio::sync::Notify,
    pub resume: tokio::sync::Notify,
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("db", &self.db)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What to do with a request, as decided by [`Idempotency::begin`].
#[derive(Debug)]
pub enum Begin {
    /// The key already answered this request: send this (it carries
    /// `Idempotent-Replayed: true`) and do nothing else.
    Replay(Response),
    /// The key is ours: do the write and hand its transaction to [`Claim::finish`].
    Claimed(Claim),
}

/// The right to run one request for a key, until `lock_timeout` passes.
///
/// Dropping it without [`finish`](Claim::finish) or [`release`](Claim::release) (a crash,
/// a panic) leaves the key locked until the lock times out; then a retry takes it over.
#[derive(Debug)]
#[must_use = "finish or release the claim, or the key stays locked until the lock times out"]
pub struct Claim {
    db: Database,
    scope: String,
    key: String,
    /// Fences the record: every statement on behalf of this claim matches the token, so
    /// a claim that was taken over after its lock expired can no longer write.
    token: String,
    /// The claim's row was written in the write's own transaction ([`Idempotency::run`]):
    /// rolling that back releases the key, and nothing else holds it.
    in_tx: bool,
}

/// What [`Idempotency::claim_on`] got.
enum Claimed {
    Token(String),
    Replay(Response),
}

/// What [`Idempotency::claim_in_tx`] got: the transaction with the claim in it, or the
/// answer to send without one (the transaction is gone).
enum InTx {
    Claimed(WriteTx, Claim),
    Answered(Response),
}

#[derive(FromRow)]
pub(crate) struct Row {
    pub(crate) fingerprint: String,
    pub(crate) state: String,
    pub(crate) claim_token: String,
    pub(crate) locked_until: i64,
    pub(crate) status: Option<i64>,
    pub(crate) headers: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) expires_at: i64,
}

impl Idempotency {
    pub fn new(db: Database, settings: IdempotencySettings) -> Self {
        Self {
            db,
            settings,
            clock: Arc::new(SystemClock),
            take_over_pause: None,
        }
    }

    /// A test seam: every take-over pauses at `pause` after reading the row it takes over
    /// and before its compare-and-set.
    #[doc(hidden)]
    pub fn with_take_over_pause(mut self, pause: Arc<Pause>) -> Self {
        self.take_over_pause = Some(pause);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &IdempotencySettings {
        &self.settings
    }

    /// The service database the keys (and the writes they protect) live in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The whole protocol for one idempotent write, for handlers: see [`Idempotency::run`].
    pub async fn execute<T, F, Fut>(&self, request: &IdempotentJson<T>, work: F) -> Response
    where
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<Response, Problem>)>,
    {
        self.run(&request.scope, &request.key, &request.fingerprint, work)
            .await
    }

    /// [`execute`](Idempotency::execute) for a write that must first ask another service
    /// (`call_out`, e.g. "does this user exist?"): the key's replay and conflict decisions
    /// come first, so a retry of a request already answered gets its stored answer (and a
    /// reused key its 422) even while that service is down. Only then `call_out` runs —
    /// holding no claim and no write lock — and, if it passes, the write runs as
    /// `execute`'s (which decides again, for a request with the key that came meanwhile).
    /// A `call_out` error is the answer, not recorded: a retry asks again.
    pub async fn execute_after<T, C, F, Fut>(
        &self,
        request: &IdempotentJson<T>,
        call_out: C,
        work: F,
    ) -> Response
    where
        C: Future<Output = Result<(), Problem>>,
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<Response, Problem>)>,
    {
        self.run_after(
            &request.scope,
            &request.key,
            &request.fingerprint,
            call_out,
            work,
        )
        .await
    }

    /// [`run`](Idempotency::run) after `call_out`, with the key's decisions first: see
    /// [`execute_after`](Idempotency::execute_after).
    pub async fn run_after<C, F, Fut>(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        call_out: C,
        work: F,
    ) -> Response
    where
        C: Future<Output = Result<(), Problem>>,
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<Response, Problem>)>,
    {
        if let Some(answer) = self.answered(scope, key, fingerprint).await {
            return answer;
        }
        if let Err(problem) = call_out.await {
            return problem.into_response();
        }
        self.run(scope, key, fingerprint, work).await
    }

    /// A write whose effect is not in this database (a broker's move): [`begin`]
    /// (a concurrent request with the key hears 409, another request under it 422, a
    /// finished one replays), then `work` holding the claim and no lock, then its answer
    /// recorded ([`Claim::finish`]). A crash between the effect and the record leaves the
    /// claim to its lock timeout: a retry after that runs `work` again.
    ///
    /// [`begin`]: Idempotency::begin
    pub async fn run_claimed<W>(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        work: W,
    ) -> Response
    where
        W: Future<Output = Result<Response, Problem>>,
    {
        let claim = match self.begin(scope, key, fingerprint).await {
            Ok(Begin::Claimed(claim)) => claim,
            Ok(Begin::Replay(response)) => return response,
            Err(problem) => return problem.into_response(),
        };
        match work.await {
            Ok(answer) => match self.db.begin_write().await {
                Ok(tx) => claim.finish(tx, Ok(answer)).await,
                Err(err) => {
                    claim.release().await;
                    db_problem(err).into_response()
                }
            },
            // Recorded (a client error a retry would repeat) or released, as `finish`
            // does, without a transaction to open and roll back.
            Err(problem) => claim.fail(problem).await,
        }
    }

    /// [`run_after`](Idempotency::run_after) with the write on a SQLite file's rusqlite
    /// writer ([`run_local`](Idempotency::run_local)): the key's decisions, then
    /// `call_out` holding no claim and no lock, then claim, work and record in one
    /// synchronous call.
    pub async fn run_after_local<C, W>(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        call_out: C,
        work: W,
    ) -> Response
    where
        C: Future<Output = Result<(), Problem>>,
        W: FnOnce(&storage::rusqlite::Connection) -> Result<Response, Problem> + Send + 'static,
    {
        if let Some(answer) = self.answered(scope, key, fingerprint).await {
            return answer;
        }
        if let Err(problem) = call_out.await {
            return problem.into_response();
        }
        self.run_local(scope, key, fingerprint, work).await
    }

    /// The answer `key` already has for this request, if any: the stored response of a
    /// completed request with the same fingerprint (a replay), or the refusal of a key
    /// used for another request. `None` when the key is new, in flight or forgotten, or
    /// the record cannot be read now: the claim decides then.
    async fn answered(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Option<Response> {
        let row: Row = sqlx::query_as(READ)
            .bind(scope)
            .bind(key.as_str())
            .fetch_optional(self.db.pool())
            .await
            .ok()??;
        match decide(&row, fingerprint.as_str(), self.clock.now_millis()) {
            Decision::Replay => Some(replay(row).unwrap_or_else(IntoResponse::into_response)),
            Decision::Reused => Some(reused().into_response()),
            Decision::InUse | Decision::TakeOver => None,
        }
    }

    /// One idempotent write whose work is all in this database, in **one transaction**:
    /// open a write transaction, claim the key in it (or answer with the replay or the
    /// refusal), let `work` write in it and produce the response, store the response,
    /// commit. `work` hands the transaction back with its result.
    ///
    /// Versus [`begin`](Idempotency::begin) then [`Claim::finish`] (two transactions):
    /// one write lock instead of two on SQLite, and a concurrent request with the same key
    /// waits for this one's commit and replays its answer instead of hearing 409. A crash
    /// leaves nothing behind (no claim to time out). Use the two phases when the work
    /// calls other services before it writes: a claim must not hold the write lock that
    /// long.
    ///
    /// `Err` from `work` rolls everything back; a client error a retry would repeat is
    /// then recorded in a transaction of its own so retries replay it, as with
    /// [`Claim::finish`].
    pub async fn run<F, Fut>(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        work: F,
    ) -> Response
    where
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<Response, Problem>)>,
    {
        let (tx, claim) = match self.claim_in_tx(scope, key, fingerprint).await {
            Ok(InTx::Claimed(tx, claim)) => (tx, claim),
            Ok(InTx::Answered(response)) => return response,
            Err(problem) => return problem.into_response(),
        };
        let (tx, result) = work(tx).await;
        match result {
            Ok(response) => claim.finish(tx, Ok(response)).await,
            Err(problem) => {
                rollback(tx).await;
                if !repeatable(&problem) {
                    return problem.into_response();
                }
                // The rollback took the claim with it: claim again, in a transaction of
                // its own, to record the refusal.
                let (stored, extensions) = match Stored::of_problem(problem).await {
                    Ok(captured) => captured,
                    Err(response) => return response,
                };
                match self.claim_in_tx(scope, key, fingerprint).await {
                    Ok(InTx::Claimed(mut tx, claim)) => {
                        let recorded = match claim.record(&mut *tx, &stored).await {
                            Ok(true) => tx.commit().await,
                            Ok(false) => Ok(()),
                            Err(err) => Err(err),
                        };
                        if let Err(err) = recorded {
                            // The client still gets its answer; a retry recomputes it.
                            tracing::warn!(error = %err, "recording a refused request failed");
                        }
                    }
                    // Another request with the key got there first: ours is not recorded.
                    Ok(InTx::Answered(_)) | Err(_) => {}
                }
                stored.into_response_with(extensions)
            }
        }
    }

    /// Opens a write transaction and claims the key inside it.
    async fn claim_in_tx(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<InTx, Problem> {
        let mut tx = self.db.begin_write().await.map_err(db_problem)?;
        match self.claim_on(&mut tx, scope, key, fingerprint).await {
            Ok(Claimed::Token(token)) => {
                let claim = self.claim(scope, key.as_str(), token, true);
                Ok(InTx::Claimed(tx, claim))
            }
            Ok(Claimed::Replay(response)) => {
                rollback(tx).await;
                Ok(InTx::Answered(response))
            }
            Err(problem) => {
                rollback(tx).await;
                Err(problem)
            }
        }
    }

    /// Claims `key` for this request, or says why not: the stored response to replay,
    /// [`Kind::IdempotencyKeyReused`] (422) when the key was first used for another
    /// request, [`Kind::IdempotencyKeyInUse`] (409, retry in 1 s) while another request
    /// holds it.
    ///
    /// The first of two phases ([`Claim::finish`] is the second), for work that does
    /// more than write to this database: the claim is its own small transaction, so the
    /// write lock is not held while the work calls out. Call it before opening the
    /// write's transaction: on SQLite that transaction holds this process's one write
    /// connection, which this call needs.
    pub async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Begin, Problem> {
        let mut conn = self.db.write_conn().await.map_err(db_problem)?;
        match self.claim_on(&mut conn, scope, key, fingerprint).await? {
            Claimed::Token(token) => Ok(Begin::Claimed(self.claim(
                scope,
                key.as_str(),
                token,
                false,
            ))),
            Claimed::Replay(response) => Ok(Begin::Replay(response)),
        }
    }

    /// The claim's statements, on `conn`: each its own transaction (from [`begin`]) or
    /// all in the write's (from [`run`]).
    async fn claim_on(
        &self,
        conn: &mut AnyConnection,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Claimed, Problem> {
        let key = key.as_str();
        let fingerprint = fingerprint.as_str();
        for _ in 0..ATTEMPTS {
            let now = self.clock.now_millis();
            let token = uuid::Uuid::new_v4().to_string();
            // The primary key decides who is first, across tasks and processes alike.
            let inserted = sqlx::query(CLAIM)
                .bind(scope)
                .bind(key)
                .bind(fingerprint)
                .bind(&token)
                .bind(self.locked_until(now))
                .bind(now)
                .bind(self.expires_at(now))
                .execute(&mut *conn)
                .await
                .map_err(db_problem)?;
            if inserted.rows_affected() == 1 {
                return Ok(Claimed::Token(token));
            }

            let row: Option<Row> = sqlx::query_as(READ)
                .bind(scope)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_problem)?;
            // Released or purged since the insert lost: try to insert again.
            let Some(row) = row else { continue };

            match decide(&row, fingerprint, now) {
                Decision::Reused => return Err(reused()),
                Decision::InUse => return Err(in_use()),
                Decision::Replay => return Ok(Claimed::Replay(replay(row)?)),
                Decision::TakeOver => {}
            }
            if let Some(pause) = &self.take_over_pause {
                pause.reached.notify_one();
                pause.resume.notified().await;
            }
            // Take over a forgotten key or a claim whose holder died. Compare-and-set on
            // what was read: of several contenders exactly one matches the old token, and
            // a holder that completed meanwhile changed the state, so its answer stands.
            let taken = sqlx::query(TAKE_OVER)
                .bind(fingerprint)
                .bind(&token)
                .bind(self.locked_until(now))
                .bind(now)
                .bind(self.expires_at(now))
                .bind(scope)
                .bind(key)
                .bind(&row.claim_token)
                .bind(&row.state)
                .execute(&mut *conn)
                .await
                .map_err(db_problem)?;
            if taken.rows_affected() == 1 {
                return Ok(Claimed::Token(token));
            }
        }
        Err(in_use())
    }

    /// Deletes every expired key (claims still locked stay until their lock passes).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE expires_at <= $1 AND (state = 'completed' OR locked_until <= $1)",
        )
        .bind(self.clock.now_millis())
        .execute(&mut *self.db.write_conn().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Loops until `stop` is cancelled, purging every `every` (the first time at once).
    pub async fn run_purger(self, every: Duration, stop: CancellationToken) {
        // `interval` panics on zero, and a configured zero would hammer the database.
        let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => match self.purge_expired().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged expired idempotency keys"),
                    Err(err) => tracing::warn!(error = %err, "purging idempotency keys failed"),
                },
            }
        }
    }

    fn claim(&self, scope: &str, key: &str, token: String, in_tx: bool) -> Claim {
        Claim {
            db: self.db.clone(),
            scope: scope.to_owned(),
            key: key.to_owned(),
            token,
            in_tx,
        }
    }

    fn locked_until(&self, now: i64) -> i64 {
        now.saturating_add(millis(self.settings.lock_timeout))
    }

    fn expires_at(&self, now: i64) -> i64 {
        now.saturating_add(millis(self.settings.ttl))
    }
}

impl Claim {
    /// Records the request's outcome and returns the response to send.
    ///
    /// `Ok`: the response is stored through `tx`, which already holds the request's
    /// write, and `tx` commits: the effect and its record exist together or not at all.
    /// The returned response is rebuilt from the record, so it is byte for byte what a
    /// replay sends (without `Idempotent-Replayed`). If the claim was taken over
    /// meanwhile, `tx` rolls back and the client is told to retry (it will get the
    /// taker's response).
    ///
    /// `Err`: `tx` rolls back. A client error that a retry would repeat (4xx, not
    /// retryable) is stored so retries replay it, as Stripe does; anything else releases
    /// the key so a retry runs again.
    pub async fn finish(self, mut tx: WriteTx, result: Result<Response, Problem>) -> Response {
        let response = match result {
            Ok(response) => response,
            Err(problem) => {
                rollback(tx).await;
                return self.fail(problem).await;
            }
        };
        let (parts, body) = response.into_parts();
        // Our own handler's body, already in memory: no limit to enforce here.
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(err) => {
                rollback(tx).await;
                self.release().await;
                return Problem::internal(err).into_response();
            }
        };
        let stored = Stored::capture(parts.status, &parts.headers, bytes);
        match self.record(&mut *tx, &stored).await {
            Ok(true) => {}
            Ok(false) => {
                rollback(tx).await;
                return lost_claim().into_response();
            }
            Err(err) => {
                rollback(tx).await;
                self.release().await;
                return db_problem(err).into_response();
            }
        }
        if let Err(err) = tx.commit().await {
            // If the commit did land after all, the row is `completed` and the release
            // (which only deletes `in_flight` rows) leaves it alone.
            self.release().await;
            return db_problem(err).into_response();
        }
        // Extensions are not on the wire, but the metrics layer reads the error kind there.
        stored.into_response_with(parts.extensions)
    }

    /// Gives the key up without recording anything, so a retry runs the request again.
    pub async fn release(self) {
        if self.in_tx {
            // Its row lived and died with the write's transaction.
            return;
        }
        let released = async {
            sqlx::query(
                "DELETE FROM idempotency_keys \
                 WHERE scope = $1 AND key = $2 AND claim_token = $3 AND state = 'in_flight'",
            )
            .bind(&self.scope)
            .bind(&self.key)
            .bind(&self.token)
            .execute(&mut *self.db.write_conn().await?)
            .await
        }
        .await;
        if let Err(err) = released {
            tracing::warn!(
                error = %err,
                scope = %self.scope,
                "releasing an idempotency key failed; it frees itself when its lock times out"
            );
        }
    }

    async fn fail(self, problem: Problem) -> Response {
        if !repeatable(&problem) {
            self.release().await;
            return problem.into_response();
        }
        let (stored, extensions) = match Stored::of_problem(problem).await {
            Ok(captured) => captured,
            Err(response) => {
                self.release().await;
                return response;
            }
        };
        // One statement, so its own transaction. Not recorded (claim lost, database
        // down)? The client still gets its answer; a retry merely recomputes it.
        let recorded = async {
            let mut conn = self.db.write_conn().await?;
            self.record(&mut *conn, &stored).await
        }
        .await;
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "recording a refused request failed");
            self.release().await;
        }
        stored.into_response_with(extensions)
    }

    /// Marks our claim completed with `stored`; `false` when the claim is no longer ours.
    async fn record<'c, E>(&self, executor: E, stored: &Stored) -> Result<bool, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let done = sqlx::query(RECORD)
            .bind(i64::from(stored.status.as_u16()))
            .bind(stored.headers_json())
            .bind(stored.body.to_vec())
            .bind(&self.scope)
            .bind(&self.key)
            .bind(&self.token)
            .execute(executor)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// What `begin` does with a key that already has a row.
pub(crate) enum Decision {
    /// Used for another request, and not yet forgotten.
    Reused,
    /// Answered already: send the answer again.
    Replay,
    /// Another request holds the key right now.
    InUse,
    /// Forgotten (expired), or held by a claim whose lock ran out (its holder died).
    TakeOver,
}

pub(crate) fn decide(row: &Row, fingerprint: &str, now: i64) -> Decision {
    let completed = row.state == "completed";
    let locked = row.locked_until > now;
    if row.expires_at <= now && (completed || !locked) {
        Decision::TakeOver
    } else if row.fingerprint != fingerprint {
        Decision::Reused
    } else if completed {
        Decision::Replay
    } else if locked {
        Decision::InUse
    } else {
        Decision::TakeOver
    }
}

/// A response as recorded: what a replay must reproduce exactly.
pub(crate) struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Stored {
    /// Keeps the headers that matter ([`KEPT_HEADERS`]) whose values are text.
    pub(crate) fn capture(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let mut kept = HeaderMap::new();
        for name in KEPT_HEADERS {
            for value in headers.get_all(&name) {
                if value.to_str().is_ok() {
                    kept.append(name.clone(), value.clone());
                }
            }
        }
        Self {
            status,
            headers: kept,
            body,
        }
    }

    /// `[["content-type","application/json"],...]`: ordered, repeatable, plain JSON.
    pub(crate) fn headers_json(&self) -> String {
        let pairs: Vec<(&str, &str)> = self
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        // A list of string pairs always serializes.
        serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
    }

    pub(crate) fn from_row(row: Row) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("idempotency record: {what}"));
        let (Some(status), Some(headers), Some(body)) = (row.status, row.headers, row.body) else {
            return Err(corrupt("completed without a response"));
        };
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| corrupt("bad status"))?;
        let pairs: Vec<(String, String)> =
            serde_json::from_str(&headers).map_err(|_| corrupt("bad headers"))?;
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::try_from(name).map_err(|_| corrupt("bad header name"))?;
            let value = HeaderValue::try_from(value).map_err(|_| corrupt("bad header value"))?;
            map.append(name, value);
        }
        Ok(Self {
            status,
            headers: map,
            body: Bytes::from(body),
        })
    }
}

impl Stored {
    /// A problem's response, captured for the record; or the response to send if its
    /// body cannot be read (never, for our own problems).
    pub(crate) async fn of_problem(problem: Problem) -> Result<(Self, http::Extensions), Response> {
        let (parts, body) = problem.into_response().into_parts();
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => Ok((
                Self::capture(parts.status, &parts.headers, bytes),
                parts.extensions,
            )),
            Err(err) => Err(Problem::internal(err).into_response()),
        }
    }

    pub(crate) fn into_response_with(self, extensions: http::Extensions) -> Response {
        let mut response = self.into_response();
        *response.extensions_mut() = extensions;
        response
    }
}

impl IntoResponse for Stored {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// A client error a retry would repeat: recorded, so retries replay it (Stripe's rule).
pub(crate) fn repeatable(problem: &Problem) -> bool {
    let kind = problem.kind();
    kind.http_status().is_client_error() && !kind.retryable()
}

pub(crate) fn reused() -> Problem {
    Problem::new(Kind::IdempotencyKeyReused).with_detail(
        "this Idempotency-Key was used for a different request (method, path or body); \
         send a new key",
    )
}

/// The stored answer of a completed row, marked as a replay.
pub(crate) fn replay(row: Row) -> Result<Response, Problem> {
    let mut response = Stored::from_row(row)
        .map_err(Problem::from)?
        .into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(response)
}

pub(crate) fn in_use() -> Problem {
    Problem::new(Kind::IdempotencyKeyInUse)
        .with_detail("a request with this Idempotency-Key is still being processed; retry shortly")
        .with_retry_after(IN_USE_RETRY_AFTER)
}

/// The request outlived its lock and a retry took the key over; this attempt's write was
/// rolled back, and a retry gets the taker's response.
fn lost_claim() -> Problem {
    Problem::new(Kind::IdempotencyKeyInUse)
        .with_detail(
            "this request took longer than its Idempotency-Key lock and a retry took over; \
             retry to get that request's response",
        )
        .with_retry_after(IN_USE_RETRY_AFTER)
}

fn db_problem(err: sqlx::Error) -> Problem {
    StoreError::from(err).into()
}

async fn rollback(tx: WriteTx) {
    if let Err(err) = tx.rollback().await {
        tracing::warn!(error = %err, "rolling back a request's transaction failed");
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
