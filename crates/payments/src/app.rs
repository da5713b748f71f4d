//! The sandbox's application layer: one method per use case. The REST face parses the
//! wire into domain values, calls a method here and renders what it returns; a refusal
//! is a [`PaymentsError`], which becomes a [`Problem`] at exactly one place.
//!
//! A charge or a refund acts like a remote provider: under its `Idempotency-Key` (claimed
//! first, so a retry meanwhile hears 409 `idempotency-key-in-use`), it waits the
//! configured latency, then may fail as an outage (503, nothing recorded, the key
//! released) or, for a charge, be declined (402, the failed charge recorded and the
//! answer kept for the key). The work runs in a task of its own ([`detached`]): a caller
//! that hangs up or times out does not stop it, as a real provider finishes a charge
//! whose caller gave up.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use axum::response::{IntoResponse, Response};
use idempotency::{Begin, Claim, Fingerprint, Idempotency, IdempotencyKey, IdempotentJson};
use problem::{Kind, Problem};
use storage::{StoreError, WriteTx};
use tracing::Instrument;

use crate::domain::{
    Behaviour, BehaviourPatch, Charge, ChargeId, Decline, NewCharge, NewRefund, OrderRef, Outcome,
    Refund, RefundId, RefundRefusal,
};
use crate::store::PaymentsStore;

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// Holds the id as asked, which may not even be well formed.
    #[error("No such charge: {0}")]
    ChargeNotFound(String),
    #[error("{}", .decline.failure_message)]
    Declined { charge: ChargeId, decline: Decline },
    #[error("charge {} failed: no money moved, so there is nothing to refund", .0.as_str())]
    RefundOfFailedCharge(ChargeId),
    #[error("charge {} is already fully refunded", .0.as_str())]
    AlreadyRefunded(ChargeId),
    #[error(
        "a refund of {requested} exceeds the {refundable} left to refund on charge {}",
        .charge.as_str()
    )]
    RefundExceedsCharge {
        charge: ChargeId,
        requested: i64,
        refundable: i64,
    },
    #[error("the payments sandbox is simulating an outage (its error_rate); retry")]
    SimulatedOutage,
    /// The charge changed between a refund's read and its write (it should be locked).
    #[error("charge {} changed while this refund was recorded; retry", .0.as_str())]
    ChargeBusy(ChargeId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PaymentsError {
    fn refusal(charge: &Charge, requested: i64, refusal: RefundRefusal) -> Self {
        let charge = charge.id.clone();
        match refusal {
            RefundRefusal::ChargeFailed => Self::RefundOfFailedCharge(charge),
            RefundRefusal::FullyRefunded => Self::AlreadyRefunded(charge),
            RefundRefusal::ExceedsRefundable { refundable } => Self::RefundExceedsCharge {
                charge,
                requested,
                refundable,
            },
        }
    }
}

impl From<PaymentsError> for Problem {
    fn from(err: PaymentsError) -> Self {
        let detail = err.to_string();
        match err {
            PaymentsError::ChargeNotFound(id) => {
                Problem::not_found(detail).with_extension("charge", id)
            }
            PaymentsError::Declined { charge, decline } => Problem::new(Kind::PaymentDeclined)
                .with_detail(detail)
                .with_extension("charge", charge.as_str())
                .with_extension("failure_code", decline.failure_code)
                .with_extension("decline_code", decline.decline_code),
            PaymentsError::RefundOfFailedCharge(charge)
            | PaymentsError::AlreadyRefunded(charge) => Problem::new(Kind::BusinessRuleViolated)
                .with_detail(detail)
                .with_extension("charge", charge.as_str()),
            PaymentsError::RefundExceedsCharge {
                charge, refundable, ..
            } => Problem::new(Kind::BusinessRuleViolated)
                .with_detail(detail)
                .with_extension("charge", charge.as_str())
                .with_extension("amount_refundable", refundable),
            PaymentsError::SimulatedOutage | PaymentsError::ChargeBusy(_) => {
                Problem::unavailable(detail)
            }
            PaymentsError::Store(err) => err.into(),
        }
    }
}

/// What identifies a write for its `Idempotency-Key`, owned: the write outlives the
/// request that asked for it.
#[derive(Debug, Clone)]
pub struct KeyedWrite {
    pub scope: String,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

impl KeyedWrite {
    pub fn of<T>(request: &IdempotentJson<T>) -> Self {
        Self {
            scope: request.scope.clone(),
            key: request.key.clone(),
            fingerprint: request.fingerprint.clone(),
        }
    }
}

/// The behaviour in force, shared by every request of this process and changed at run
/// time (`PUT /v1/sandbox/behaviour`). In memory only: a restart is a healthy provider.
#[derive(Debug, Clone, Default)]
pub struct Sandbox(Arc<Mutex<Behaviour>>);

impl Sandbox {
    pub fn get(&self) -> Behaviour {
        // The value is `Copy` and always whole: a panic elsewhere cannot leave it torn.
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `patch` and returns the behaviour now in force.
    pub fn patch(&self, patch: BehaviourPatch) -> Behaviour {
        let mut behaviour = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *behaviour = behaviour.patched(patch);
        *behaviour
    }
}

/// The sandbox's use cases over its ledger, its idempotency keys and its behaviour.
#[derive(Debug, Clone)]
pub struct Payments {
    store: PaymentsStore,
    idempotency: Idempotency,
    sandbox: Sandbox,
}

impl Payments {
    /// `idempotency`'s lock must outlast the longest wait a behaviour can set
    /// ([`Behaviour::MAX_WAIT`]), or a retry would take over a charge still waiting.
    pub fn new(store: PaymentsStore, idempotency: Idempotency) -> Self {
        Self {
            store,
            idempotency,
            sandbox: Sandbox::default(),
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.sandbox.get()
    }

    pub fn set_behaviour(&self, patch: BehaviourPatch) -> Behaviour {
        let behaviour = self.sandbox.patch(patch);
        tracing::info!(
            latency_ms = behaviour.latency.as_millis(),
            latency_jitter_ms = behaviour.latency_jitter.as_millis(),
            decline_rate = behaviour.decline_rate.get(),
            error_rate = behaviour.error_rate.get(),
            "sandbox behaviour changed"
        );
        behaviour
    }

    pub async fn charge_by_id(&self, id: &ChargeId) -> Result<Charge, PaymentsError> {
        self.store
            .charge(id)
            .await?
            .ok_or_else(|| PaymentsError::ChargeNotFound(id.as_str().to_owned()))
    }

    /// Every charge made for `order_id`, declined ones included, oldest first.
    pub async fn charges_of_order(
        &self,
        order_id: &OrderRef,
    ) -> Result<Vec<Charge>, PaymentsError> {
        Ok(self.store.charges_of_order(order_id).await?)
    }

    /// Every refund of `charge`, oldest first; 404 when there is no such charge.
    pub async fn refunds_of_charge(&self, charge: &ChargeId) -> Result<Vec<Refund>, PaymentsError> {
        let refunds = self.store.refunds_of_charge(charge).await?;
        if refunds.is_empty() {
            // Told apart from a charge with no refunds only when there are none.
            self.charge_by_id(charge).await?;
        }
        Ok(refunds)
    }

    /// Makes a charge under `write`'s key, answering with `render`'s answer for a
    /// succeeded charge and with 402 for a declined one (both kept for replays). Runs to
    /// the end even if the caller goes away ([`detached`]).
    pub async fn charge<R>(&self, write: KeyedWrite, new: NewCharge, render: R) -> Response
    where
        R: FnOnce(&Charge) -> Result<Response, Problem> + Send + 'static,
    {
        let this = self.clone();
        detached(async move { this.charge_now(write, new, render).await }).await
    }

    async fn charge_now<R>(self, write: KeyedWrite, new: NewCharge, render: R) -> Response
    where
        R: FnOnce(&Charge) -> Result<Response, Problem>,
    {
        let (claim, behaviour) = match self.act(&write).await {
            Ok(acting) => acting,
            Err(answer) => return answer,
        };
        let outcome = if behaviour.decline_rate.hits(fastrand::f64()) {
            Outcome::Failed(Decline::generic())
        } else {
            Outcome::Succeeded
        };
        let charge = Charge::new(new, outcome, storage::now_millis());
        let (claim, mut tx) = match self.begin_write(claim).await {
            Ok(begun) => begun,
            Err(answer) => return answer,
        };
        if let Err(err) = self.store.insert_charge_in(&mut tx, &charge).await {
            return claim.finish(tx, Err(PaymentsError::from(err).into())).await;
        }
        let answer = match &charge.outcome {
            Outcome::Succeeded => render(&charge),
            Outcome::Failed(decline) => {
                tracing::info!(
                    charge = charge.id.as_str(),
                    order_id = charge.order_id.as_str(),
                    decline_code = %decline.decline_code,
                    "the sandbox declined a charge"
                );
                // A decline is the charge's answer, recorded with it: a retry with the
                // key gets the same 402 (Stripe's rule), and the ledger keeps the row.
                let declined = PaymentsError::Declined {
                    charge: charge.id.clone(),
                    decline: decline.clone(),
                };
                Ok(Problem::from(declined).into_response())
            }
        };
        claim.finish(tx, answer).await
    }

    /// Refunds (part of) a charge under `write`'s key, answering with `render`'s answer;
    /// the charge's refunded amount changes in the same transaction. Runs to the end
    /// even if the caller goes away ([`detached`]).
    pub async fn refund<R>(&self, write: KeyedWrite, new: NewRefund, render: R) -> Response
    where
        R: FnOnce(&Refund) -> Result<Response, Problem> + Send + 'static,
    {
        let this = self.clone();
        detached(async move { this.refund_now(write, new, render).await }).await
    }

    async fn refund_now<R>(self, write: KeyedWrite, new: NewRefund, render: R) -> Response
    where
        R: FnOnce(&Refund) -> Result<Response, Problem>,
    {
        let (claim, _) = match self.act(&write).await {
            Ok(acting) => acting,
            Err(answer) => return answer,
        };
        let (claim, mut tx) = match self.begin_write(claim).await {
            Ok(begun) => begun,
            Err(answer) => return answer,
        };
        let answer = match self.record_refund(&mut tx, &new).await {
            Ok(refund) => render(&refund),
            Err(err) => Err(err.into()),
        };
        // A refusal (404, 422) rolls back and is kept for the key; a 5xx releases it.
        claim.finish(tx, answer).await
    }

    async fn record_refund(
        &self,
        tx: &mut WriteTx,
        new: &NewRefund,
    ) -> Result<Refund, PaymentsError> {
        let charge = self
            .store
            .charge_for_update_in(tx, &new.charge)
            .await?
            .ok_or_else(|| PaymentsError::ChargeNotFound(new.charge.as_str().to_owned()))?;
        let requested = new.amount.map_or(0, |a| a.cents());
        let amount = charge
            .plan_refund(new.amount)
            .map_err(|refusal| PaymentsError::refusal(&charge, requested, refusal))?;
        let refund = Refund {
            id: RefundId::generate(),
            charge: charge.id.clone(),
            amount,
            created_at: storage::now_millis(),
        };
        // The charge is locked, so it cannot have changed since the read; the store
        // checks anyway rather than trust every caller to lock.
        if self
            .store
            .insert_refund_in(tx, &refund, charge.amount_refunded)
            .await?
        {
            Ok(refund)
        } else {
            Err(PaymentsError::ChargeBusy(new.charge.clone()))
        }
    }

    /// What every charge and refund does first: claim the key (or answer with its replay
    /// or refusal), wait as the behaviour says, then maybe fail as an outage, which
    /// releases the key so a retry runs again. Returns the claim and the behaviour that
    /// was in force when the call arrived.
    async fn act(&self, write: &KeyedWrite) -> Result<(Claim, Behaviour), Response> {
        let claim = match self
            .idempotency
            .begin(&write.scope, &write.key, &write.fingerprint)
            .await
        {
            Ok(Begin::Claimed(claim)) => claim,
            Ok(Begin::Replay(response)) => return Err(response),
            Err(problem) => return Err(problem.into_response()),
        };
        let behaviour = self.sandbox.get();
        let wait = behaviour.wait(fastrand::f64());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if behaviour.error_rate.hits(fastrand::f64()) {
            claim.release().await;
            tracing::info!("the sandbox simulated an outage");
            return Err(Problem::from(PaymentsError::SimulatedOutage).into_response());
        }
        Ok((claim, behaviour))
    }

    /// Opens the write's transaction, or releases the claim and answers 503.
    async fn begin_write(&self, claim: Claim) -> Result<(Claim, WriteTx), Response> {
        match self.store.database().begin_write().await {
            Ok(tx) => Ok((claim, tx)),
            Err(err) => {
                claim.release().await;
                Err(Problem::from(PaymentsError::from(StoreError::from(err))).into_response())
            }
        }
    }
}

/// Runs `work` in a task of its own and waits for it: if the request's future is
/// dropped (the caller hung up, or its deadline passed), the work still finishes. The
/// task keeps the request's context and span, so its log lines and problems carry the
/// request's correlation ID and path.
async fn detached<F>(work: F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    let work = work.instrument(tracing::Span::current());
    let task = match telemetry::context::current() {
        Some(ctx) => tokio::spawn(telemetry::context::scope(ctx, work)),
        None => tokio::spawn(work),
    };
    task.await
        .unwrap_or_else(|err| Problem::internal(err).into_response())
}
