//! Orders' rules: what an order may hold, the states it moves through and which moves
//! are allowed. No I/O, no wire formats.

use values::Invalid;

/// Lines per order.
pub const MAX_LINES: usize = 50;
/// Units of one product per order.
pub const MAX_QUANTITY: i64 = 1_000;
/// The only currency the catalog prices in.
pub const CURRENCY: &str = "usd";

/// An order's public id and tracking id: `ord_` and a UUIDv7 (time-ordered) in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(String);

impl OrderId {
    pub fn generate() -> Self {
        OrderId(format!("ord_{}", uuid::Uuid::now_v7().simple()))
    }

    /// Any id a client or a message names: 1–64 visible ASCII characters (the seed's pika
    /// producer names its own, `ORD-12345`; such an order is simply not found).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > 64 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::Malformed("1–64 visible ASCII characters"));
        }
        Ok(OrderId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(pub i64);

/// Where an order stands. `PENDING` → `CONFIRMED` (stock reserved) or `REJECTED`;
/// `CONFIRMED` → `PAID`; `PENDING`, `CONFIRMED` and `PAID` → `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Confirmed,
    Rejected,
    Paid,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Confirmed,
        Status::Rejected,
        Status::Paid,
        Status::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Rejected => "REJECTED",
            Status::Paid => "PAID",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the pipeline is done with it (a watcher stops here).
    pub const fn is_final(self) -> bool {
        matches!(self, Status::Rejected | Status::Paid | Status::Cancelled)
    }

    /// The states an order may move to `self` from.
    pub const fn reached_from(self) -> &'static [Status] {
        match self {
            Status::Pending => &[],
            Status::Confirmed | Status::Rejected => &[Status::Pending],
            Status::Paid => &[Status::Confirmed],
            Status::Cancelled => &[Status::Pending, Status::Confirmed, Status::Paid],
        }
    }
}

/// One line as the client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: i64,
}

/// An order as a client asks for it, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub user_id: UserId,
    pub lines: Vec<LineRequest>,
}

impl OrderRequest {
    /// Checks every field and reports every bad one (`items[2].quantity`, ...).
    pub fn parse(user_id: i64, lines: &[(i64, i64)]) -> Result<Self, Vec<(String, Invalid)>> {
        let mut errors = Vec::new();
        if user_id < 1 {
            errors.push((
                "user_id".to_owned(),
                Invalid::Malformed("a user id (1 or more)"),
            ));
        }
        if lines.is_empty() {
            errors.push(("items".to_owned(), Invalid::Empty));
        }
        if lines.len() > MAX_LINES {
            errors.push(("items".to_owned(), Invalid::TooLong(MAX_LINES)));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, &(product, quantity)) in lines.iter().enumerate() {
            if product < 1 {
                errors.push((
                    format!("items[{i}].product_id"),
                    Invalid::Malformed("a product id (1 or more)"),
                ));
            } else if !seen.insert(product) {
                errors.push((
                    format!("items[{i}].product_id"),
                    Invalid::Malformed("a product no other line names (one line per product)"),
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                errors.push((
                    format!("items[{i}].quantity"),
                    Invalid::OutOfRange(1, MAX_QUANTITY),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(OrderRequest {
            user_id: UserId(user_id),
            lines: lines
                .iter()
                .map(|&(product, quantity)| LineRequest {
                    product_id: ProductId(product),
                    quantity,
                })
                .collect(),
        })
    }
}

/// A line priced from the catalog when the order was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product_id: ProductId,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

impl Line {
    pub fn amount_minor(&self) -> i64 {
        self.unit_price_minor.saturating_mul(self.quantity)
    }
}

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: Status,
    /// Unix milliseconds.
    pub at: i64,
    /// Why (a rejection's or cancellation's reason); empty when the status says it all.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Keyset position in lists.
    pub seq: i64,
    pub id: OrderId,
    pub user_id: UserId,
    pub status: Status,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub currency: String,
    /// The correlation ID of the request that placed it: every hop of its pipeline logs it.
    pub correlation_id: String,
    pub history: Vec<Transition>,
    pub created_at: i64,
}

/// The total of priced lines, in cents; `None` if it overflows.
pub fn total_of(lines: &[Line]) -> Option<i64> {
    lines.iter().try_fold(0i64, |sum, l| {
        l.unit_price_minor
            .checked_mul(l.quantity)
            .and_then(|a| sum.checked_add(a))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_bad_field_is_reported() {
        let errors = OrderRequest::parse(0, &[(1, 0), (1, 2), (-3, 2_000)]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "user_id",
                "items[0].quantity",
                "items[1].product_id",
                "items[2].product_id",
                "items[2].quantity"
            ]
        );
        assert_eq!(
            OrderRequest::parse(1, &[]).unwrap_err()[0].0,
            "items".to_owned()
        );
    }

    #[test]
    fn transitions_follow_the_pipeline() {
        assert!(Status::Paid.reached_from().contains(&Status::Confirmed));
        assert!(!Status::Paid.reached_from().contains(&Status::Pending));
        assert!(!Status::Cancelled.reached_from().contains(&Status::Rejected));
        assert!(Status::Cancelled.is_final() && !Status::Confirmed.is_final());
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn totals_refuse_overflow() {
        let line = |q, p| Line {
            product_id: ProductId(1),
            quantity: q,
            unit_price_minor: p,
        };
        assert_eq!(total_of(&[line(2, 150), line(1, 99)]), Some(399));
        assert_eq!(total_of(&[line(2, i64::MAX)]), None);
    }
}
