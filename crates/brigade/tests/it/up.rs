use std::time::Duration;

use catalog::domain::ProductId;
use settings::{DatabaseUrl, PoolSettings};

use crate::helpers::{
    SERVICES, brigade, create_product, on_free_ports, start, stop_cleanly, tail_one,
};

#[tokio::test]
async fn up_brings_all_five_services_to_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An existing empty folder is as new as a missing one (`mkdir data && brigade up`).
    std::fs::create_dir(&data).unwrap();
    let mut running = start(on_free_ports(brigade(&data).arg("up"))).await;
    assert_eq!(running.urls.len(), 6, "{:?}", running.urls);

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

    // The new databases got the demo data: the seed's Laptop is product 1.
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

    stop_cleanly(&mut running).await;
}

#[tokio::test]
async fn serve_runs_one_service_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let pg = storage::testing::postgres_database(&storage::testing::fresh_name()).await;
    let mut cmd = brigade(dir.path());
    cmd.args(["serve", "catalog", "--port", "0"])
        .env("BRIGADE_SERVICES__CATALOG__DATABASE_URL", pg.url.expose());
    let mut running = start(&mut cmd).await;
    let base = &running.urls["catalog"];
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    stop_cleanly(&mut running).await;
}

/// The running system uses the messaging layer: a product created over REST reaches the
/// `catalog-events` stream through catalog's outbox and relay, and `brigade events tail`
/// (a separate process on the same embedded store) shows it.
#[tokio::test]
async fn a_created_product_reaches_events_tail_through_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut running = start(on_free_ports(brigade(&data).args(["up", "--no-seed"]))).await;
    let catalog = &running.urls["catalog"];

    let id = create_product(catalog, "events-tail-1", "Keyboard").await;
    let line = tail_one(brigade(&data)).await;
    let envelope = &line["envelope"];
    assert_eq!(envelope["type"], "ProductCreated", "{line}");
    assert_eq!(envelope["key"], id.to_string());
    assert_eq!(envelope["payload"]["name"], "Keyboard");
    assert_eq!(envelope["payload"]["product_id"], id);
    // The request's correlation ID travelled with the event.
    assert!(
        envelope["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{line}"
    );

    // The group committed its position: the same group, run again, resumes after the
    // first product and sees the second.
    create_product(catalog, "events-tail-2", "Monitor").await;
    let line = tail_one(brigade(&data)).await;
    assert_eq!(line["envelope"]["payload"]["name"], "Monitor", "{line}");

    // /metrics shows the messaging layer: the outbox backlog on catalog, the
    // order_processing queue's depth on orders (sampled in the background: poll).
    let metrics_of = |service: &str| {
        let url = format!("{}/metrics", running.urls[service]);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let catalog_metrics = metrics_of("catalog").await;
        let orders_metrics = metrics_of("orders").await;
        let outbox = catalog_metrics.contains("brigade_outbox_backlog{service=\"catalog\"} 0")
            && catalog_metrics.contains("brigade_outbox_published_total{service=\"catalog\"} 2");
        let depth = orders_metrics.contains(
            "brigade_messaging_queue_depth{service=\"orders\",backend=\"embedded\",queue=\"order_processing\",state=\"ready\"} 0",
        );
        // The relay publishes through the resilience layer: its breaker is on show.
        let breaker = catalog_metrics.contains("breaker=\"broker\"");
        if outbox && depth && breaker {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the outbox and the queue:\n{catalog_metrics}\n{orders_metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop_cleanly(&mut running).await;
}

/// `up` never loads demo data beside a user's own: a catalog that holds products (here
/// from `brigade seed` with small counts) stays exactly as it was.
#[tokio::test]
async fn up_never_seeds_a_database_that_has_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seeded = brigade(&data)
        .args(["seed", "--products", "3", "--users", "2", "--reviews", "4"])
        .output()
        .await
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );

    let mut running = start(on_free_ports(brigade(&data).arg("up"))).await;
    // (service, list path, how many `brigade seed` made)
    for (service, path, seeded) in [
        ("catalog", "/v1/products?limit=100", 3),
        ("accounts", "/v1/users?limit=100", 2),
    ] {
        let url = format!("{}{path}", running.urls[service]);
        let page: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), seeded, "{page}");
    }

    stop_cleanly(&mut running).await;
}
