//! Catalog's types and rules: no I/O, no wire formats. Every value here was validated by
//! a parsing constructor, so deeper code never re-checks.

use money::Money;
use problem::FieldError;
use values::Invalid;

/// Identifies a product; the seed's Laptop is 1 and its Mouse is 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReviewId(pub i64);

/// A user of the accounts service, referred to by id only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub i64);

/// A product name: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Ok(Self(values::single_line(raw, Self::MAX_CHARS)?.to_owned()))
    }

    /// [`ProductName::parse`] keeping `raw`'s allocation when it needs no trimming (names
    /// read back from the database, 50 or more per page).
    pub fn parse_owned(raw: String) -> Result<Self, Invalid> {
        let trimmed = values::single_line(&raw, Self::MAX_CHARS)?;
        if trimmed.len() == raw.len() {
            Ok(Self(raw))
        } else {
            Ok(Self(trimmed.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units on hand: never negative, at most `i32::MAX` (the seed's proto carries `int32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stock(i64);

impl Stock {
    pub fn parse(units: i64) -> Result<Self, Invalid> {
        if units < 0 {
            Err(Invalid::Negative)
        } else if units > i64::from(i32::MAX) {
            Err(Invalid::AboveMax(i64::from(i32::MAX)))
        } else {
            Ok(Self(units))
        }
    }

    pub fn units(self) -> i64 {
        self.0
    }
}

/// A product as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: ProductId,
    pub name: ProductName,
    pub price: Money,
    pub stock: Stock,
    /// Bumped on every change; the REST face derives its `ETag` from it.
    pub version: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A product to be created, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub name: ProductName,
    pub price: Money,
    pub stock: Stock,
}

impl NewProduct {
    /// Validates every field and reports every bad one, not just the first.
    pub fn parse(name: &str, price: f64, stock: i64) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = ProductName::parse(name).map_err(|r| errors.push(FieldError::new("name", r)));
        let price = Money::from_decimal(price)
            .map_err(|r| errors.push(FieldError::new("price", r.to_string())));
        let stock = Stock::parse(stock).map_err(|r| errors.push(FieldError::new("stock", r)));
        match (name, price, stock) {
            (Ok(name), Ok(price), Ok(stock)) => Ok(Self { name, price, stock }),
            _ => Err(errors),
        }
    }
}

/// A partial update: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub price: Option<Money>,
    pub stock: Option<Stock>,
}

impl ProductPatch {
    pub fn parse(
        name: Option<&str>,
        price: Option<f64>,
        stock: Option<i64>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut patch = ProductPatch::default();
        if let Some(name) = name {
            match ProductName::parse(name) {
                Ok(n) => patch.name = Some(n),
                Err(r) => errors.push(FieldError::new("name", r)),
            }
        }
        if let Some(price) = price {
            match Money::from_decimal(price) {
                Ok(p) => patch.price = Some(p),
                Err(r) => errors.push(FieldError::new("price", r.to_string())),
            }
        }
        if let Some(stock) = stock {
            match Stock::parse(stock) {
                Ok(s) => patch.stock = Some(s),
                Err(r) => errors.push(FieldError::new("stock", r)),
            }
        }
        if errors.is_empty() {
            Ok(patch)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.price.is_none() && self.stock.is_none()
    }
}

/// A rating from 1 to 5 stars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating(u8);

impl Rating {
    pub fn parse(stars: i64) -> Result<Self, Invalid> {
        match u8::try_from(stars) {
            Ok(s @ 1..=5) => Ok(Self(s)),
            _ => Err(Invalid::OutOfRange(1, 5)),
        }
    }

    pub fn stars(self) -> u8 {
        self.0
    }
}

/// An optional review text, at most 2,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment(String);

impl Comment {
    pub const MAX_CHARS: usize = 2_000;

    /// Blank comments become no comment.
    pub fn parse(raw: &str) -> Result<Option<Self>, Invalid> {
        // The limit applies to what the client sent (the contracts' maxLength).
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(Invalid::TooLong(Self::MAX_CHARS));
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self(trimmed.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub id: ReviewId,
    pub product_id: ProductId,
    pub user_id: UserId,
    pub rating: Rating,
    pub comment: Option<Comment>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    pub product_id: ProductId,
    pub user_id: UserId,
    pub rating: Rating,
    pub comment: Option<Comment>,
}

impl NewReview {
    pub fn parse(
        product_id: ProductId,
        user_id: i64,
        rating: i64,
        comment: Option<&str>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if user_id <= 0 {
            errors.push(FieldError::new("user_id", "must be a positive id"));
        }
        let rating = Rating::parse(rating).map_err(|r| errors.push(FieldError::new("rating", r)));
        let comment = match comment.map(Comment::parse).transpose() {
            Ok(c) => c.flatten(),
            Err(r) => {
                errors.push(FieldError::new("comment", r));
                None
            }
        };
        match rating {
            Ok(rating) if errors.is_empty() => Ok(Self {
                product_id,
                user_id: UserId(user_id),
                rating,
                comment,
            }),
            _ => Err(errors),
        }
    }
}

/// The order a reservation is for: 1–64 characters of `[A-Za-z0-9_-]` (the seed's
/// `ORD-12345` is one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::Malformed(
                "1–64 characters of letters, digits, '-' and '_'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units of one product in a reservation: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 10_000;

    pub fn parse(units: i64) -> Result<Self, Invalid> {
        if (1..=Self::MAX).contains(&units) {
            Ok(Self(units))
        } else {
            Err(Invalid::OutOfRange(1, Self::MAX))
        }
    }

    pub fn units(self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReservationLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Reserved,
    Released,
}

/// Stock held for an order. `lines` are sorted by product id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: OrderId,
    pub state: ReservationState,
    pub lines: Vec<ReservationLine>,
}

/// A validated request to reserve: 1–100 lines, one per product, sorted by product id
/// (so the same request always has the same canonical form, and concurrent reservations
/// lock products in one order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    pub order_id: OrderId,
    pub lines: Vec<ReservationLine>,
}

impl NewReservation {
    pub const MAX_LINES: usize = 100;

    pub fn parse(order_id: &str, lines: &[(i64, i64)]) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let order_id = OrderId::parse(order_id)
            .map_err(|r| errors.push(FieldError::new("order_id", r)))
            .ok();
        if lines.is_empty() || lines.len() > Self::MAX_LINES {
            errors.push(FieldError::new(
                "lines",
                format!("must hold 1–{} lines", Self::MAX_LINES),
            ));
        }
        let mut parsed = Vec::with_capacity(lines.len());
        for (i, (product_id, quantity)) in lines.iter().enumerate() {
            if *product_id <= 0 {
                errors.push(FieldError::new(
                    format!("lines[{i}].product_id"),
                    "must be a positive id",
                ));
            }
            match Quantity::parse(*quantity) {
                Ok(quantity) => parsed.push(ReservationLine {
                    product_id: ProductId(*product_id),
                    quantity,
                }),
                Err(r) => errors.push(FieldError::new(format!("lines[{i}].quantity"), r)),
            }
        }
        parsed.sort();
        if parsed
            .windows(2)
            .any(|w| w[0].product_id == w[1].product_id)
        {
            errors.push(FieldError::new("lines", "must name each product once"));
        }
        match order_id {
            Some(order_id) if errors.is_empty() => Ok(Self {
                order_id,
                lines: parsed,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The by-value parse (for stored names) accepts and refuses exactly what `parse`
    /// does, with the same messages, ASCII or not.
    #[test]
    fn parse_owned_agrees_with_parse() {
        let long_ascii = "a".repeat(ProductName::MAX_CHARS);
        let long_wide = "é".repeat(ProductName::MAX_CHARS);
        let cases = [
            "Laptop".to_owned(),
            "  Laptop ".to_owned(),
            String::new(),
            "   ".to_owned(),
            "a\u{7f}b".to_owned(),
            "a\tb".to_owned(),
            "a\u{85}b".to_owned(),
            "Café ☕".to_owned(),
            long_ascii.clone(),
            format!("{long_ascii}a"),
            format!("{long_ascii}\t"),
            format!(" {long_ascii} "),
            long_wide.clone(),
            format!("{long_wide}é"),
            format!("{long_wide}\u{85}"),
        ];
        for raw in cases {
            let by_ref = ProductName::parse(&raw);
            let by_value = ProductName::parse_owned(raw.clone());
            assert_eq!(by_ref, by_value, "{raw:?}");
        }
    }

    #[test]
    fn new_product_reports_every_bad_field() {
        let errors = NewProduct::parse("  ", -1.0, -5).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "price", "stock"]);
        let ok = NewProduct::parse(" Laptop ", 999.99, 50).unwrap();
        assert_eq!(ok.name.as_str(), "Laptop");
        assert_eq!(ok.price.minor(), 99_999);
        assert_eq!(ok.stock.units(), 50);
    }

    #[test]
    fn names_and_stock_have_bounds() {
        assert!(ProductName::parse(&"x".repeat(200)).is_ok());
        assert!(ProductName::parse(&"x".repeat(201)).is_err());
        assert!(ProductName::parse("tab\there").is_err());
        assert!(Stock::parse(i64::from(i32::MAX)).is_ok());
        assert!(Stock::parse(i64::from(i32::MAX) + 1).is_err());
        assert!(NewProduct::parse("Pen", 1.005, 1).is_err());
    }

    #[test]
    fn ratings_are_one_to_five() {
        for bad in [0, 6, -1, 256] {
            assert!(Rating::parse(bad).is_err(), "{bad}");
        }
        for good in 1..=5 {
            assert_eq!(Rating::parse(good).unwrap().stars() as i64, good);
        }
        let errs = NewReview::parse(ProductId(1), 0, 9, Some(&"c".repeat(2001))).unwrap_err();
        assert_eq!(errs.len(), 3);
        let review = NewReview::parse(ProductId(1), 3, 5, Some("   ")).unwrap();
        assert_eq!(review.comment, None);
    }

    #[test]
    fn reservations_are_canonical_and_checked() {
        let r = NewReservation::parse("ORD-12345", &[(2, 1), (1, 3)]).unwrap();
        let ids: Vec<i64> = r.lines.iter().map(|l| l.product_id.0).collect();
        assert_eq!(ids, [1, 2]);
        assert!(NewReservation::parse("ORD 1", &[(1, 1)]).is_err());
        assert!(NewReservation::parse("ORD-1", &[]).is_err());
        assert!(NewReservation::parse("ORD-1", &[(1, 1), (1, 2)]).is_err());
        let errors = NewReservation::parse("", &[(0, 0)]).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert!(NewReservation::parse("ORD-1", &[(1, 10_001)]).is_err());
    }

    #[test]
    fn patches_validate_only_present_fields() {
        let patch = ProductPatch::parse(None, Some(5.0), None).unwrap();
        assert_eq!(patch.price.unwrap().minor(), 500);
        assert!(patch.name.is_none());
        assert!(ProductPatch::parse(None, None, None).unwrap().is_empty());
        assert_eq!(
            ProductPatch::parse(Some(""), Some(-1.0), None)
                .unwrap_err()
                .len(),
            2
        );
    }
}
