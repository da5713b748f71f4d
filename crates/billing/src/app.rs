//! Billing's application layer: one method per use case, whatever face reaches it (the
//! `order-events` consumer, the REST face). Faces parse the wire into domain values, call
//! a method here and translate what it returns; a failure is a [`BillingError`], which
//! becomes a `Problem` (REST) or a `HandleError` (messages) at exactly one place each.
//!
//! A charge or a refund decides replay first (the order's payment row), then calls the
//! provider holding no transaction and no lock, then writes in one transaction: the
//! handled event's inbox record, the payment row and the event it implies (outbox). A
//! crash between the provider's answer and the commit loses nothing: the event comes
//! again, and the provider replays its answer under the same idempotency key.

use messaging::inbox;
use problem::Problem;
use storage::{StoreError, now_millis};
use uuid::Uuid;

use crate::domain::{ChargeAnswer, Decline, OrderId, OrderToCharge, Payment, PaymentStatus};
use crate::provider::{Provider, ProviderError};
use crate::series;
use crate::store::BillingStore;

/// Who billing is in its inbox: its consumer group on `order-events`.
pub const CONSUMER: &str = orders::events::BILLING_GROUP;

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("no payment for order {0}")]
    PaymentNotFound(OrderId),
    /// Not now: try again later (the provider's answer will be the same charge).
    #[error("the payment provider could not answer: {0}")]
    ProviderUnavailable(Problem),
    /// The provider refused our request itself: a bug or a contract mismatch to look
    /// at, not something a retry fixes.
    #[error("the payment provider refused the request: {0}")]
    ProviderRefused(Problem),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ProviderError> for BillingError {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::Unavailable(p) => BillingError::ProviderUnavailable(p),
            ProviderError::Refused(p) => BillingError::ProviderRefused(p),
        }
    }
}

impl From<sqlx::Error> for BillingError {
    fn from(err: sqlx::Error) -> Self {
        BillingError::Store(err.into())
    }
}

impl From<BillingError> for Problem {
    fn from(err: BillingError) -> Self {
        match err {
            BillingError::PaymentNotFound(ref order) => {
                let order = order.as_str().to_owned();
                Problem::not_found(err.to_string()).with_extension("order_id", order)
            }
            BillingError::ProviderUnavailable(problem) => problem,
            BillingError::ProviderRefused(problem) => Problem::internal(problem),
            BillingError::Store(err) => err.into(),
        }
    }
}

/// What handling an order's confirmation did.
#[derive(Debug)]
pub enum Billed {
    /// Charged, or declined, now: the payment, whose event is on its way.
    Recorded(Payment),
    /// The order has a payment already (the event came again, or the order's
    /// confirmation was published again): nothing was charged.
    AlreadyBilled(Payment),
    /// Another handler recorded this event (or this order's payment) while the
    /// provider answered: its answer was the same charge; nothing more was written.
    Concurrent,
}

/// What handling an order's cancellation did.
#[derive(Debug)]
pub enum Refunded {
    /// Refunded now: the payment, whose `OrderRefunded` is on its way.
    Recorded(Payment),
    /// Nothing to refund: no payment, a declined one, or one refunded already.
    NothingToRefund(Option<PaymentStatus>),
    /// Another handler refunded it while the provider answered (the same refund, under
    /// the same key); nothing more was written.
    Concurrent,
}

/// Billing's use cases over its store and the payment provider.
#[derive(Debug, Clone)]
pub struct Billing {
    store: BillingStore,
    provider: Provider,
}

impl Billing {
    pub fn new(store: BillingStore, provider: Provider) -> Self {
        Self { store, provider }
    }

    pub fn store(&self) -> &BillingStore {
        &self.store
    }

    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The payment of `order`.
    pub async fn payment(&self, order: &OrderId) -> Result<Payment, BillingError> {
        self.store
            .payment(order)
            .await?
            .ok_or_else(|| BillingError::PaymentNotFound(order.clone()))
    }

