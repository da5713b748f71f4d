//! `spawn_app`: the real payments sandbox on a free port, with a database of its own,
//! and typed client helpers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use settings::Settings;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    stop: Arc<Notify>,
    handle: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
    /// PostgreSQL: the sandbox's database, dropped with the app.
    _pg: Option<storage::testing::PostgresDatabase>,
}

/// A sandbox on `backend`, on port 0 in a temporary data directory.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.services.payments_sandbox.port = 0;
    let mut pg = None;
    if backend == Backend::Postgres {
        let db = storage::testing::postgres_database(&storage::testing::fresh_name()).await;
        settings.services.payments_sandbox.database_url = Some(db.url.clone());
        pg = Some(db);
    }
    let app = payments::build(&settings).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        stop,
        handle,
        _dir: dir,
        _pg: pg,
    }
}

/// A charge's body for `order_id`.
pub fn charge_body(amount: i64, order_id: &str) -> Value {
    json!({"amount": amount, "currency": "usd", "order_id": order_id})
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST` a JSON body with an idempotency key.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn charge(&self, key: &str, body: &Value) -> reqwest::Response {
        self.post("/v1/charges", key, body).await
    }

    pub async fn refund(&self, key: &str, body: &Value) -> reqwest::Response {
        self.post("/v1/refunds", key, body).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Sets the behaviour; panics unless it is accepted.
    pub async fn behave(&self, behaviour: Value) -> Value {
        let response = self.put_behaviour(&behaviour).await;
        assert_eq!(response.status(), 200, "{behaviour}");
        response.json().await.unwrap()
    }

    pub async fn put_behaviour(&self, behaviour: &Value) -> reqwest::Response {
        self.client
            .put(self.url("/v1/sandbox/behaviour"))
            .json(behaviour)
            .send()
            .await
            .unwrap()
    }

    /// The ledger of `order_id`: its charges, oldest first.
    pub async fn ledger(&self, order_id: &str) -> Vec<Value> {
        let list = self
            .get_json(&format!("/v1/charges?order_id={order_id}"))
            .await;
        assert_eq!(list["object"], "list");
        list["data"].as_array().unwrap().clone()
    }

    /// Polls the ledger of `order_id` until it holds `n` charges, failing after `within`.
    pub async fn ledger_with(&self, order_id: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let ledger = self.ledger(order_id).await;
            if ledger.len() >= n {
                return ledger;
            }
            assert!(
                Instant::now() < deadline,
                "the ledger of {order_id} held {} charges after {within:?}, not {n}",
                ledger.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the service and waits until it has released its port and database.
    pub async fn stop(self) {
        self.stop.notify_one();
        self.handle.await.unwrap().unwrap();
    }
}

/// A problem+json answer's body, after checking its status and `type`.
pub async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("https://brigade.dev/problems/{slug}"),
        "{body}"
    );
    body
}
