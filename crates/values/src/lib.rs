//! Domain value rules more than one service shares, and [`Invalid`], the typed reason a
//! domain constructor refuses a value. Its `Display` is the reason the API shows in a
//! problem's `errors[].reason`, so every service words the same refusal the same way.

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {0}")]
    AboveMax(i64),
    #[error("must be between {0} and {1}")]
    OutOfRange(i64, i64),
    /// Not of the expected form, which the text describes ("an email address like ...").
    #[error("must be {0}")]
    Malformed(&'static str),
}

impl From<Invalid> for String {
    fn from(invalid: Invalid) -> String {
        invalid.to_string()
    }
}

/// The rule for single-line display text (a product's name, a user's name): `raw` without
/// its surrounding whitespace, which must be 1 to `max_chars` characters with no control
/// characters.
pub fn single_line(raw: &str, max_chars: usize) -> Result<&str, Invalid> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Invalid::Empty);
    }
    // The limit applies to what the client sent, as the contracts' `maxLength` says: a
    // value over it is refused even when trimming would bring it under.
    // ASCII (the common case) in one pass over the bytes: one char per byte, and the
    // control characters are 0x00-0x1F and 0x7F. Names read back from a database are
    // checked again, 50 or more per page.
    let (chars, control) = if raw.is_ascii() {
        let bytes = trimmed.as_bytes();
        (raw.len(), bytes.iter().any(|b| *b < 0x20 || *b == 0x7f))
    } else {
        (raw.chars().count(), trimmed.chars().any(char::is_control))
    };
    if chars > max_chars {
        return Err(Invalid::TooLong(max_chars));
    }
    if control {
        return Err(Invalid::ControlCharacters);
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_text_is_trimmed_bounded_and_free_of_controls() {
        assert_eq!(single_line("  Laptop  ", 10), Ok("Laptop"));
        assert_eq!(single_line("Café ☕", 6), Ok("Café ☕"));
        assert_eq!(single_line("Café ☕x", 6), Err(Invalid::TooLong(6)));
        assert_eq!(single_line(" \t\n ", 10), Err(Invalid::Empty));
        assert_eq!(single_line("a\u{7}b", 10), Err(Invalid::ControlCharacters));
        assert_eq!(single_line("a\u{85}b", 10), Err(Invalid::ControlCharacters));
        assert_eq!(single_line("abcdefghijk", 10), Err(Invalid::TooLong(10)));
        // The limit is on what was sent (the contracts' maxLength), not what trimming leaves.
        assert_eq!(single_line(" abcdefghij", 10), Err(Invalid::TooLong(10)));
        assert_eq!(
            single_line(" \u{ae}bcdefghij", 10),
            Err(Invalid::TooLong(10))
        );
    }

    #[test]
    fn reasons_read_as_the_api_shows_them() {
        assert_eq!(
            String::from(Invalid::TooLong(200)),
            "must be at most 200 characters"
        );
        assert_eq!(
            Invalid::OutOfRange(1, 5).to_string(),
            "must be between 1 and 5"
        );
        assert_eq!(
            Invalid::Malformed("an email address like jane@example.com").to_string(),
            "must be an email address like jane@example.com"
        );
    }
}
