use std::time::Duration;

use catalog::domain::ProductId;
use settings::{DatabaseUrl, PoolSettings};

use crate::helpers::{SERVICES, brigade, on_free_ports, start, terminate};

#[tokio::test]
async fn up_brings_all_five_services_to_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut running = start(on_free_ports(brigade(&data).arg("up"))).await;
    assert_eq!(running.urls.len(), 5, "{:?}", running.urls);

    let client = reqwest::Client::new();
    for service in SERVICES {
        let url = &running.urls[service];
        assert!(!url.ends_with(":0"), "{service} reported port 0");
        let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{service} is not ready");
        assert!(ready.headers().contains_key("x-correlation-id"));
        let metrics = client.get(format!("{url}/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains(&format!(r#"service="{service}""#)),
            "{service}: {text}"
        );
    }

    // A new data directory got the demo data: the seed's Laptop is product 1.
    let url = DatabaseUrl::sqlite_file(&data.join("catalog.db"));
    let db = storage::Database::connect(&url, &PoolSettings::default())
        .await
        .unwrap();
    let laptop = catalog::CatalogStore::new(db.clone())
        .product(ProductId(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(laptop.name.as_str(), "Laptop");
    db.close().await;

    terminate(&running.child);
    let status = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("brigade stopped within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serve_runs_one_service_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let name = storage::testing::fresh_name();
    let (url, name) = storage::testing::postgres_database(&name).await;
    let mut cmd = brigade(dir.path());
    cmd.args(["serve", "catalog", "--port", "0"])
        .env("BRIGADE_SERVICES__CATALOG__DATABASE_URL", url.expose());
    let mut running = start(&mut cmd).await;
    let base = &running.urls["catalog"];
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    terminate(&running.child);
    let status = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("stopped")
        .unwrap();
    assert!(status.success());
    storage::testing::drop_postgres_database(&name).await;
}
