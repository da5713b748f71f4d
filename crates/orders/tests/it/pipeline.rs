//! The whole pipeline — accept, reserve, charge, compensate — with billing and the
//! payments sandbox, on each messaging backend, under concurrent clients that retry.

use std::collections::HashMap;
use std::time::Duration;

use messaging::testing::{NatsServer, RabbitVhost, TcpFront};
use serde_json::{Value, json};
use settings::{MessagingBackend, ServiceName, Settings};

use crate::helpers::{Running, System};

/// Which broker the pipeline runs on; the guard owns the test's names on it.
pub enum Broker {
    Embedded,
    Rabbitmq(RabbitVhost),
    Nats(Box<NatsServer>),
}

impl Broker {
    pub async fn rabbitmq() -> Broker {
        Broker::Rabbitmq(RabbitVhost::new())
    }

    pub async fn nats() -> Broker {
        Broker::Nats(Box::new(NatsServer::start().await))
    }

    fn configure(&self, settings: &mut Settings) {
        match self {
            Broker::Embedded => {}
            Broker::Rabbitmq(vhost) => {
                settings.messaging.backend = MessagingBackend::Rabbitmq;
                settings.messaging.url = Some(vhost.url());
            }
            Broker::Nats(nats) => {
                settings.messaging.backend = MessagingBackend::Nats;
                settings.messaging.url = Some(nats.url().to_owned());
            }
        }
    }
}

/// Every service of the pipeline; catalog behind a front that can take it away.
pub struct Pipeline {
    pub system: System,
    pub payments: Running,
    billing: tokio::sync::Mutex<Option<Running>>,
    pub catalog_front: TcpFront,
    catalog_addr: std::net::SocketAddr,
    _broker: Broker,
}

