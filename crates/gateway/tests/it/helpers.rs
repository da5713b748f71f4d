//! `System`: accounts (five users, Jane Doe first), catalog (the seed's Laptop and Mouse,
//! then generated products and reviews) and the gateway in front of them, on free ports
//! and in a data directory of the test's own.

use std::path::PathBuf;

use serde_json::{Value, json};
use server::testing::Running;
use settings::{ServiceName, Settings};

pub struct System {
    /// The settings the services run with (their ports filled in).
    pub settings: Settings,
    /// A secret API key (every scope), which `gateway.client` sends.
    pub key: String,
    accounts: Option<Running>,
    pub catalog: Running,
    pub gateway: Running,
    /// The payments sandbox, orders and billing (in that order), when started with them.
    pub pipeline: Vec<Running>,
    _dir: tempfile::TempDir,
}

impl System {
    /// `products` products (the first two the seed's) with `reviews` reviews among them.
    pub async fn start(products: usize, reviews: usize) -> System {
        Self::start_with(products, reviews, |_| {}).await
    }

    /// [`System::start`], with the settings as `configure` leaves them.
    pub async fn start_with(
        products: usize,
        reviews: usize,
        configure: impl FnOnce(&mut Settings),
    ) -> System {
        Self::assemble(products, reviews, false, configure).await
    }

    /// [`System::start`] with orders behind the gateway too, and billing and the payments
    /// sandbox behind orders (every order is charged and paid).
    pub async fn start_with_orders(products: usize, reviews: usize) -> System {
        Self::assemble(products, reviews, true, |s| {
            s.messaging.relay_poll = std::time::Duration::from_millis(50);
        })
        .await
    }

    async fn assemble(
        products: usize,
        reviews: usize,
        with_orders: bool,
        configure: impl FnOnce(&mut Settings),
    ) -> System {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: PathBuf::from(dir.path()),
            ..Settings::default()
        };
        for service in ServiceName::ALL {
            settings.services.get_mut(service).port = 0;
        }
        configure(&mut settings);
        let accounts = accounts::build(&settings).await.unwrap();
        accounts::seed::seed(
            &accounts::AccountsStore::new(accounts.database().clone()),
            5,
        )
        .await
        .unwrap();
        settings.services.accounts.port = accounts.port();
        let catalog = catalog::build(&settings).await.unwrap();
        catalog::seed::seed(
            &catalog::CatalogStore::new(catalog.database().clone()),
            products,
            reviews,
            5,
        )
        .await
        .unwrap();
        settings.services.catalog.port = catalog.port();
        let (accounts, catalog) = (Running::run(accounts), Running::run(catalog));
        let mut pipeline = Vec::new();
        if with_orders {
            let payments = payments::build(&settings).await.unwrap();
            settings.services.payments_sandbox.port = payments.port();
            pipeline.push(Running::run(payments));
            let orders = orders::build(&settings).await.unwrap();
            settings.services.orders.port = orders.port();
            pipeline.push(Running::run(orders));
            pipeline.push(Running::run(billing::build(&settings).await.unwrap()));
        }
        let key = make_key(&settings, "test", None).await;
        let mut gateway = Running::run(gateway::build(&settings).await.unwrap());
        gateway.client = bearer(&key);
        System {
            settings,
            key,
            accounts: Some(accounts),
            catalog,
            gateway,
            pipeline,
            _dir: dir,
        }
    }

    /// A client of the gateway without a key.
    pub fn anonymous(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// Accounts, while it runs.
    pub fn accounts(&self) -> &Running {
        self.accounts.as_ref().expect("accounts is running")
    }

    /// Orders (started by [`System::start_with_orders`]).
    pub fn orders(&self) -> &Running {
        &self.pipeline[1]
    }

    /// Stops accounts (the gateway's calls to it then fail).
    pub async fn stop_accounts(&mut self) {
        if let Some(accounts) = self.accounts.take() {
            accounts.stop().await;
        }
    }

    /// Sends `query` (with `variables`) to `POST /graphql`; the status and the body.
    pub async fn graphql_with(&self, query: &str, variables: Value) -> (u16, Value) {
        self.post_graphql(&json!({"query": query, "variables": variables}))
            .await
    }

    /// Sends `body` as JSON to `POST /graphql`; the status and the body.
    pub async fn post_graphql(&self, body: &Value) -> (u16, Value) {
        self.post_graphql_as(&self.gateway.client, body).await
    }

    /// [`System::post_graphql`] from `client` (another key, or none).
    pub async fn post_graphql_as(&self, client: &reqwest::Client, body: &Value) -> (u16, Value) {
        let response = client
            .post(self.gateway.url("/graphql"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn graphql(&self, query: &str) -> Value {
        let (status, body) = self.graphql_with(query, json!({})).await;
        assert_eq!(status, 200, "{body:#}");
        body
    }

    /// A review by `user` of `product`, through catalog's REST API.
    pub async fn review(&self, product: i64, user: i64, rating: i64, comment: &str) {
        let response = self
            .catalog
            .client
            .post(self.catalog.url(&format!("/v1/products/{product}/reviews")))
            .header(
                "idempotency-key",
                format!("review-{product}-{user}-{rating}"),
            )
            .json(&json!({"user_id": user, "rating": rating, "comment": comment}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
}

/// A key in the gateway's database of `settings` (made before the gateway starts, or seen
/// by it within `gateway.keys.refresh`): secret without `scopes`.
pub async fn make_key(settings: &Settings, name: &str, scopes: Option<&str>) -> String {
    let (db, store) = key_store(settings).await;
    let made = store
        .create(
            name,
            scopes.map(|s| gateway::keys::Scopes::parse(s).unwrap()),
        )
        .await
        .unwrap();
    db.close().await;
    made.key
}

/// A client sending `Authorization: Bearer <key>` on every request.
pub fn bearer(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The gateway's key table in the database of `settings` (close the database after).
pub async fn key_store(settings: &Settings) -> (storage::Database, gateway::keys::KeyStore) {
    let db = storage::Database::open(
        &settings.database_url(ServiceName::Gateway),
        &settings.database,
        &[gateway::MIGRATIONS],
    )
    .await
    .unwrap();
    let store = gateway::keys::KeyStore::new(db.clone());
    (db, store)
}

/// The id of the key named `name`.
pub async fn key_id(store: &gateway::keys::KeyStore, name: &str) -> String {
    store
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == name)
        .unwrap()
        .id
}

/// The sum of the gateway's outbound calls to `downstream`, from its metrics.
pub fn calls(rendered: &str, downstream: &str) -> f64 {
    telemetry::metrics::series_value(
        rendered,
        "brigade_downstream_calls_total",
        &[("service", "gateway"), ("downstream", downstream)],
    )
}
