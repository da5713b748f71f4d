//! What can go wrong talking to a backend.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The backend could not be reached or dropped the connection; worth retrying.
    #[error("{backend} is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// The backend did not take responsibility for a publish (a NACKed publisher confirm,
    /// no PubAck, a rolled-back transaction): the message may not have been stored.
    #[error("{backend} did not confirm the publish: {reason}")]
    NotConfirmed {
        backend: &'static str,
        reason: String,
    },
    /// The operation did not finish within its deadline.
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    /// A queue, stream or group that does not exist, or a name the backend refuses.
    #[error("{0}")]
    NotFound(String),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The consumer was closed (its connection went away or it was shut down).
    #[error("the consumer is closed")]
    Closed,
    #[error("{backend}: {reason}")]
    Backend {
        backend: &'static str,
        reason: String,
    },
}

impl MessagingError {
    pub fn backend(backend: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Backend {
            backend,
            reason: reason.to_string(),
        }
    }

    pub fn unavailable(backend: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            reason: reason.to_string(),
        }
    }

    /// Whether trying again may succeed (the resilience layer retries only these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::NotConfirmed { .. } | Self::Timeout { .. }
        )
    }
}

pub type Result<T, E = MessagingError> = std::result::Result<T, E>;
