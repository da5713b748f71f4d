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

fn addr_of(running: &Running) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], running.port))
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

/// Accounts and catalog on free ports over one data directory (outbound calls as
/// `outbound` sets them), with user 1 (Jane) and product 1 (Laptop) created; catalog
/// reaches accounts through `front`.
struct Pair {
    _dir: tempfile::TempDir,
    /// Catalog reaches accounts through it: accounts can go away and come back
    /// without anyone re-binding a released port.
    front: messaging::testing::TcpFront,
    settings: Settings,
    accounts: Running,
    catalog: Running,
    client: reqwest::Client,
}

async fn accounts_and_catalog(outbound: impl FnOnce(&mut settings::OutboundSettings)) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.services.accounts.port = 0;
    settings.services.catalog.port = 0;
    outbound(&mut settings.outbound);
    let accounts = run(accounts::build(&settings).await.unwrap()).await;
    let front = messaging::testing::TcpFront::to(addr_of(&accounts))
        .await
        .unwrap();
    settings.services.accounts.port = front.port();
    let catalog = run(catalog::build(&settings).await.unwrap()).await;
    // Both services share the data directory, so one token serves for both.
    let token = server::identity::Signer::for_settings(&settings)
        .unwrap()
        .token_for("test", Duration::from_secs(3600));
    let client = server::testing::client_with(token.as_ref());
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
    Pair {
        _dir: dir,
        front,
        settings,
        accounts,
        catalog,
        client,
    }
}

// A current-thread runtime (the default): the test's own recorder sees everything the
// test's servers record, and nothing of the tests running beside it.
#[tokio::test]
async fn review_creation_fails_fast_while_accounts_is_down_and_recovers() {
    let recorder = telemetry::metrics::isolated_recorder();
    let series = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let Pair {
        _dir,
        front,
        mut settings,
        accounts,
        catalog,
        client,
    } = accounts_and_catalog(|outbound| {
        outbound.timeout = Duration::from_millis(500);
        outbound.max_attempts = 2;
        outbound.backoff_base = Duration::from_millis(5);
        outbound.breaker_window = 10;
        outbound.breaker_minimum_calls = 4;
        outbound.breaker_wait = Duration::from_millis(300);
        outbound.breaker_probes = 1;
    })
    .await;
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

    front.down();
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
            // Generous on purpose (a loaded machine stalls a request for tens of ms): an
            // open breaker answers without an attempt, so well within one attempt's
            // timeout. That it makes no call at all is proven on the paused clock in
            // `resilience`'s breaker and downstream tests.
            assert!(
                took < settings.outbound.timeout,
                "an open breaker fails fast, took {took:?}"
            );
            fast = Some(n);
            break;
        }
    }
    assert!(fast.is_some(), "the breaker opened");
    let metrics = series.render();
    assert!(
        metrics.contains(r#"brigade_breaker_state{service="catalog",breaker="accounts"} 1"#),
        "{metrics}"
    );

    // Accounts returns (on a new port, behind the same front); catalog recovers without
    // being touched.
    settings.services.accounts.port = 0;
    let accounts = run(accounts::build(&settings).await.unwrap()).await;
    front.up(addr_of(&accounts));
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

/// A retried review create gets its stored answer while accounts is down (issue 13, bug
/// 3): the key's replay and conflict decisions come before the call to accounts, on REST
/// and gRPC alike. A new create still needs accounts (503), and is not remembered.
#[tokio::test]
async fn a_retried_review_create_replays_its_answer_while_accounts_is_down() {
    use proto::v1::CreateReviewRequest;
    use proto::v1::review_service_client::ReviewServiceClient;

    let Pair {
        _dir,
        accounts,
        catalog,
        client,
        settings,
        ..
    } = accounts_and_catalog(|outbound| {
        outbound.timeout = Duration::from_millis(500);
        outbound.max_attempts = 1;
    })
    .await;

    let reviews = format!("{}/v1/products/1/reviews", catalog.base);
    let rest = || {
        post(
            &client,
            reviews.clone(),
            "rest-review".into(),
            json!({"user_id": 1, "rating": 5}),
        )
    };
    let first = rest().await;
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.unwrap();
    let channel = tonic::transport::Channel::from_shared(catalog.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = server::identity::Signer::for_settings(&settings)
        .unwrap()
        .token_for("test", Duration::from_secs(3600));
    let mut grpc = ReviewServiceClient::new(server::testing::authorized(channel, token));
    let grpc_request = || {
        let mut request = tonic::Request::new(CreateReviewRequest {
            product_id: 1,
            user_id: 1,
            rating: 4,
            comment: String::new(),
        });
        request
            .metadata_mut()
            .insert("idempotency-key", "grpc-review".parse().unwrap());
        request
    };
    let grpc_first = grpc
        .create_review(grpc_request())
        .await
        .unwrap()
        .into_inner();

    accounts.stop().await;
    let again = rest().await;
    assert_eq!(again.status(), 201, "replayed, not refused for accounts");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body);
    let grpc_again = grpc.create_review(grpc_request()).await.unwrap();
    assert_eq!(
        grpc_again.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    assert_eq!(grpc_again.into_inner(), grpc_first);

    // The key used for another request: its 422, not accounts' 503.
    let reused = post(
        &client,
        reviews.clone(),
        "rest-review".into(),
        json!({"user_id": 1, "rating": 1}),
    )
    .await;
    assert_eq!(reused.status(), 422);
    // A new create needs accounts; its failure is not remembered under its key.
    let new = || {
        post(
            &client,
            reviews.clone(),
            "new".into(),
            json!({"user_id": 1, "rating": 3}),
        )
    };
    assert_eq!(new().await.status(), 503);
    assert_eq!(
        new().await.status(),
        503,
        "asked accounts again, not replayed"
    );
    catalog.stop().await;
}
