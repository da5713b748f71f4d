//! The users resource over HTTP, and its committed contract.

use std::sync::Arc;

use serde_json::{Value, json};
use settings::Settings;
use tokio::sync::Notify;

pub(crate) struct App {
    pub(crate) base: String,
    pub(crate) token: Option<reqwest::header::HeaderValue>,
    client: reqwest::Client,
    stop: Arc<Notify>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await.0
}

/// Accounts with `configure`'s settings, and its database.
async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> (App, storage::Database) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.services.accounts.port = 0;
    configure(&mut settings);
    let app = accounts::build(&settings).await.unwrap();
    let db = app.database().clone();
    let base = format!("http://{}", app.local_addr());
    let token = server::testing::token_for(&app);
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
    let app = App {
        base,
        client: server::testing::client_with(token.as_ref()),
        token,
        stop,
        handle,
        _dir: dir,
    };
    (app, db)
}

impl App {
    async fn post_user(&self, key: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/users", self.base))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn stop(self) {
        self.stop.notify_one();
        self.handle.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn users_are_created_read_listed_and_unique_by_email() {
    let app = spawn_app().await;
    let jane = app
        .post_user("u1", json!({"name": "Jane", "email": "jane@example.com"}))
        .await;
    assert_eq!(jane.status(), 201);
    assert_eq!(jane.headers()["location"], "/v1/users/1");
    let first_bytes = jane.bytes().await.unwrap();

    let replay = app
        .post_user("u1", json!({"name": "Jane", "email": "jane@example.com"}))
        .await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.bytes().await.unwrap(), first_bytes);

    let taken = app
        .post_user("u2", json!({"name": "Other", "email": "jane@EXAMPLE.com"}))
        .await;
    assert_eq!(taken.status(), 409);
    let p: Value = taken.json().await.unwrap();
    assert_eq!(p["type"], "https://brigade.dev/problems/conflict");

    let bad = app
        .post_user("u3", json!({"name": "", "email": "nope"}))
        .await;
    assert_eq!(bad.status(), 422);
    let p: Value = bad.json().await.unwrap();
    assert_eq!(p["errors"].as_array().unwrap().len(), 2);

    let got: Value = app.get("/v1/users/1").await.json().await.unwrap();
    assert_eq!(got["email"], "jane@example.com");
    let missing = app.get("/v1/users/2").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let page: Value = app.get("/v1/users?limit=10").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], Value::Null);
    app.stop().await;
}

/// Every database connection taken (the pool at its size, for longer than a request
/// waits for one): the request answers 503 with `Retry-After`, a problem the client can
/// act on, not 500; once a connection frees, requests are served again.
#[tokio::test]
async fn a_database_pool_timeout_answers_503_with_retry_after() {
    let (app, db) = spawn_app_with(|s| {
        s.database.max_connections = 1;
        s.database.acquire_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let created = app
        .post_user("p1", json!({"name": "Jane", "email": "jane@example.com"}))
        .await;
    assert_eq!(created.status(), 201);
    let held = db.pool().acquire().await.unwrap();
    let busy = app.get("/v1/users/1").await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(busy.headers()["content-type"], "application/problem+json");
    let p: Value = busy.json().await.unwrap();
    assert_eq!(p["type"], "https://brigade.dev/problems/unavailable");
    drop(held);
    let served = app.get("/v1/users/1").await;
    assert_eq!(served.status(), 200);
    app.stop().await;
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/accounts.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = serde_json::to_string_pretty(&accounts::rest::openapi()).unwrap() + "\n";
    assert!(
        generated == committed,
        "openapi/accounts.json is out of date with the code. Regenerate it with \
         `cargo run -q -p brigade -- openapi --write` and review the diff."
    );
}
