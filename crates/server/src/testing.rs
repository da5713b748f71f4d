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
