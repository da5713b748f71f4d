//! The sandbox's types and rules: charges, refunds and the behaviour a test dials in. No
//! I/O, no wire formats; randomness comes in as numbers the caller drew.

use std::time::Duration;

use problem::FieldError;
use values::Invalid;

/// `<prefix><32 lowercase hex digits>`: how the sandbox names what it creates.
fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `raw` is `prefix` then exactly 32 lowercase hex digits.
fn is_id(raw: &str, prefix: &str) -> bool {
    raw.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A charge's id: `ch_` and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChargeId(String);

impl ChargeId {
    pub const PREFIX: &'static str = "ch_";

    /// A fresh, random id.
    pub fn generate() -> Self {
        Self(random_id(Self::PREFIX))
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if is_id(raw, Self::PREFIX) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::Malformed(
                "a charge id: ch_ followed by 32 lowercase hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A refund's id: `re_` and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefundId(String);

impl RefundId {
    pub const PREFIX: &'static str = "re_";

    pub fn generate() -> Self {
        Self(random_id(Self::PREFIX))
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if is_id(raw, Self::PREFIX) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::Malformed(
                "a refund id: re_ followed by 32 lowercase hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount of a charge or refund in minor units (cents): 1 to 99,999,999, Stripe's
/// bounds for a card charge in USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    pub const MIN: i64 = 1;
    pub const MAX: i64 = 99_999_999;

    pub fn parse(cents: i64) -> Result<Self, Invalid> {
        if (Self::MIN..=Self::MAX).contains(&cents) {
            Ok(Self(cents))
        } else {
            Err(Invalid::OutOfRange(Self::MIN, Self::MAX))
        }
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 currency code as Stripe spells it: three lowercase ASCII letters (`usd`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::Malformed(
                "a currency code of three lowercase letters, like usd",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's order a charge pays for: 1 to 64 visible ASCII characters, kept as
/// given (it is the caller's id, and the ledger is searched by it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderRef(String);

impl OrderRef {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid::Empty);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Invalid::TooLong(Self::MAX_LEN));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::Malformed(
                "visible ASCII characters only (no spaces or control characters)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A charge's free-text description: one line, trimmed, 1–500 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Ok(Self(values::single_line(raw, Self::MAX_CHARS)?.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the (simulated) card issuer refused a charge, in Stripe's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    /// The charge's `failure_code` (`card_declined`).
    pub failure_code: String,
    /// The charge's `failure_message`, fit to show the customer.
    pub failure_message: String,
    /// The issuer's reason (`generic_decline`), the problem's `decline_code`.
    pub decline_code: String,
}

impl Decline {
    /// The only decline the sandbox makes: the issuer said no without saying why.
    pub fn generic() -> Self {
        Self {
            failure_code: "card_declined".to_owned(),
            failure_message: "Your card was declined.".to_owned(),
            decline_code: "generic_decline".to_owned(),
        }
    }
}

/// How a charge ended. Every charge the ledger holds has ended: the sandbox decides
/// before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(Decline),
}

/// A charge as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: ChargeId,
    pub amount: Amount,
    pub currency: Currency,
    pub order_id: OrderRef,
    pub description: Option<Description>,
    pub outcome: Outcome,
    /// Cents refunded so far, 0 to `amount` (always 0 for a failed charge).
    pub amount_refunded: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Charge {
    /// A new charge of `new`, decided as `outcome`, created at `now` (Unix ms).
    pub fn new(new: NewCharge, outcome: Outcome, now: i64) -> Self {
        Self {
            id: ChargeId::generate(),
            amount: new.amount,
            currency: new.currency,
            order_id: new.order_id,
            description: new.description,
            outcome,
            amount_refunded: 0,
            created_at: now,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Succeeded
    }

    /// Whether all of it has been refunded.
    pub fn refunded(&self) -> bool {
        self.succeeded() && self.amount_refunded == self.amount.cents()
    }

    /// Cents that may still be refunded.
    pub fn refundable(&self) -> i64 {
        if self.succeeded() {
            self.amount.cents() - self.amount_refunded
        } else {
            0
        }
    }

    /// How much a refund of `requested` (all that is left when `None`) takes, or why it
    /// may not happen.
    pub fn plan_refund(&self, requested: Option<Amount>) -> Result<Amount, RefundRefusal> {
        if !self.succeeded() {
            return Err(RefundRefusal::ChargeFailed);
        }
        let refundable = self.refundable();
        if refundable == 0 {
            return Err(RefundRefusal::FullyRefunded);
        }
        match requested {
            Some(amount) if amount.cents() > refundable => {
                Err(RefundRefusal::ExceedsRefundable { refundable })
            }
            Some(amount) => Ok(amount),
            // Between 1 and the charge's amount, so always an amount.
            None => Amount::parse(refundable).map_err(|_| RefundRefusal::FullyRefunded),
        }
    }
}

/// Why a refund may not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundRefusal {
    /// The charge was declined: no money moved, so none can go back.
    ChargeFailed,
    /// Everything was refunded already.
    FullyRefunded,
    /// More than what is left was asked for.
    ExceedsRefundable { refundable: i64 },
}

/// A charge to make, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCharge {
    pub amount: Amount,
    pub currency: Currency,
    pub order_id: OrderRef,
    pub description: Option<Description>,
}

impl NewCharge {
    /// Validates every field and reports every bad one.
    pub fn parse(
        amount: i64,
        currency: &str,
        order_id: &str,
        description: Option<&str>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let amount = Amount::parse(amount).map_err(|r| errors.push(FieldError::new("amount", r)));
        let currency =
            Currency::parse(currency).map_err(|r| errors.push(FieldError::new("currency", r)));
        let order_id =
            OrderRef::parse(order_id).map_err(|r| errors.push(FieldError::new("order_id", r)));
        let description = description
            .map(Description::parse)
            .transpose()
            .map_err(|r| errors.push(FieldError::new("description", r)));
        match (amount, currency, order_id, description) {
            (Ok(amount), Ok(currency), Ok(order_id), Ok(description)) => Ok(Self {
                amount,
                currency,
                order_id,
                description,
            }),
            _ => Err(errors),
        }
    }
}

/// A refund as the ledger holds it. Refunds always succeed in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: RefundId,
    pub charge: ChargeId,
    pub amount: Amount,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A refund to make, validated: of which charge, and how much (all that is left when
/// `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub charge: ChargeId,
    pub amount: Option<Amount>,
}

impl NewRefund {
    pub fn parse(charge: &str, amount: Option<i64>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let charge = ChargeId::parse(charge).map_err(|r| errors.push(FieldError::new("charge", r)));
        let amount = amount
            .map(Amount::parse)
            .transpose()
            .map_err(|r| errors.push(FieldError::new("amount", r)));
        match (charge, amount) {
            (Ok(charge), Ok(amount)) => Ok(Self { charge, amount }),
            _ => Err(errors),
        }
    }
}

/// A probability, 0 to 1 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rate(f64);

impl Rate {
    pub const NEVER: Rate = Rate(0.0);

    pub fn parse(raw: f64) -> Result<Self, Invalid> {
        // `contains` is false for NaN.
        if (0.0..=1.0).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(Invalid::OutOfRange(0, 1))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether an event of this rate happens, given `draw`, uniform in `[0, 1)`: a rate of
    /// 0 never does, a rate of 1 always does.
    pub fn hits(self, draw: f64) -> bool {
        draw < self.0
    }
}

/// How the sandbox behaves for every charge and refund: how long it takes, and how often
/// it fails. Set at run time; the default is a fast, healthy provider.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Behaviour {
    /// Every charge and refund first waits this long.
    pub latency: Duration,
    /// Plus a uniform extra wait of up to this much.
    pub latency_jitter: Duration,
    /// How many charges are declined (402; the failed charge is recorded).
    pub decline_rate: Rate,
    /// How many charges and refunds fail with 503 after their wait (nothing recorded).
    pub error_rate: Rate,
}

impl Behaviour {
    /// The longest `latency` (and `latency_jitter`) that may be set, in milliseconds:
    /// two minutes, far beyond any client's timeout.
    pub const MAX_LATENCY_MS: u64 = 120_000;

    /// The longest a charge or refund can wait before its work starts.
    pub const MAX_WAIT: Duration = Duration::from_millis(2 * Self::MAX_LATENCY_MS);

    /// The wait for one call, given `draw`, uniform in `[0, 1)`.
    pub fn wait(&self, draw: f64) -> Duration {
        self.latency + self.latency_jitter.mul_f64(draw.clamp(0.0, 1.0))
    }

    /// This behaviour with `patch`'s fields changed.
    pub fn patched(self, patch: BehaviourPatch) -> Self {
        Self {
            latency: patch.latency.unwrap_or(self.latency),
            latency_jitter: patch.latency_jitter.unwrap_or(self.latency_jitter),
            decline_rate: patch.decline_rate.unwrap_or(self.decline_rate),
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
        }
    }
}

/// A change of behaviour, validated: only the fields present change.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BehaviourPatch {
    pub latency: Option<Duration>,
    pub latency_jitter: Option<Duration>,
    pub decline_rate: Option<Rate>,
    pub error_rate: Option<Rate>,
}

impl BehaviourPatch {
    /// Validates every field present and reports every bad one, named as on the wire.
    pub fn parse(
        latency_ms: Option<i64>,
        latency_jitter_ms: Option<i64>,
        decline_rate: Option<f64>,
        error_rate: Option<f64>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut millis = |field: &str, raw: Option<i64>| match raw {
            None => None,
            Some(ms) => match u64::try_from(ms) {
                Ok(ms) if ms <= Behaviour::MAX_LATENCY_MS => Some(Duration::from_millis(ms)),
                _ => {
                    errors.push(FieldError::new(
                        field,
                        Invalid::OutOfRange(0, Behaviour::MAX_LATENCY_MS as i64),
                    ));
                    None
                }
            },
        };
        let latency = millis("latency_ms", latency_ms);
        let latency_jitter = millis("latency_jitter_ms", latency_jitter_ms);
        let mut rate = |field: &str, raw: Option<f64>| {
            raw.and_then(|r| {
                Rate::parse(r)
                    .map_err(|reason| errors.push(FieldError::new(field, reason)))
                    .ok()
            })
        };
        let decline_rate = rate("decline_rate", decline_rate);
        let error_rate = rate("error_rate", error_rate);
        if errors.is_empty() {
            Ok(Self {
                latency,
                latency_jitter,
                decline_rate,
                error_rate,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(amount: i64, refunded: i64, outcome: Outcome) -> Charge {
        let new = NewCharge::parse(amount, "usd", "order-1", None).unwrap();
        Charge {
            amount_refunded: refunded,
            ..Charge::new(new, outcome, 0)
        }
    }

    #[test]
    fn ids_are_prefixed_hex_and_parse_back() {
        let id = ChargeId::generate();
        assert_eq!(id.as_str().len(), 35);
        assert_eq!(ChargeId::parse(id.as_str()).unwrap(), id);
        let re = RefundId::generate();
        assert!(re.as_str().starts_with("re_"));
        assert_eq!(RefundId::parse(re.as_str()).unwrap(), re);
        for bad in [
            "",
            "ch_",
            "re_0123456789abcdef0123456789abcdef",
            "ch_0123456789ABCDEF0123456789abcdef",
            "ch_0123456789abcdef0123456789abcde",
            "ch_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(ChargeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_new_charge_reports_every_bad_field() {
        assert!(NewCharge::parse(1, "usd", "o", Some("Order 1")).is_ok());
        assert!(NewCharge::parse(99_999_999, "eur", &"o".repeat(64), None).is_ok());
        let errors = NewCharge::parse(0, "USD", "", Some(" ")).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["amount", "currency", "order_id", "description"]);
        assert_eq!(errors[0].reason, "must be between 1 and 99999999");
        assert!(NewCharge::parse(100_000_000, "usd", "o", None).is_err());
        assert!(NewCharge::parse(1, "usd", &"o".repeat(65), None).is_err());
        assert!(NewCharge::parse(1, "usd", "order 1", None).is_err());
        assert!(NewCharge::parse(1, "us", "o", None).is_err());
    }

    #[test]
    fn refunds_take_what_is_left_and_never_more() {
        let ok = charge(1000, 300, Outcome::Succeeded);
        assert_eq!(ok.refundable(), 700);
        assert_eq!(ok.plan_refund(None).unwrap().cents(), 700);
        assert_eq!(
            ok.plan_refund(Amount::parse(700).ok()).unwrap().cents(),
            700
        );
        assert_eq!(
            ok.plan_refund(Amount::parse(701).ok()),
            Err(RefundRefusal::ExceedsRefundable { refundable: 700 })
        );
        let done = charge(1000, 1000, Outcome::Succeeded);
        assert!(done.refunded());
        assert_eq!(done.plan_refund(None), Err(RefundRefusal::FullyRefunded));
        let failed = charge(1000, 0, Outcome::Failed(Decline::generic()));
        assert!(!failed.refunded());
        assert_eq!(failed.plan_refund(None), Err(RefundRefusal::ChargeFailed));
    }

    #[test]
    fn rates_hit_as_often_as_they_say() {
        assert!(!Rate::NEVER.hits(0.0));
        let always = Rate::parse(1.0).unwrap();
        assert!(always.hits(0.0) && always.hits(0.999_999));
        let half = Rate::parse(0.5).unwrap();
        assert!(half.hits(0.49) && !half.hits(0.5));
        for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn behaviour_patches_validate_every_field_and_change_only_those_given() {
        let errors =
            BehaviourPatch::parse(Some(-1), Some(120_001), Some(1.5), Some(-0.5)).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "latency_ms",
                "latency_jitter_ms",
                "decline_rate",
                "error_rate"
            ]
        );
        let patch = BehaviourPatch::parse(Some(250), None, Some(1.0), None).unwrap();
        let behaviour = Behaviour::default().patched(patch);
        assert_eq!(behaviour.latency, Duration::from_millis(250));
        assert_eq!(behaviour.latency_jitter, Duration::ZERO);
        assert_eq!(behaviour.decline_rate.get(), 1.0);
        assert_eq!(behaviour.error_rate, Rate::NEVER);
        let jittery = Behaviour {
            latency_jitter: Duration::from_millis(100),
            ..behaviour
        };
        assert_eq!(jittery.wait(0.0), Duration::from_millis(250));
        assert_eq!(jittery.wait(0.5), Duration::from_millis(300));
    }
}
