//! Structured logs through `tracing`: JSON lines for machines, readable lines on a terminal.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
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
/// JSON lines carry the event's fields at the top level and the current span's fields
/// (`correlation_id`, `trace_id`, ...) under `span`.
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
        Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .fmt_fields(crate::span_fields::JsonSpanFields)
                    .with_writer(writer),
            ),
        )
    } else {
        Box::new(registry.with(tracing_subscriber::fmt::layer().with_writer(writer)))
    })
}
