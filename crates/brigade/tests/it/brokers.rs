//! The whole system on real brokers, as a user configures it (`messaging.backend`,
//! `messaging.url`): a product created over REST reaches `brigade events tail` through
//! catalog's outbox, on RabbitMQ and on NATS JetStream; on RabbitMQ the tutorial's pika
//! producer feeds the `order_processing` queue that orders itself declared.
//!
//! Each test has a broker of its own, so runs and parallel tests never share channel
//! names: a RabbitMQ virtual host made for it (and deleted after it, passed or failed),
//! and a `nats-server` process of its own with JetStream in a temporary directory.

use std::path::Path;
use std::time::Duration;

use messaging::testing::{NatsServer, RabbitVhost};
use tokio::process::Command;

use crate::helpers::{
    api_key, bearer, brigade, create_product, on_free_ports, start, stop_cleanly, tail_one,
};

/// `brigade` on `backend` at `url`.
fn on_broker(data: &Path, backend: &str, url: &str) -> Command {
    let mut cmd = brigade(data);
    cmd.env("BRIGADE_MESSAGING__BACKEND", backend)
        .env("BRIGADE_MESSAGING__URL", url);
    cmd
}

/// Creates a product on the running system and reads it back from `catalog-events`
/// with `brigade events tail`, a process of its own on the same broker.
async fn a_product_reaches_events_tail(
    data: &Path,
    backend: &str,
    url: &str,
    (gateway, key): (&str, &str),
) {
    let id = create_product(
        &bearer(key),
        gateway,
        &format!("{backend}-events-1"),
        "Keyboard",
    )
    .await;
    let line = tail_one(on_broker(data, backend, url)).await;
    let envelope = &line["envelope"];
    assert_eq!(envelope["type"], "ProductCreated", "{line}");
    assert_eq!(envelope["key"], id.to_string(), "{line}");
    assert_eq!(envelope["payload"]["name"], "Keyboard", "{line}");
}

#[tokio::test]
async fn on_rabbitmq_events_flow_and_the_seeds_pika_producer_feeds_orders_queue() {
    let vhost = RabbitVhost::new();
    let url = vhost.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = api_key(&data).await;
    let mut running = start(on_free_ports(
        on_broker(&data, "rabbitmq", &url).args(["up", "--no-seed"]),
    ))
    .await;
    let gateway = running.urls["gateway"].clone();
    a_product_reaches_events_tail(&data, "rabbitmq", &url, (&gateway, &key)).await;

    // The seed's producer declares `order_processing` as the seed does (durable, no
    // arguments) on the queue orders declared at start, and publishes to it.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contract-tests/pika/run.sh");
    let pika = Command::new("bash")
        .arg(&script)
        .arg("order_processing")
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let pika = tokio::time::timeout(Duration::from_secs(300), pika)
        .await
        .expect("the pika script finished within 300 s (it may install its venv)")
        .expect("run contract-tests/pika/run.sh (needs python3 with venv and pip)");
    assert!(
        pika.status.success(),
        "pika's declare or publish on orders' queue failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&pika.stdout),
        String::from_utf8_lossy(&pika.stderr)
    );
    // Orders owns the queue and its worker takes them: the seed's message names an order
    // orders never took, the three bad ones cannot be read, so all four end in the
    // dead-letter queue (with their reasons), which orders reports.
    let orders = running.urls["orders"].clone();
    let want = r#"brigade_messaging_queue_depth{service="orders",backend="rabbitmq",queue="order_processing",state="dead"} 4"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = reqwest::get(format!("{orders}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains(want) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders never reported the four messages dead-lettered:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_cleanly(&mut running).await;
}

#[tokio::test]
async fn on_nats_events_flow_from_catalogs_outbox_to_events_tail() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = api_key(&data).await;
    let mut running = start(on_free_ports(
        on_broker(&data, "nats", nats.url()).args(["up", "--no-seed"]),
    ))
    .await;
    let gateway = running.urls["gateway"].clone();
    a_product_reaches_events_tail(&data, "nats", nats.url(), (&gateway, &key)).await;
    stop_cleanly(&mut running).await;
}
