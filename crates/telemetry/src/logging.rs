//! Structured logs through `tracing`: JSON lines for machines, readable lines on a terminal.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written (to stderr; stdout is for what a command prints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Installs the global subscriber, writing to stderr. `filter` uses `RUST_LOG` syntax
/// (`info,sqlx=warn`). A second call (tests, an embedding program) leaves the first
/// subscriber in place.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Already initialised: keep the existing subscriber.
    let _ = subscriber(json, filter, std::io::stderr)?.try_init();
    Ok(())
}

/// The subscriber [`init_logging`] installs, with any writer (tests capture lines).
/// JSON lines (`crate::json_lines`) carry the event's fields at the top level, the
/// request's correlation ID, trace ID, method, path and route when written on behalf of a
/// request, and the current span's name and fields under `span`. Human lines start with
/// the request's correlation ID.
pub fn subscriber<W>(
    json: bool,
    filter: &str,
    writer: W,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    Ok(if json {
        Box::new(registry.with(crate::json_lines::JsonLines::new(writer)))
    } else {
        Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .event_format(WithCorrelation(tracing_subscriber::fmt::format()))
                    .with_writer(writer),
            ),
        )
    })
}

/// The human format, with the request's correlation ID in front of each line written on
/// behalf of a request (the request span has no fields to show it).
struct WithCorrelation<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithCorrelation<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        crate::context::with_current(|request| {
            write!(writer, "[{}] ", request.correlation_id.as_str())
        })
        .transpose()?;
        self.0.format_event(ctx, writer, event)
    }
}
