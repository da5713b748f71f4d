//! JSON log lines: our own `tracing` layer, because what it writes costs nothing until a
//! line is written.
//!
//! Why not tracing-subscriber's JSON formatter: its layer formats every new span's fields
//! into a string when the span is created, whether or not a line is ever logged inside it.
//! Every request opens a span, and at the default `info` filter that formatting was the
//! largest cost the logs added to a request that logged nothing (BENCHMARKS.md, issue 12).
//! Here a span's fields are formatted only if it has any (the request span has none), and
//! the request's own identity, its correlation ID, trace ID, method, path and route, is
//! read from [`crate::context`] when a line is written. So every line written on behalf of
//! a request carries its correlation ID, however deeply nested the span it is written in.
//!
//! A line: `{"timestamp":…,"level":…,"message":…,<event fields>,"target":…,
//! "correlation_id":…,"trace_id":…,"method":…,"path":…,"route":…,"span":{"name":…,<span
//! fields>}}`; the request members only inside a request, `span` only inside a span.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The layer: writes one JSON line per enabled event to its writer.
pub struct JsonLines<W> {
    make_writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(make_writer: W) -> Self {
        JsonLines { make_writer }
    }
}

/// A span's fields as the members of a JSON object (no braces), kept in the span's
/// extensions; absent for a span without fields.
struct SpanMembers(String);

thread_local! {
    /// Each line is built here and written with one `write_all`; the buffer is kept by the
    /// thread so a line costs no allocation.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.values().is_empty() {
            return;
        }
        let mut members = String::new();
        let mut object = Object::members(&mut members, false);
        attrs.record(&mut object);
        if object.result.is_ok()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(SpanMembers(members));
        }
    }

    /// Fields recorded later (`Span::record`) join the span's members. A field recorded
    /// twice appears twice; the last one wins when the line is read back.
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Written apart and kept only if every field wrote: a field whose `Debug` fails
        // must not leave half a member behind in every later line of the span.
        let mut added = String::new();
        let mut object = Object::members(&mut added, false);
        values.record(&mut object);
        if object.result.is_err() || added.is_empty() {
            return;
        }
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanMembers>() {
            Some(SpanMembers(members)) => {
                if !members.is_empty() {
                    members.push(',');
                }
                members.push_str(&added);
            }
            None => extensions.insert(SpanMembers(added)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let written = LINE.try_with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                let result = self.write_line(&mut line, event, &ctx);
                // One huge line must not pin a huge buffer to the thread.
                if line.capacity() > 16 * 1024 {
                    *line = String::new();
                }
                result
            }
            // Re-entered (a field's `Debug` logged something): a buffer of its own.
            Err(_) => self.write_line(&mut String::new(), event, &ctx),
        });
        // A line that cannot be written is dropped: logging must never fail a request.
        let _ = written;
    }
}

impl<W> JsonLines<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn write_line<S>(
        &self,
        line: &mut String,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        line.push_str("{\"timestamp\":\"");
        write_timestamp(line, SystemTime::now())?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        let mut fields = Object::members(line, true);
        event.record(&mut fields);
        fields.result?;
        line.push_str(",\"target\":");
        write_str(line, meta.target())?;
        crate::context::with_current(|request| write_request(line, request)).transpose()?;
        if let Some(span) = ctx.event_span(event) {
            line.push_str(",\"span\":{\"name\":");
            write_str(line, span.name())?;
            if let Some(SpanMembers(members)) = span.extensions().get::<SpanMembers>()
                && !members.is_empty()
            {
                line.push(',');
                line.push_str(members);
            }
            line.push('}');
        }
        line.push_str("}\n");
        self.make_writer
            .make_writer_for(meta)
            .write_all(line.as_bytes())
            .map_err(|_| fmt::Error)
    }
}

/// The members a line written on behalf of a request carries.
fn write_request(line: &mut String, request: &crate::RequestContext) -> fmt::Result {
    line.push_str(",\"correlation_id\":");
    write_str(line, request.correlation_id.as_str())?;
    line.push_str(",\"trace_id\":\"");
    let mut hex = [0u8; 32];
    crate::context::write_hex(&mut hex, request.trace.trace_id);
    line.push_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?);
    line.push_str("\",\"method\":");
    write_str(line, request.method().as_str())?;
    line.push_str(",\"path\":");
    write_str(line, request.instance())?;
    if let Some(route) = request.route() {
        line.push_str(",\"route\":");
        write_str(line, route)?;
    }
    Ok(())
}

/// RFC 3339 in UTC with microseconds (`2026-12-03T21:04:05.123456Z`), as tracing-subscriber
/// writes it.
fn write_timestamp(out: &mut String, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = crate::civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// Writes `"name":value` members, comma-separated, as fields are visited: into an object
/// whose `{` (and perhaps some members) the caller has written.
struct Object<'a, W: Write> {
    out: &'a mut W,
    /// A member already written (the next needs a comma).
    any: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Object<'a, W> {
    fn members(out: &'a mut W, any: bool) -> Self {
        Object {
            out,
            any,
            result: Ok(()),
        }
    }

    fn key(&mut self, field: &Field) -> fmt::Result {
        if self.any {
            self.out.write_char(',')?;
        }
        self.any = true;
        write_str(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
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
    fn timestamps_are_rfc_3339_in_utc() {
        let at = |secs: u64, micros: u64| {
            let mut out = String::new();
            let t = UNIX_EPOCH
                + std::time::Duration::from_secs(secs)
                + std::time::Duration::from_micros(micros);
            write_timestamp(&mut out, t).unwrap();
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(at(1_709_251_199, 0), "2024-02-29T23:59:59.000000Z");
        assert_eq!(at(1_796_256_000, 0), "2026-12-03T00:00:00.000000Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }
}
