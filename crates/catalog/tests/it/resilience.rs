//! Catalog calls accounts (does a review's author exist?) through the resilience layer:
//! with accounts stopped, review creation fails fast with a 503 problem once the breaker
//! is open, and recovers by itself when accounts returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use settings::Settings;
use tokio::sync::Notify;

struct Running {
    base: String,
    port: u16,
    stop: Arc<Notify>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.notify_one();
        self.handle.await.unwrap().unwrap();
    }
}

async fn run(app: server::Application) -> Running {
    let base = format!("http://{}", app.local_addr());
    let port = app.port();
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
    Running {
        base,
        port,
        stop,
        handle,
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    key: String,
    body: Value,
) -> reqwest::Response {
    client
        .post(url)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn review_creation_fails_fast_while_accounts_is_down_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.services.accounts.port = 0;
    settings.services.catalog.port = 0;
    settings.outbound.timeout = Duration::from_millis(500);
    settings.outbound.max_attempts = 2;
    settings.outbound.backoff_base = Duration::from_millis(5);
    settings.outbound.breaker_window = 10;
    settings.outbound.breaker_minimum_calls = 4;
    settings.outbound.breaker_wait = Duration::from_millis(300);
    settings.outbound.breaker_probes = 1;

    let accounts = run(accounts::build(&settings).await.unwrap()).await;
    settings.services.accounts.port = accounts.port;
    let catalog = run(catalog::build(&settings).await.unwrap()).await;
    let client = reqwest::Client::new();

    let user = post(
        &client,
        format!("{}/v1/users", accounts.base),
        "u".into(),
        json!({"name": "Jane", "email": "jane@example.com"}),
    )
    .await;
    assert_eq!(user.status(), 201);
    let product = post(
        &client,
        format!("{}/v1/products", catalog.base),
        "p".into(),
        json!({"name": "Laptop", "price": 999.99, "stock": 50}),
    )
    .await;
    assert_eq!(product.status(), 201);
    let review = |n: u32, user: i64| {
        post(
            &client,
            format!("{}/v1/products/1/reviews", catalog.base),
            format!("r{n}"),
            json!({"user_id": user, "rating": 5}),
        )
    };
    assert_eq!(review(0, 1).await.status(), 201);
    // The author is checked with accounts: an unknown user is the caller's mistake.
    let unknown = review(1, 999).await;
    assert_eq!(unknown.status(), 422);

    let port = accounts.port;
    accounts.stop().await;
    let mut fast = None;
    for n in 2..40 {
        let began = Instant::now();
        let r = review(n, 1).await;
        let took = began.elapsed();
        assert_eq!(r.status(), 503, "accounts is down");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["type"], "https://brigade.dev/problems/unavailable");
        if p["detail"]
            .as_str()
            .unwrap_or("")
            .contains("circuit breaker")
        {
            assert!(
                took < Duration::from_millis(100),
                "an open breaker fails fast, took {took:?}"
            );
            fast = Some(n);
            break;
        }
    }
    assert!(fast.is_some(), "the breaker opened");
    let metrics = client
        .get(format!("{}/metrics", catalog.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"brigade_breaker_state{breaker="accounts"} 1"#),
        "{metrics}"
    );

    // Accounts returns on the same port; catalog recovers without being touched.
    settings.services.accounts.port = port;
    let accounts = run(accounts::build(&settings).await.unwrap()).await;
    let recovered = async {
        let mut n = 100;
        loop {
            n += 1;
            if review(n, 1).await.status() == 201 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), recovered)
        .await
        .expect("recovered within 10 s");
    accounts.stop().await;
    catalog.stop().await;
}
