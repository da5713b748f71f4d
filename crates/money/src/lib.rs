//! Exact money. Amounts are integer minor units (cents) everywhere inside Brigade and in
//! every database; the wire may still carry the seed's `"price": 999.99`, converted at the
//! edge by [`Money::from_decimal`] and [`Money::to_decimal`].
#![forbid(unsafe_code)]

use std::fmt;

/// A non-negative amount in minor units of the store's single currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// Why a number is not an amount of money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    NotFinite,
    Negative,
    TooPrecise,
    TooLarge,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoneyError::NotFinite => "must be a finite number",
            MoneyError::Negative => "must not be negative",
            MoneyError::TooPrecise => "must have at most 2 decimal places",
            MoneyError::TooLarge => "must not exceed 100000000.00",
        })
    }
}

impl std::error::Error for MoneyError {}

impl Money {
    /// 100,000,000.00: far above any price, far below where `f64` loses cents.
    pub const MAX_MINOR: i64 = 10_000_000_000;

    pub fn from_minor(minor: i64) -> Result<Money, MoneyError> {
        if minor < 0 {
            Err(MoneyError::Negative)
        } else if minor > Self::MAX_MINOR {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Money(minor))
        }
    }

    /// Parses a decimal amount such as `999.99`. Refuses what would silently lose or
    /// invent cents (`1.234`), negatives, NaN and infinities.
    pub fn from_decimal(value: f64) -> Result<Money, MoneyError> {
        if !value.is_finite() {
            return Err(MoneyError::NotFinite);
        }
        if value < 0.0 {
            return Err(MoneyError::Negative);
        }
        let scaled = value * 100.0;
        if scaled > Self::MAX_MINOR as f64 {
            return Err(MoneyError::TooLarge);
        }
        let rounded = scaled.round();
        // 999.99 * 100 is 99998.99999999999 in binary floating point: that is 99999 cents,
        // because 99999 / 100 is the very double "999.99" parses to. 1.234 is not a whole
        // number of cents, and neither is 5e-300 (an absolute tolerance let it through as
        // 0.00): n / 100 for a whole n is correctly rounded, so an amount with at most two
        // decimals equals its cents divided by 100 exactly.
        if rounded / 100.0 != value {
            return Err(MoneyError::TooPrecise);
        }
        Money::from_minor(rounded as i64)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    /// The amount as the wire's decimal number (`99999` -> `999.99`).
    pub fn to_decimal(self) -> f64 {
        self.0 as f64 / 100.0
    }

    pub fn checked_mul(self, qty: i64) -> Option<Money> {
        self.0.checked_mul(qty).filter(|m| *m >= 0).map(Money)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_prices_are_exact() {
        let laptop = Money::from_decimal(999.99).unwrap();
        assert_eq!(laptop.minor(), 99_999);
        assert_eq!(laptop.to_decimal(), 999.99);
        assert_eq!(laptop.to_string(), "999.99");
        let mouse = Money::from_decimal(29.99).unwrap();
        assert_eq!(mouse.minor(), 2_999);
        assert_eq!(mouse.to_decimal(), 29.99);
        let total = laptop.checked_mul(2).unwrap();
        assert_eq!(total.to_decimal(), 1999.98);
    }

    #[test]
    fn every_cent_amount_round_trips() {
        for minor in (0..2_000_000).step_by(7) {
            let m = Money::from_minor(minor).unwrap();
            assert_eq!(Money::from_decimal(m.to_decimal()), Ok(m), "{minor}");
        }
    }

    #[test]
    fn decimals_as_clients_write_them_are_accepted() {
        for (text, minor) in [
            ("999.99", 99_999),
            ("0.07", 7),
            ("19.9", 1_990),
            ("0.1", 10),
            ("1e2", 10_000),
            ("0", 0),
            ("99999999.99", 9_999_999_999),
        ] {
            let value: f64 = text.parse().unwrap();
            assert_eq!(
                Money::from_decimal(value).map(Money::minor),
                Ok(minor),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_amounts_are_refused() {
        assert_eq!(Money::from_decimal(-0.01), Err(MoneyError::Negative));
        assert_eq!(Money::from_decimal(1.234), Err(MoneyError::TooPrecise));
        // Tiny amounts are not 0.00 (schemathesis sent 5.7e-294 as a price).
        for tiny in [5.747313731632028e-294, 1e-9, 0.001, 0.004] {
            assert_eq!(
                Money::from_decimal(tiny),
                Err(MoneyError::TooPrecise),
                "{tiny}"
            );
        }
        assert_eq!(Money::from_decimal(f64::NAN), Err(MoneyError::NotFinite));
        assert_eq!(
            Money::from_decimal(f64::INFINITY),
            Err(MoneyError::NotFinite)
        );
        assert_eq!(Money::from_decimal(1e12), Err(MoneyError::TooLarge));
        assert_eq!(Money::from_minor(-1), Err(MoneyError::Negative));
        assert_eq!(Money::from_decimal(0.0).unwrap().minor(), 0);
    }
}
