use std::time::Duration;

use catalog::domain::ProductId;
use settings::{DatabaseUrl, PoolSettings};

use crate::helpers::{
    SERVICES, api_key, bearer, brigade, create_product, on_free_ports, start, stop_cleanly,
    tail_one, until_paid,
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
    let client = bearer(&api_key(&data).await);
    let mut running = start(on_free_ports(brigade(&data).args(["up", "--no-seed"]))).await;
    let gateway = &running.urls["gateway"];

    let id = create_product(&client, gateway, "events-tail-1", "Keyboard").await;
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
    create_product(&client, gateway, "events-tail-2", "Monitor").await;
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

    let client = bearer(&api_key(&data).await);
    let mut running = start(on_free_ports(brigade(&data).arg("up"))).await;
    // (list path, how many `brigade seed` made), read through the gateway
    for (path, seeded) in [("/v1/products?limit=100", 3), ("/v1/users?limit=100", 2)] {
        let url = format!("{}{path}", running.urls["gateway"]);
        let page: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), seeded, "{page}");
    }

    stop_cleanly(&mut running).await;
}

/// One correlation ID per order: the ID of the `POST` that placed it is on every log
/// line any service or worker wrote about that order — orders' accept and its worker
/// (through the queue), catalog's reservation (a gRPC call), billing's charge (through the
/// stream) and the payments sandbox's request (an HTTP call) — and on its messages.
#[tokio::test]
async fn an_orders_correlation_id_follows_it_through_every_hop() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = bearer(&api_key(&data).await);
    let mut running = start(on_free_ports(brigade(&data).args(["up", "--no-seed"])).env(
        "BRIGADE_LOG__FILTER",
        "info,sqlx=warn,server=debug,orders=debug,billing=debug",
    ))
    .await;
    // Everything goes through the gateway, as a client's calls do.
    let gateway = running.urls["gateway"].clone();
    let user: serde_json::Value = client
        .post(format!("{gateway}/v1/users"))
        .header("idempotency-key", "corr-user")
        .json(&serde_json::json!({"name": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = create_product(&client, &gateway, "corr-product", "Lamp").await;
    let correlation = "order-trace-7f3a";
    let accepted: serde_json::Value = client
        .post(format!("{gateway}/v1/orders"))
        .header("idempotency-key", "corr-order")
        .header("x-correlation-id", correlation)
        .json(&serde_json::json!({"user_id": user["id"], "items": [{"product_id": product, "quantity": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["correlation_id"], correlation);
    until_paid(&client, &gateway, &id, Duration::from_secs(30)).await;
    stop_cleanly(&mut running).await;
    let said = running.output.lock().unwrap().clone();
    let lines: Vec<serde_json::Value> = said
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Every line about this order carries the accept's correlation ID (but the test's own
    // reads of it, each a request with an ID of its own).
    let about: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&id) && l["method"] != "GET")
        .collect();
    assert!(!about.is_empty());
    for line in &about {
        assert_eq!(line["correlation_id"], correlation, "{line}");
    }
    // And it reached every hop: lines with it from each part of the pipeline.
    let with: Vec<String> = lines
        .iter()
        .filter(|l| l["correlation_id"] == correlation)
        .map(|l| format!("{} {}", l["target"], l["path"]))
        .collect();
    for hop in [
        "/v1/orders",                     // the accept
        "/order_processing/ProcessOrder", // orders' worker, from the queue
        "/ecommerce.v1.InventoryService", // catalog's ReserveStock
        "/order-events/OrderConfirmed",   // billing, from the stream
        "/v1/charges",                    // the payments sandbox
        "/order-events/OrderPaid",        // orders' group, billing's answer
    ] {
        assert!(
            with.iter().any(|w| w.contains(hop)),
            "no line at {hop} carries {correlation}:\n{}\n\nall lines:\n{said}",
            with.join("\n")
        );
    }
}
