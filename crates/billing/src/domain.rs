//! Billing's types and rules: no I/O, no wire formats. Every value here was validated by
//! a parsing constructor, so deeper code never re-checks.

use money::Money;
use problem::FieldError;
use values::Invalid;

/// An order of the orders service, known here by its id only. It is also the provider's
/// idempotency key for the order's charge, so two charges of one order are one charge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub const MAX_LEN: usize = 64;

    /// 1–64 visible ASCII characters: what orders accepts and the provider takes as an
    /// idempotency key.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if (1..=Self::MAX_LEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::Malformed("1–64 visible ASCII characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The provider's idempotency key for this order's refund: another operation than
    /// its charge, so another key.
    pub fn refund_key(&self) -> String {
        format!("refund-{}", self.0)
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 4217 currency code, in the lower case the provider takes (`usd`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// Three ASCII letters, in either case.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(Invalid::Malformed(
                "a three-letter ISO 4217 code like \"usd\"",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A confirmed order, as billing charges it: who, how much, in what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderToCharge {
    pub order_id: OrderId,
    /// At least one minor unit: a provider cannot charge nothing.
    pub amount: Money,
    pub currency: Currency,
}

impl OrderToCharge {
    /// Reports every bad field at once.
    pub fn parse(
        order_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let order_id = OrderId::parse(order_id)
            .map_err(|e| errors.push(FieldError::new("order_id", e.to_string())))
            .ok();
        // A free order (0) is paid without a charge (`app::Billing::charge`).
        let amount = match Money::from_minor(amount_minor) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(FieldError::new("total_minor", e.to_string()));
                None
            }
        };
        let currency = Currency::parse(currency)
            .map_err(|e| errors.push(FieldError::new("currency", e.to_string())))
            .ok();
        match (order_id, amount, currency) {
            (Some(order_id), Some(amount), Some(currency)) if errors.is_empty() => Ok(Self {
                order_id,
                amount,
                currency,
            }),
            _ => Err(errors),
        }
    }
}

/// What became of an order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Charged.
    Succeeded,
    /// The provider declined the charge (the card, not the request): nothing was taken.
    Declined,
    /// Charged, then refunded in full after the order was cancelled.
    Refunded,
}

impl PaymentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "succeeded" => Ok(PaymentStatus::Succeeded),
            "declined" => Ok(PaymentStatus::Declined),
            "refunded" => Ok(PaymentStatus::Refunded),
            _ => Err(Invalid::Malformed("succeeded, declined or refunded")),
        }
    }
}

/// Why the provider declined a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    /// The provider's failed charge, when it names one.
    pub charge_id: Option<String>,
    /// The provider's decline code, e.g. `card_declined`: what orders and people act on.
    pub code: String,
    pub reason: String,
}

/// The provider's answer to a charge it handled (as opposed to one it could not take
/// now: those are retried, and never become a payment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeAnswer {
    Succeeded { charge_id: String },
    Declined(Decline),
}

/// The provider's answer to a refund it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub refund_id: String,
}

/// One order's payment: the provider's answer to its charge, and its refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub order_id: OrderId,
    pub amount: Money,
    pub currency: Currency,
    pub status: PaymentStatus,
    pub charge_id: Option<String>,
    pub decline_code: Option<String>,
    pub decline_reason: Option<String>,
    pub refund_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl Payment {
    /// The payment `answer` makes of `order`, at `now` (Unix milliseconds).
    pub fn from_answer(order: OrderToCharge, answer: ChargeAnswer, now: i64) -> Self {
        let (status, charge_id, decline_code, decline_reason) = match answer {
            ChargeAnswer::Succeeded { charge_id } => {
                (PaymentStatus::Succeeded, Some(charge_id), None, None)
            }
            ChargeAnswer::Declined(d) => (
                PaymentStatus::Declined,
                d.charge_id,
                Some(d.code),
                Some(d.reason),
            ),
        };
        Payment {
            order_id: order.order_id,
            amount: order.amount,
            currency: order.currency,
            status,
            charge_id,
            decline_code,
            decline_reason,
            refund_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The charge a refund gives back: only a succeeded payment has one to refund.
    pub fn refundable_charge(&self) -> Option<&str> {
        match self.status {
            // A free order was paid without a charge: nothing to refund.
            PaymentStatus::Succeeded => self.charge_id.as_deref().filter(|c| !c.is_empty()),
            PaymentStatus::Declined | PaymentStatus::Refunded => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_to_charge_reports_every_bad_field() {
        let ok = OrderToCharge::parse("ORD-1", 1999, "USD");
        assert_eq!(
            ok.map(|o| (o.order_id.0, o.amount.minor(), o.currency.0)),
            Ok(("ORD-1".to_owned(), 1999, "usd".to_owned()))
        );
        let bad = OrderToCharge::parse("ORD 1", -1, "dollars");
        let fields: Vec<String> = bad
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(fields, ["order_id", "total_minor", "currency"]);
        assert!(
            OrderToCharge::parse("ORD-1", 0, "usd").is_ok(),
            "a free order is paid without a charge"
        );
    }

    #[test]
    fn only_a_succeeded_payment_has_a_charge_to_refund() {
        let order = || OrderToCharge::parse("ORD-1", 100, "usd").unwrap_or_else(|_| panic!());
        let paid = Payment::from_answer(
            order(),
            ChargeAnswer::Succeeded {
                charge_id: "ch_1".into(),
            },
            1,
        );
        assert_eq!(paid.refundable_charge(), Some("ch_1"));
        let declined = Payment::from_answer(
            order(),
            ChargeAnswer::Declined(Decline {
                charge_id: Some("ch_2".into()),
                code: "card_declined".into(),
                reason: "no".into(),
            }),
            1,
        );
        assert_eq!(declined.status, PaymentStatus::Declined);
        assert_eq!(declined.refundable_charge(), None);
        let refunded = Payment {
            status: PaymentStatus::Refunded,
            ..paid
        };
        assert_eq!(refunded.refundable_charge(), None);
    }

    #[test]
    fn refunds_have_a_key_of_their_own() {
        let id = OrderId::parse("ORD-7").unwrap_or_else(|_| panic!());
        assert_eq!(id.refund_key(), "refund-ORD-7");
    }
}