    /// Charges a confirmed order once, as the event `message` asks: a payment the order
    /// has already is kept (never a second charge); otherwise the provider's answer —
    /// the charge or its decline — is recorded with its event and `message`'s inbox
    /// record in one transaction.
    #[tracing::instrument(skip_all, fields(order_id = %order.order_id, message_id = %message))]
    pub async fn charge(
        &self,
        message: Uuid,
        order: OrderToCharge,
    ) -> Result<Billed, BillingError> {
        if let Some(existing) = self.store.payment(&order.order_id).await? {
            tracing::info!(
                status = existing.status.as_str(),
                "the order has a payment already; not charging it again"
            );
            return Ok(Billed::AlreadyBilled(existing));
        }
        let answer = if order.amount.minor() == 0 {
            // Nothing to take: a free order is paid without a call (a provider refuses a
            // zero charge, which would strand the order CONFIRMED).
            ChargeAnswer::Succeeded {
                charge_id: String::new(),
            }
        } else {
            match self.provider.charge(&order).await {
                Ok(answer) => answer,
                // The provider refused the request itself (an amount beyond its limit,
                // ...): no retry can help, and skipping the event would strand the order
                // CONFIRMED with its stock held. It fails like a decline, so the saga
                // gives the stock back and cancels the order; the refusal is logged.
                Err(ProviderError::Refused(problem)) => {
                    tracing::error!(%problem, "the provider refused the charge; failing the payment");
                    ChargeAnswer::Declined(Decline {
                        charge_id: None,
                        code: "provider_refused".to_owned(),
                        reason: problem
                            .public_detail()
                            .map_or_else(|| problem.kind().title().to_owned(), |d| d.into_owned()),
                    })
                }
                Err(other) => return Err(other.into()),
            }
        };
        let payment = Payment::from_answer(order, answer, now_millis());
        let mut tx = self.store.begin().await?;
        if !inbox::first_time(&mut tx, CONSUMER, message).await? {
            tx.rollback().await?;
            return Ok(Billed::Concurrent);
        }
        let inserted = self.store.insert_payment_in(&mut tx, &payment).await?;
        // Committed either way: the event is handled (by us, or by whoever inserted the
        // order's payment first with the same provider answer).
        tx.commit().await?;
        if !inserted {
            return Ok(Billed::Concurrent);
        }
        recorded(&payment);
        Ok(Billed::Recorded(payment))
    }

    /// Refunds a cancelled order's charge, as the event `message` asks, if it has a
    /// succeeded one: the provider's refund, the payment marked refunded, its event and
    /// `message`'s inbox record, in one transaction.
    #[tracing::instrument(skip_all, fields(order_id = %order, message_id = %message))]
    pub async fn refund(&self, message: Uuid, order: &OrderId) -> Result<Refunded, BillingError> {
        let payment = self.store.payment(order).await?;
        let Some(charge) = payment.as_ref().and_then(Payment::refundable_charge) else {
            let status = payment.map(|p| p.status);
            tracing::info!(
                status = status.map(PaymentStatus::as_str),
                "a cancelled order with no charge to refund"
            );
            return Ok(Refunded::NothingToRefund(status));
        };
        let refund = self.provider.refund(order, charge).await?;
        let mut tx = self.store.begin().await?;
        if !inbox::first_time(&mut tx, CONSUMER, message).await? {
            tx.rollback().await?;
            return Ok(Refunded::Concurrent);
        }
        let refunded = self
            .store
            .refund_in(&mut tx, order, &refund.refund_id)
            .await?;
        tx.commit().await?;
        match refunded {
            Some(payment) => {
                recorded(&payment);
                Ok(Refunded::Recorded(payment))
            }
            None => Ok(Refunded::Concurrent),
        }
    }
}

/// A payment committed: its log line and its metric, together.
fn recorded(payment: &Payment) {
    metrics::counter!(series::PAYMENTS, "service" => crate::SERVICE.as_str(), "outcome" => payment.status.as_str())
        .increment(1);
    let amount_minor = payment.amount.minor();
    match payment.status {
        PaymentStatus::Succeeded => tracing::info!(
            amount_minor,
            charge_id = payment.charge_id.as_deref(),
            "order charged"
        ),
        PaymentStatus::Declined => tracing::info!(
            amount_minor,
            decline_code = payment.decline_code.as_deref(),
            "charge declined"
        ),
        PaymentStatus::Refunded => tracing::info!(
            amount_minor,
            refund_id = payment.refund_id.as_deref(),
            "order refunded"
        ),
    }
}
