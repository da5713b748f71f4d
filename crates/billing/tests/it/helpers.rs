//! `spawn_world`: the real payments sandbox and the real billing service, each on a free
//! port, sharing a temporary data directory (and so one embedded broker), with typed
//! helpers to publish orders' events, read billing's back with a group of the test's own,
//! and look at the sandbox's ledger.

use std::sync::Arc;
use std::time::Duration;

use messaging::outbox::Outbox;
use messaging::{Broker, Envelope, StartFrom, StreamConsumer};
use orders::events::{
    BILLING_GROUP, ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_EVENTS, ORDER_PAID, ORDER_REFUNDED,
    PAYMENT_FAILED,
};
use serde_json::{Value, json};
use settings::Settings;
use storage::Database;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long anything the tests wait for may take.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    stop: Arc<Notify>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub fn run(app: server::Application) -> TestApp {
        let base = format!("http://{}", app.local_addr());
        let token = server::testing::token_for(&app);
        let stop = Arc::new(Notify::new());
        let signal = stop.clone();
        let handle = tokio::spawn(app.run_until_stopped(async move { signal.notified().await }));
        TestApp {
            base,
            client: server::testing::client_with(token.as_ref()),
            stop,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Stops the service and waits until it has released its port and database.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    /// [`TestApp::stop`], keeping the handle (for a world that starts it again).
    async fn halt(&mut self) {
        self.stop.notify_one();
        (&mut self.handle).await.unwrap().unwrap();
    }
}

/// Billing, the sandbox it charges through, the broker between billing and "orders"
/// (the test), and a reader of `order-events` in a group of the test's own.
pub struct World {
    pub billing: TestApp,
    pub sandbox: TestApp,
    pub broker: Broker,
    billing_db: Database,
    reader: Box<dyn StreamConsumer>,
    reader_group: String,
    /// What billing was started with (and is started again with).
    pub settings: Settings,
    /// Every billing outcome the reader has seen, in stream order.
    seen: Vec<Envelope>,
    _dir: tempfile::TempDir,
}

/// A world with default settings, except for what `configure` changes.
pub async fn spawn_world(configure: impl FnOnce(&mut Settings)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.services.billing.port = 0;
    settings.services.payments_sandbox.port = 0;
    configure(&mut settings);
    let sandbox = payments::build(&settings).await.unwrap();
    settings.services.payments_sandbox.port = sandbox.port();
    let sandbox = TestApp::run(sandbox);
    let billing = billing::build(&settings).await.unwrap();
    let billing_db = billing.database().clone();
    let billing = TestApp::run(billing);
    // The same embedded store as billing's (one per data directory in a process).
    let broker = messaging::connect(&settings).await.unwrap();
    // Billing's members join its group in the background: ready once the group exists.
    let deadline = Instant::now() + PATIENCE;
    while broker
        .streams
        .lag(ORDER_EVENTS, BILLING_GROUP)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "billing never joined its group");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reader_group = format!("test-{}", uuid::Uuid::new_v4().simple());
    let reader = broker
        .streams
        .subscribe(ORDER_EVENTS, &reader_group, StartFrom::Earliest)
        .await
        .unwrap();
    World {
        billing,
        sandbox,
        broker,
        billing_db,
        reader,
        reader_group,
        settings,
        seen: Vec::new(),
        _dir: dir,
    }
}

/// A fresh order id.
pub fn order_id() -> String {
    format!("ORD-{}", uuid::Uuid::new_v4().simple())
}

/// `OrderConfirmed` for `order`, as orders publishes it, with a correlation ID of its own.
pub fn confirmed(order: &str, total_minor: i64) -> Envelope {
    let payload = json!({
        "event_type": ORDER_CONFIRMED,
        "order_id": order,
        "total": total_minor as f64 / 100.0,
        "total_minor": total_minor,
        "currency": "usd",
        "user_id": 7,
    });
    correlated(Envelope::new(ORDER_CONFIRMED, payload).with_key(order))
}

/// `OrderCancelled` for `order`.
pub fn cancelled(order: &str, total_minor: i64) -> Envelope {
    let payload = json!({
        "event_type": ORDER_CANCELLED,
        "order_id": order,
        "total": total_minor as f64 / 100.0,
        "reason": "customer",
    });
    correlated(Envelope::new(ORDER_CANCELLED, payload).with_key(order))
}

