//! `spawn_app`: the real catalog service on a free port, with a database of its own.

use std::path::PathBuf;
use std::sync::Arc;

use settings::Settings;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's catalog keeps its data, kept across restarts of the service, and the
/// accounts service it asks about reviewers (users 1–5 exist).
pub struct TestData {
    pub settings: Settings,
    _dir: tempfile::TempDir,
    /// PostgreSQL: catalog's database, dropped with the test data.
    _pg: Option<storage::testing::PostgresDatabase>,
    _accounts: TestApp,
}

impl TestData {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: PathBuf::from(dir.path()),
            ..Settings::default()
        };
        settings.services.catalog.port = 0;
        let mut pg = None;
        if backend == Backend::Postgres {
            let db = storage::testing::postgres_database(&storage::testing::fresh_name()).await;
            settings.services.catalog.database_url = Some(db.url.clone());
            pg = Some(db);
        }
        // A real accounts service on its own free port, with a few users.
        settings.services.accounts.port = 0;
        let accounts = accounts::build(&settings).await.unwrap();
        let store = accounts::AccountsStore::new(accounts.database().clone());
        accounts::seed::seed(&store, 5).await.unwrap();
        settings.services.accounts.port = accounts.port();
        let accounts = TestApp::run(accounts);
        TestData {
            settings,
            _dir: dir,
            _pg: pg,
            _accounts: accounts,
        }
    }

    /// PostgreSQL: the name of catalog's database.
    pub fn pg_name(&self) -> Option<&str> {
        self._pg.as_ref().map(|pg| pg.name())
    }

    pub async fn spawn(&self) -> TestApp {
        TestApp::run(catalog::build(&self.settings).await.unwrap())
    }
}

pub struct TestApp {
    pub base: String,
    /// Carries the service's identity token, as the gateway's calls do.
    pub client: reqwest::Client,
    pub token: Option<reqwest::header::HeaderValue>,
    stop: Arc<Notify>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    fn run(app: server::Application) -> TestApp {
        let base = format!("http://{}", app.local_addr());
        let token = server::testing::token_for(&app);
        let stop = Arc::new(Notify::new());
        let signal = stop.clone();
        let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
        TestApp {
            base,
            client: server::testing::client_with(token.as_ref()),
            token,
            stop,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST` a JSON body with an idempotency key.
    pub async fn post(&self, path: &str, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Stops the service and waits until it has released its port and database.
    pub async fn stop(self) {
        self.stop.notify_one();
        self.handle.await.unwrap().unwrap();
    }
}

/// A fresh SQLite-backed catalog, for tests that need only one run of the service.
pub async fn spawn_app() -> (TestApp, TestData) {
    let data = TestData::new(Backend::Sqlite).await;
    (data.spawn().await, data)
}

/// Every product id, walking the list with `limit`.
pub async fn all_product_ids(app: &TestApp, limit: u32) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/v1/products?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = app.get(&url).await.json().await.unwrap();
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}
