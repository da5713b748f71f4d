//! Span fields as a JSON object, for the JSON log format.
//!
//! Why not tracing-subscriber's `JsonFields`: it builds a map of `serde_json::Value`s for
//! every new span and then serializes the map. Every request opens a span (the request
//! span, with its correlation and trace IDs), so at the default `info` filter that was
//! ≈ 1.3 µs of a ≈ 10 µs cached read (BENCHMARKS.md). This writes the same object
//! straight into the span's buffer. The JSON event formatter reads it back as an object,
//! so the log lines are unchanged.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

thread_local! {
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // Written into a buffer kept by the thread, then into the span's (empty) buffer in
        // one go: written field by field, the span's `String` grew four or five times per
        // request span.
        let buffered = SCRATCH.try_with(|scratch| {
            // Taken only if free: a field's `Debug` may itself make a span.
            let mut scratch = scratch.try_borrow_mut().ok()?;
            scratch.clear();
            let written =
                write_object(&mut *scratch, &fields).and_then(|()| writer.write_str(&scratch));
            // One span with huge fields must not pin a huge buffer to the thread.
            if scratch.capacity() > 4096 {
                *scratch = String::new();
            }
            Some(written)
        });
        match buffered {
            Ok(Some(written)) => written,
            // Re-entered, or the thread is being torn down: write directly.
            _ => write_object(&mut writer, &fields),
        }
    }

    /// Fields recorded later (`Span::record`) join the object: its closing brace is
    /// taken off and put back after them. A field recorded twice appears twice; the last
    /// one wins when the line is read back.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let has_fields = match current.fields.strip_suffix('}') {
            Some(open) => {
                let has = open.len() > 1;
                current.fields.truncate(open.len());
                has
            }
            None => {
                current.fields.clear();
                false
            }
        };
        let reopened = !current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut object = Object::new(&mut writer, reopened);
        object.any = has_fields;
        fields.record(&mut object);
        object.close()
    }
}

/// Writes `fields` as one JSON object.
fn write_object<W: Write, R: RecordFields>(out: &mut W, fields: &R) -> fmt::Result {
    let mut object = Object::new(out, false);
    fields.record(&mut object);
    object.close()
}

/// Writes `{"name":value,...}` as fields are visited.
struct Object<'a, W: Write> {
    out: &'a mut W,
    /// `{` already written.
    opened: bool,
    /// A field already written (the next needs a comma).
    any: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Object<'a, W> {
    fn new(out: &'a mut W, opened: bool) -> Self {
        Object {
            out,
            opened,
            any: false,
            result: Ok(()),
        }
    }

    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_str(match (self.opened, self.any) {
            (false, _) => "{",
            (true, true) => ",",
            (true, false) => "",
        })?;
        self.opened = true;
        self.any = true;
        write_str(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
    }

    fn close(self) -> fmt::Result {
        self.result?;
        self.out.write_str(if self.opened { "}" } else { "{}" })
    }
}

impl<W: Write> Visit for Object<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| write_str(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities: those become strings.
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value}"));
        } else {
            self.field(field, |out| write!(out, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// A JSON string: quoted, with `"`, `\` and control characters escaped (RFC 8259 §7).
fn write_str<W: Write>(out: &mut W, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if (c as u32) < 0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", c as u32)?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }
}
