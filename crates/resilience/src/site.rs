//! What names a downstream's metric series and log lines: the downstream, and the service
//! calling it. Two services of one process (`brigade up`) that both call `accounts` then
//! keep apart series, and each service's `/metrics` shows its own.

use std::sync::Arc;

/// A downstream as seen from one caller.
#[derive(Debug, Clone)]
pub struct CallSite {
    /// The calling service; unknown for a bare client (tests, tools), and then left out of
    /// the labels.
    service: Option<&'static str>,
    downstream: Arc<str>,
}

impl CallSite {
    /// `downstream`, called from an unnamed caller.
    pub fn new(downstream: impl Into<String>) -> Self {
        Self {
            service: None,
            downstream: Arc::from(downstream.into()),
        }
    }

    /// `downstream`, called from `service`.
    pub fn of_service(service: &'static str, downstream: impl Into<String>) -> Self {
        Self {
            service: Some(service),
            ..Self::new(downstream)
        }
    }

    pub fn downstream(&self) -> &str {
        &self.downstream
    }

    pub fn service(&self) -> Option<&'static str> {
        self.service
    }

    /// A series' labels: `service` (when known), then `key` naming the downstream.
    pub(crate) fn labels(&self, key: &'static str) -> Vec<metrics::Label> {
        let mut labels = Vec::with_capacity(4);
        if let Some(service) = self.service {
            labels.push(metrics::Label::new("service", service));
        }
        labels.push(metrics::Label::new(key, Arc::clone(&self.downstream)));
        labels
    }
}

impl From<&str> for CallSite {
    fn from(downstream: &str) -> Self {
        Self::new(downstream)
    }
}
