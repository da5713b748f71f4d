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
    /// Sends the service's identity token (as the gateway would) on every request, when
    /// the service requires one.
    pub client: reqwest::Client,
    /// That token, for a test's own clients (gRPC metadata, a raw request); `None` when
    /// the service requires none.
    pub token: Option<http::HeaderValue>,
    stop: Arc<Notify>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn run(app: Application) -> Running {
        let base = format!("http://{}", app.local_addr());
        let token = token_for(&app);
        let stop = Arc::new(Notify::new());
        let signal = Arc::clone(&stop);
        let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
        Running {
            base,
            client: client_with(token.as_ref()),
            token,
            stop,
            handle,
        }
    }

    /// `request` with the service's identity token, for a test's own gRPC clients.
    pub fn authorize<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Some(value) = self
            .token
            .as_ref()
            .and_then(|t| tonic::metadata::AsciiMetadataValue::try_from(t.as_bytes()).ok())
        {
            request
                .metadata_mut()
                .insert(crate::identity::HEADER_NAME, value);
        }
        request
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

/// A client that sends `token` as the identity header on every request.
#[allow(clippy::expect_used)]
pub fn client_with(token: Option<&http::HeaderValue>) -> reqwest::Client {
    let mut headers = http::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(crate::identity::HEADER, token.clone());
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a reqwest client builds")
}

/// A day-long identity token for calling `app` directly, when it requires one.
pub fn token_for(app: &Application) -> Option<http::HeaderValue> {
    app.identity()
        .and_then(|signer| signer.token_for("test", std::time::Duration::from_secs(86_400)))
}

/// A gRPC channel whose calls carry `token` (a test calling a service directly).
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel` with `token` on every call.
pub fn authorized(channel: tonic::transport::Channel, token: Option<http::HeaderValue>) -> Channel {
    tonic::service::interceptor::InterceptedService::new(channel, Bearer(token))
}

/// Puts a fixed identity token on every call.
#[derive(Clone, Debug)]
pub struct Bearer(Option<http::HeaderValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self
            .0
            .as_ref()
            .and_then(|t| tonic::metadata::AsciiMetadataValue::try_from(t.as_bytes()).ok())
        {
            request
                .metadata_mut()
                .insert(crate::identity::HEADER_NAME, value);
        }
        Ok(request)
    }
}
