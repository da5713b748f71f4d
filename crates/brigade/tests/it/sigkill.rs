//! Billing as a process of its own, killed with SIGKILL while orders flow and started
//! again: nothing lost, nothing charged twice, no order stuck. Each service runs as its
//! own `brigade serve` process, as a user would deploy them, on each backend: the
//! embedded store (one file in the shared data directory), RabbitMQ (a vhost of the
//! test's own) and NATS JetStream (a server of the test's own).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use messaging::testing::{NatsServer, RabbitVhost};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{brigade, create_product, start, stop_cleanly};

/// The broker every process of a run shares; dropping it removes what the run made.
enum Broker {
    Embedded,
    Rabbitmq(RabbitVhost),
    Nats(Box<NatsServer>),
}

impl Broker {
    /// The settings that point a process at it.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Broker::Embedded => vec![("BRIGADE_MESSAGING__BACKEND", "embedded".into())],
            Broker::Rabbitmq(vhost) => vec![
                ("BRIGADE_MESSAGING__BACKEND", "rabbitmq".into()),
                ("BRIGADE_MESSAGING__URL", vhost.url()),
            ],
            Broker::Nats(server) => vec![
                ("BRIGADE_MESSAGING__BACKEND", "nats".into()),
                ("BRIGADE_MESSAGING__URL", server.url().to_owned()),
            ],
        }
    }
}

/// `brigade serve <service>` on a free port (0), on `broker`, told where the services it
/// calls already listen (`ports`, from their own tables).
fn serve(data: &Path, ports: &HashMap<String, u16>, broker: &Broker, service: &str) -> Command {
    let mut cmd = brigade(data);
    cmd.envs(broker.env())
        .env("BRIGADE_MESSAGING__HANDLER_TIMEOUT", "3s")
        .args(["serve", service, "--port", "0"]);
    for (name, port) in ports {
        let key = name.to_uppercase().replace('-', "_");
        cmd.env(format!("BRIGADE_SERVICES__{key}__PORT"), port.to_string());
    }
    cmd
}

/// The port a started service printed.
fn port_of(running: &crate::helpers::Running, service: &str) -> u16 {
    running.urls[service]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the service's URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_killed_with_sigkill_mid_run_charges_every_order_once_embedded() {
    billing_killed_mid_run(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_killed_with_sigkill_mid_run_charges_every_order_once_rabbitmq() {
    billing_killed_mid_run(Broker::Rabbitmq(RabbitVhost::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_killed_with_sigkill_mid_run_charges_every_order_once_nats() {
    billing_killed_mid_run(Broker::Nats(Box::new(NatsServer::start().await))).await;
}

async fn billing_killed_mid_run(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // In dependency order, each on a port of its own choosing, told the ports of those
    // it calls.
    let mut ports: HashMap<String, u16> = HashMap::new();
    let mut running = Vec::new();
    for service in ["payments-sandbox", "accounts", "catalog", "orders"] {
        let started = start(&mut serve(&data, &ports, &broker, service)).await;
        ports.insert(service.to_owned(), port_of(&started, service));
        running.push(started);
    }
    let mut billing = start(&mut serve(&data, &ports, &broker, "billing")).await;
    let base = |service: &str| format!("http://127.0.0.1:{}", ports[service]);
    // No gateway here: the services are called directly, as the gateway would, with a
    // token from `brigade internal-token` (the processes share the data directory's key).
    let token = crate::helpers::internal_token(&data).await;
    let client = crate::helpers::client_with("x-brigade-identity", &token);
    let user: Value = client
        .post(format!("{}/v1/users", base("accounts")))
        .header("idempotency-key", "kill-user")
        .json(&json!({"name": "Kim", "email": "kim@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = create_product(&client, &base("catalog"), "kill-product", "Kettle").await;
    // The sandbox answers slowly, so a charge is in flight when billing dies.
    let r = client
        .put(format!("{}/v1/sandbox/behaviour", base("payments-sandbox")))
        .json(&json!({"latency_ms": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // 40 orders (stock 7 of the product: most are rejected, 7 are charged); billing dies
    // with SIGKILL once one is paid (a charge takes 300 ms, so others are still to come
    // or in flight), and comes back.
    let mut ids = Vec::new();
    for i in 0..40 {
        let r = client
            .post(format!("{}/v1/orders", base("orders")))
            .header("idempotency-key", format!("kill-order-{i}"))
            .json(
                &json!({"user_id": user["id"], "items": [{"product_id": product, "quantity": 1}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // One GET of JSON, for every read below.
    let get = |url: String| {
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let order_of = |id: &str| get(format!("{}/v1/orders/{id}", base("orders")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'paid: loop {
        for id in &ids {
            if order_of(id).await["status"] == "PAID" {
                break 'paid;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing paid in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    billing.child.start_kill().unwrap();
    billing.child.wait().await.unwrap();
    billing = start(&mut serve(&data, &ports, &broker, "billing")).await;

    let mut paid = 0;
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let order = loop {
            let order = order_of(id).await;
            if matches!(
                order["status"].as_str(),
                Some("PAID" | "REJECTED" | "CANCELLED")
            ) {
                break order;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck: {order}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ledger = get(format!(
            "{}/v1/charges?order_id={id}",
            base("payments-sandbox")
        ))
        .await;
        let charged = ledger["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "succeeded")
            .count();
        match order["status"].as_str() {
            Some("PAID") => {
                assert_eq!(charged, 1, "{id}: {ledger}");
                paid += 1;
            }
            _ => assert_eq!(charged, 0, "{id}: {ledger}"),
        }
    }
    assert_eq!(
        paid, 7,
        "the product's 7 units were sold, each charged once"
    );
    let stock = get(format!("{}/v1/products/{product}", base("catalog"))).await;
    assert_eq!(stock["stock"], 0);

    stop_cleanly(&mut billing).await;
    for mut service in running.into_iter().rev() {
        stop_cleanly(&mut service).await;
    }
    drop(broker);
}
