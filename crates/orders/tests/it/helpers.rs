//! `System`: the real accounts, catalog and orders services on free ports, sharing one
//! embedded message store in a data directory of the test's own, with five users and
//! products the test creates with the stock it needs.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use settings::{ServiceName, Settings};

pub use server::testing::Running;

pub struct System {
    pub settings: Settings,
    /// Kept running for the test's length.
    pub _accounts: Running,
    pub catalog: Running,
    pub orders: Running,
    _dir: tempfile::TempDir,
}

impl System {
    /// Accounts (users 1–5), catalog (no products) and orders, started in dependency order.
    pub async fn start() -> System {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> System {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: PathBuf::from(dir.path()),
            ..Settings::default()
        };
        for service in ServiceName::ALL {
            settings.services.get_mut(service).port = 0;
        }
        settings.messaging.relay_poll = Duration::from_millis(50);
        configure(&mut settings);
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
        settings.services.catalog.port = catalog.port();
        let catalog = Running::run(catalog);
        let orders = orders::build(&settings).await.unwrap();
        settings.services.orders.port = orders.port();
        let orders = Running::run(orders);
        System::assemble(settings, accounts, catalog, orders, dir)
    }

    pub fn assemble(
        settings: Settings,
        accounts: Running,
        catalog: Running,
        orders: Running,
        dir: tempfile::TempDir,
    ) -> System {
        System {
            settings,
            _accounts: accounts,
            catalog,
            orders,
            _dir: dir,
        }
    }

    /// Tests read catalog at `addr` (orders may reach it through a front).
    pub fn catalog_direct(&mut self, addr: std::net::SocketAddr) {
        self.catalog.base = format!("http://{addr}");
    }

    /// A product with `stock` units at `price`; its id.
    pub async fn product(&self, price: f64, stock: i64) -> i64 {
        let key = uuid::Uuid::now_v7().to_string();
        let r = self
            .catalog
            .post(
                "/v1/products",
                &key,
                &json!({"name": format!("Product {key}"), "price": price, "stock": stock}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    pub async fn stock(&self, product: i64) -> i64 {
        let r: Value = self
            .catalog
            .get(&format!("/v1/products/{product}"))
            .await
            .json()
            .await
            .unwrap();
        r["stock"].as_i64().unwrap()
    }

    /// Polls the product's stock until it is `n` (a cancellation gives stock back when
    /// its `OrderCancelled` is handled, just after the cancel answers).
    pub async fn stock_becomes(&self, product: i64, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stock = self.stock(product).await;
            if stock == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "product {product}: stock {stock}, not {n}, after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Places an order; the response.
    pub async fn place(&self, key: &str, user: i64, items: &[(i64, i64)]) -> reqwest::Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(p, q)| json!({"product_id": p, "quantity": q}))
            .collect();
        self.orders
            .post("/v1/orders", key, &json!({"user_id": user, "items": items}))
            .await
    }

    /// Places an order that must be accepted; its id.
    pub async fn placed(&self, key: &str, user: i64, items: &[(i64, i64)]) -> String {
        let r = self.place(key, user, items).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST /v1/orders/{id}/cancel`; the response.
    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.orders
            .client
            .post(self.orders.url(&format!("/v1/orders/{id}/cancel")))
            .send()
            .await
            .unwrap()
    }

    pub async fn order(&self, id: &str) -> Value {
        let r = self.orders.get(&format!("/v1/orders/{id}")).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls the order until `done` says so (at most `within`); the last state read.
    pub async fn order_until(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order = self.order(id).await;
            if done(&order) {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {id} did not get there within {within:?}: {order:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn status_becomes(&self, id: &str, status: &str) -> Value {
        self.order_until(id, Duration::from_secs(20), |o| o["status"] == status)
            .await
    }
}

/// The statuses an order went through, in order.
pub fn history(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap().to_owned())
        .collect()
}
