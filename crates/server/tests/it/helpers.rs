use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use settings::{ServiceName, Settings};
use storage::Migrations;
use storage::testing::TestDatabase;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A running application and the means to stop it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub stop: Arc<Notify>,
    pub handle: JoinHandle<std::io::Result<()>>,
    pub db: storage::Database,
    _test_db: TestDatabase,
}

pub async fn spawn(service: ServiceName, faces: Router) -> TestApp {
    spawn_with_grace(service, faces, Duration::from_secs(5)).await
}

pub async fn spawn_with_grace(service: ServiceName, faces: Router, grace: Duration) -> TestApp {
    spawn_configured(service, faces, |s| s.shutdown_grace = grace).await
}

pub async fn spawn_configured(
    service: ServiceName,
    faces: Router,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let test_db = storage::testing::sqlite(&[&Migrations::NONE]).await;
    let mut settings = Settings::default();
    settings.services.get_mut(service).port = 0;
    // Not the default `./data/internal.key`: a test writes nothing into the crate.
    settings.identity.internal_secret = Some("a test's own internal key, 32+ bytes".to_owned());
    configure(&mut settings);
    let app = server::Application::build(service, &settings, test_db.db.clone(), faces)
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let token = app
        .identity()
        .and_then(|signer| signer.token_for("test", Duration::from_secs(3600)));
    let stop = Arc::new(Notify::new());
    let signal = stop.clone();
    let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
    TestApp {
        base,
        client: {
            let mut headers = http::HeaderMap::new();
            if let Some(token) = token {
                headers.insert(server::identity::HEADER, token);
            }
            reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap()
        },
        stop,
        handle,
        db: test_db.db.clone(),
        _test_db: test_db,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
