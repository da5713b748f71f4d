//! For any service's tests (feature `testing`): a built [`Application`] served on its
//! port until the test drops it, with a client pointed at it.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Application;

/// A service running in the test's runtime. Dropping it stops the service (gracefully,
/// in the background).
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    stop: Arc<Notify>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn run(app: Application) -> Running {
        let base = format!("http://{}", app.local_addr());
        let stop = Arc::new(Notify::new());
        let signal = Arc::clone(&stop);
        let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
        Running {
            base,
            client: reqwest::Client::new(),
            stop,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`. Panics if the request cannot be sent (a test's failure).
    #[allow(clippy::expect_used)]
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET reaches the service")
    }

    /// `POST path` with `body` as JSON under `Idempotency-Key: key`.
    #[allow(clippy::expect_used)]
    pub async fn post(&self, path: &str, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("POST reaches the service")
    }

    /// Ends the service the way a crash would for its consumers and background tasks:
    /// they are dropped wherever they are (between a call and its commit, holding
    /// leases), nothing is closed. (HTTP connections already open live on in axum's own
    /// tasks: to take a service others call away, kill its process.)
    pub async fn crash(mut self) {
        self.handle.abort();
        let _ = (&mut self.handle).await;
    }

    /// Stops the service and waits until it has.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        let _ = (&mut self.handle).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}