impl Pipeline {
    pub async fn start(broker: Broker, configure: impl FnOnce(&mut Settings)) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        for service in ServiceName::ALL {
            settings.services.get_mut(service).port = 0;
        }
        settings.messaging.relay_poll = Duration::from_millis(50);
        broker.configure(&mut settings);
        configure(&mut settings);
        let payments = payments::build(&settings).await.unwrap();
        settings.services.payments_sandbox.port = payments.port();
        let payments = Running::run(payments);
        let accounts = accounts::build(&settings).await.unwrap();
        accounts::seed::seed(
            &accounts::AccountsStore::new(accounts.database().clone()),
            5,
        )
        .await
        .unwrap();
        settings.services.accounts.port = accounts.port();
        let accounts = Running::run(accounts);
        let catalog = catalog::build(&settings).await.unwrap();
        let catalog_addr = catalog.local_addr();
        let catalog = Running::run(catalog);
        // Orders (its accept and its worker) reach catalog through the front.
        let catalog_front = TcpFront::to(catalog_addr).await.unwrap();
        settings.services.catalog.port = catalog_front.port();
        let orders = orders::build(&settings).await.unwrap();
        settings.services.orders.port = orders.port();
        let orders = Running::run(orders);
        let billing = Running::run(billing::build(&settings).await.unwrap());
        let mut system = System::assemble(settings, accounts, catalog, orders, dir);
        // The test talks to catalog directly, not through the front.
        system.catalog_direct(catalog_addr);
        Pipeline {
            system,
            payments,
            billing: tokio::sync::Mutex::new(Some(billing)),
            catalog_front,
            catalog_addr,
            _broker: broker,
        }
    }

    /// Waits (60 s at most) until billing has charged at least one order, as its own
    /// analytics projection says.
    pub async fn some_paid(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let asked = self
                .billing
                .lock()
                .await
                .as_ref()
                .map(|b| b.client.get(b.url("/v1/analytics/products")));
            if let Some(asked) = asked {
                let sales: Value = asked.send().await.unwrap().json().await.unwrap();
                let paid = sales["data"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|p| p["orders_paid"].as_i64() >= Some(1)));
                if paid {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing paid within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Crashes billing (see [`Running::crash`]).
    pub async fn crash_billing(&self) {
        if let Some(billing) = self.billing.lock().await.take() {
            billing.crash().await;
        }
    }

    /// Starts billing again on the same database and broker.
    pub async fn restart_billing(&self) {
        let app = billing::build(&self.system.settings).await.unwrap();
        *self.billing.lock().await = Some(Running::run(app));
    }

    pub fn catalog_down(&self) {
        self.catalog_front.down();
    }

    pub fn catalog_up(&self) {
        self.catalog_front.up(self.catalog_addr);
    }

    /// Sets the sandbox's behaviour (`latency_ms`, `decline_rate`, `error_rate`, ...).
    pub async fn behave(&self, behaviour: Value) {
        let r = self
            .payments
            .client
            .put(self.payments.url("/v1/sandbox/behaviour"))
            .json(&behaviour)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// The provider's ledger for one order.
    pub async fn charges(&self, order: &str) -> Vec<Value> {
        let r: Value = self
            .payments
            .get(&format!("/v1/charges?order_id={order}"))
            .await
            .json()
            .await
            .unwrap();
        r["data"].as_array().unwrap().clone()
    }
}

/// A client that retries its accept with the same key on timeouts, resets and 5xx, as
/// the seed tells clients to: the order id it got, and how many attempts it took.
pub async fn place_retrying(
    system: &System,
    key: &str,
    user: i64,
    items: &[(i64, i64)],
) -> (String, u32) {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &system.orders.token {
        headers.insert(server::identity::HEADER, token.clone());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .default_headers(headers)
        .build()
        .unwrap();
    let body = json!({
        "user_id": user,
        "items": items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let sent = client
            .post(system.orders.url("/v1/orders"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                let id = r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                return (id, attempt);
            }
            // In flight under the same key (409), or a dependency down (503): again.
            Ok(r) if r.status() == 409 || r.status().is_server_error() => {}
            Ok(r) => panic!("{key}: {} {}", r.status(), r.text().await.unwrap()),
            Err(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key}: no 202 after {attempt} attempts"
        );
        let backoff = Duration::from_millis(u64::from(50 * attempt.min(20)));
        tokio::time::sleep(Duration::from_millis(fastrand::u64(
            0..=backoff.as_millis() as u64,
        )))
        .await;
    }
}

/// Places `n` orders concurrently (`concurrency` clients) over `products`, each client
/// retrying with its key; the order ids, by key, and how many attempts all took.
pub async fn place_many(
    system: &System,
    n: usize,
    concurrency: usize,
    products: &[i64],
) -> (HashMap<String, String>, u32) {
    use futures::StreamExt;
    let placed: Vec<(String, (String, u32))> = futures::stream::iter(0..n)
        .map(|i| async move {
            let key = format!("load-{i}");
            let product = products[i % products.len()];
            let quantity = 1 + (i % 3) as i64;
            let id = place_retrying(system, &key, 1 + (i % 5) as i64, &[(product, quantity)]).await;
            (key, id)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let attempts = placed.iter().map(|(_, (_, a))| a).sum();
    let ids = placed.into_iter().map(|(key, (id, _))| (key, id)).collect();
    (ids, attempts)
}

/// Waits until every order is final; the final orders.
pub async fn all_final(
    system: &System,
    ids: impl IntoIterator<Item = &String>,
    within: Duration,
) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            system
                .order_until(id, within, |o| {
                    matches!(
                        o["status"].as_str(),
                        Some("PAID" | "REJECTED" | "CANCELLED")
                    )
                })
                .await,
        );
    }
    out
}

/// What every run must show, whatever went wrong on the way: every order final, one
/// charge per paid order (none left standing for a cancelled one), and stock conserved
/// per product: initial − (units of orders holding their reservation) = final.
pub async fn assert_consistent(pipeline: &Pipeline, orders: &[Value], initial: &HashMap<i64, i64>) {
    let mut held: HashMap<i64, i64> = HashMap::new();
    for order in orders {
        let id = order["id"].as_str().unwrap();
        let status = order["status"].as_str().unwrap();
        let charges = pipeline.charges(id).await;
        let succeeded: Vec<&Value> = charges
            .iter()
            .filter(|c| c["status"] == "succeeded")
            .collect();
        match status {
            "PAID" => {
                assert_eq!(succeeded.len(), 1, "{id} paid: {charges:#?}");
                assert_eq!(succeeded[0]["amount"], order["total_minor"]);
                assert_eq!(succeeded[0]["refunded"], false);
                for item in order["items"].as_array().unwrap() {
                    *held
                        .entry(item["product_id"].as_i64().unwrap())
                        .or_default() += item["quantity"].as_i64().unwrap();
                }
            }
            "CANCELLED" => {
                assert!(succeeded.len() <= 1, "{id}: {charges:#?}");
                if !succeeded.is_empty() {
                    // Billing refunds after it reads OrderCancelled: wait for it.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    loop {
                        let now = pipeline.charges(id).await;
                        if now
                            .iter()
                            .any(|c| c["status"] == "succeeded" && c["refunded"] == true)
                        {
                            break;
                        }
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "{id}: a cancelled order's charge is not refunded: {now:#?}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            "REJECTED" => assert!(succeeded.is_empty(), "{id}: {charges:#?}"),
            other => panic!("{id} is {other}"),
        }
    }
    // Cancelled orders give their stock back as their OrderCancelled is handled: wait
    // for it, then it must be exact (and stay so: nothing else is in flight).
    for (product, initial) in initial {
        let expected = initial - held.get(product).copied().unwrap_or(0);
        pipeline.system.stock_becomes(*product, expected).await;
    }
    for (product, initial) in initial {
        let expected = initial - held.get(product).copied().unwrap_or(0);
        assert_eq!(
            pipeline.system.stock(*product).await,
            expected,
            "product {product}"
        );
    }
}