fn correlated(mut envelope: Envelope) -> Envelope {
    envelope.correlation_id = Some(format!("test-{}", uuid::Uuid::new_v4().simple()));
    envelope
}

/// Whether billing publishes events of this type.
fn is_outcome(kind: &str) -> bool {
    [ORDER_PAID, PAYMENT_FAILED, ORDER_REFUNDED].contains(&kind)
}

impl World {
    /// Stops billing, runs `meanwhile` while it is down, then starts it again (on a new
    /// port, over the same database and broker).
    pub async fn restart_billing<F, Fut>(&mut self, meanwhile: F)
    where
        F: FnOnce(Settings) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.billing.halt().await;
        meanwhile(self.settings.clone()).await;
        let billing = billing::build(&self.settings).await.unwrap();
        self.billing_db = billing.database().clone();
        self.billing = TestApp::run(billing);
    }

    /// Billing's database (the running billing's).
    pub fn billing_database(&self) -> &Database {
        &self.billing_db
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.broker
            .streams
            .publish(ORDER_EVENTS, envelope)
            .await
            .unwrap();
    }

    /// `PUT /v1/sandbox/behaviour`.
    pub async fn behave(&self, behaviour: Value) {
        let response = self
            .sandbox
            .client
            .put(self.sandbox.url("/v1/sandbox/behaviour"))
            .json(&behaviour)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// The sandbox's ledger of `order`: every charge made for it.
    pub async fn ledger(&self, order: &str) -> Vec<Value> {
        let response = self
            .sandbox
            .get(&format!("/v1/charges?order_id={order}"))
            .await;
        assert_eq!(response.status(), 200);
        let list: Value = response.json().await.unwrap();
        list["data"].as_array().unwrap().clone()
    }

    /// The refunds the sandbox made of `charge`.
    pub async fn refunds(&self, charge: &str) -> Vec<Value> {
        let response = self
            .sandbox
            .get(&format!("/v1/refunds?charge={charge}"))
            .await;
        assert_eq!(response.status(), 200);
        let list: Value = response.json().await.unwrap();
        list["data"].as_array().unwrap().clone()
    }

    /// Billing's outcomes for `order` seen so far.
    pub fn outcomes(&self, order: &str) -> Vec<Envelope> {
        self.seen
            .iter()
            .filter(|e| e.key.as_deref() == Some(order))
            .cloned()
            .collect()
    }

    /// Waits until `order` has `n` outcomes from billing (or `PATIENCE` passes), and
    /// returns them.
    pub async fn await_outcomes(&mut self, order: &str, n: usize) -> Vec<Envelope> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.read_published().await;
            let outcomes = self.outcomes(order);
            if outcomes.len() >= n {
                return outcomes;
            }
            assert!(
                Instant::now() < deadline,
                "{order}: {} outcomes after {PATIENCE:?}, expected {n}: {outcomes:?}",
                outcomes.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until billing has handled everything published so far and its outbox has
    /// published what that implied, then reads it all: after this, `outcomes` holds
    /// every outcome billing will ever publish for what was published before.
    pub async fn settle(&mut self) {
        let billing_outbox = Outbox::new(self.billing_db.clone(), "billing");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lag = self
                .broker
                .streams
                .lag(ORDER_EVENTS, BILLING_GROUP)
                .await
                .unwrap()
                .lag;
            // A handled event's outcome is in the outbox before the event is committed.
            let backlog = billing_outbox.backlog().await.unwrap();
            if lag == 0 && backlog == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "billing still has {lag} events to handle and {backlog} to publish after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.read_published().await;
    }

    /// Reads every event published so far with the test's own group.
    async fn read_published(&mut self) {
        loop {
            let lag = self
                .broker
                .streams
                .lag(ORDER_EVENTS, &self.reader_group)
                .await
                .unwrap()
                .lag;
            if lag == 0 {
                return;
            }
            let event = tokio::time::timeout(PATIENCE, self.reader.next())
                .await
                .expect("an event the group has not committed is delivered")
                .unwrap();
            if let Ok(envelope) = &event.message
                && is_outcome(&envelope.kind)
            {
                self.seen.push(envelope.clone());
            }
            event.commit().await.unwrap();
        }
    }

    /// `GET /v1/payments/{order}` on billing: the status and the body.
    pub async fn payment(&self, order: &str) -> (u16, Value) {
        let response = self.billing.get(&format!("/v1/payments/{order}")).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}
