//! Accounts' types and rules: no I/O, no wire formats.

use problem::FieldError;
use values::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub i64);

/// A display name: trimmed, 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub const MAX_CHARS: usize = 100;

    /// The same rule as a product's name ([`values::single_line`]), at most 100 characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Ok(Self(values::single_line(raw, Self::MAX_CHARS)?.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plausible email address: `local@domain.tld` with an ASCII domain, at most 254
/// characters, no spaces (the OpenAPI pattern of `CreateUser.email` says the same);
/// the domain is lower-cased (the local part is the mailbox owner's and kept as given).
/// Plausible, not proven: only a confirmation mail proves an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = || Invalid::Malformed("an email address like jane@example.com");
        if raw.chars().count() > Self::MAX_LEN {
            return Err(Invalid::TooLong(Self::MAX_LEN));
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(invalid)?;
        let local_ok = (1..=64).contains(&local.chars().count())
            && !local
                .chars()
                .any(|c| c == '@' || c.is_whitespace() || c.is_control());
        // An ASCII host name of at least two labels; each label alphanumeric with inner
        // hyphens. (Internationalised domains travel as punycode, which is ASCII.)
        let label_ok = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        let domain_ok = domain.split('.').count() >= 2 && domain.split('.').all(label_ok);
        if !local_ok || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub email: Email,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
}

impl NewUser {
    /// Validates every field and reports every bad one.
    pub fn parse(name: &str, email: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = UserName::parse(name).map_err(|r| errors.push(FieldError::new("name", r)));
        let email = Email::parse(email).map_err(|r| errors.push(FieldError::new("email", r)));
        match (name, email) {
            (Ok(name), Ok(email)) => Ok(Self { name, email }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_emails_pass_and_are_normalised() {
        for ok in ["jane@example.com", "a.b+tag@sub.example.co.uk", "x@b.io"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Email::parse("Jane@EXAMPLE.com").unwrap().as_str(),
            "Jane@example.com"
        );
        // What the contract's pattern refuses, the domain refuses too.
        assert!(Email::parse(" jane@example.com").is_err());
        assert!(Email::parse("jane@exämple.com").is_err());
    }

    #[test]
    fn implausible_emails_are_refused() {
        for bad in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "jane@example",
            "jane@.com",
            "jane@example..com",
            "ja ne@example.com",
            "jane@exa mple.com",
            "jane@-example.com",
            "jane@example.com.",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn new_user_reports_every_bad_field() {
        let errors = NewUser::parse(" ", "nope").unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "email"]);
        assert!(UserName::parse(&"n".repeat(101)).is_err());
    }
}
