//! The synchronous accept and the worker behind it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Running, System, history};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_accepted_at_once_then_confirmed_with_its_stock_reserved() {
    let system = System::start().await;
    let laptop = system.product(999.99, 10).await;
    let mouse = system.product(19.99, 100).await;

    let r = system.place("order-1", 1, &[(laptop, 2), (mouse, 1)]).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let correlation = r.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/orders/{id}"));
    assert_eq!(accepted["status"], "PENDING");
    assert_eq!(accepted["total_minor"], 2 * 99_999 + 1_999);
    assert_eq!(accepted["total"], 2019.97);
    assert_eq!(accepted["correlation_id"], correlation.as_str());
    assert_eq!(accepted["items"][0]["unit_price_minor"], 99_999);

    let confirmed = system.status_becomes(&id, "CONFIRMED").await;
    assert_eq!(history(&confirmed), ["PENDING", "CONFIRMED"]);
    assert_eq!(system.stock(laptop).await, 8);
    assert_eq!(system.stock(mouse).await, 99);

    // The same key and body: the same order, nothing placed twice.
    let again = system.place("order-1", 1, &[(laptop, 2), (mouse, 1)]).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str());
    // The same key for another order is refused.
    let reused = system.place("order-1", 1, &[(laptop, 1)]).await;
    assert_eq!(reused.status(), 422);
    let page: Value = system
        .orders
        .get("/v1/orders?user_id=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(system.stock(laptop).await, 8, "reserved once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_caller_must_hear_now_is_refused_before_anything_is_written() {
    let system = System::start().await;
    let laptop = system.product(999.99, 10).await;
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ctype, "application/problem+json");
        (status, r.json::<Value>().await.unwrap())
    };
    let fields = |body: &Value| -> Vec<String> {
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, body) = problem(system.place("k1", 99, &[(laptop, 1)]).await).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&body), ["user_id"]);

    let (status, body) = problem(system.place("k2", 1, &[(laptop, 1), (424_242, 1)]).await).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&body), ["items[1].product_id"]);

    let (status, body) = problem(system.place("k3", 1, &[(laptop, 0), (laptop, 2)]).await).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&body), ["items[0].quantity", "items[1].product_id"]);

    let (status, body) = problem(system.place("k4", 1, &[]).await).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&body), ["items"]);

    let no_key = system
        .orders
        .client
        .post(system.orders.url("/v1/orders"))
        .json(&json!({"user_id": 1, "items": [{"product_id": laptop, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 400);

    let (status, _) = problem(system.orders.get("/v1/orders/ord_nope").await).await;
    assert_eq!(status, 404);
    let page: Value = system
        .orders
        .get("/v1/orders?user_id=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]), "nothing was written");
    assert_eq!(system.stock(laptop).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_stock_rejects_the_order_with_the_problem_details() {
    let system = System::start().await;
    let few = system.product(5.00, 3).await;
    let id = system.placed("big", 2, &[(few, 5)]).await;
    let rejected = system.status_becomes(&id, "REJECTED").await;
    assert_eq!(history(&rejected), ["PENDING", "REJECTED"]);
    let reason = rejected["history"][1]["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        format!("Requested 5 units of SKU-{few}; only 3 available.")
    );
    assert_eq!(system.stock(few).await, 3, "nothing taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_units_go_to_exactly_as_many_orders_as_there_are_units() {
    the_last_units_race(&System::start().await).await;
}

/// Twenty clients at once for the last five units: five orders win them, the other
/// fifteen are REJECTED with the insufficient-stock details, and stock ends at zero,
/// never below. Shared with the pipeline's runs on each broker.
pub(crate) async fn the_last_units_race(system: &System) {
    let scarce = system.product(1.00, 5).await;
    let placed = (0..20).map(|i| async move {
        system
            .place(&format!("race-{i}"), 1 + i % 5, &[(scarce, 1)])
            .await
    });
    let mut ids = Vec::new();
    for r in futures::future::join_all(placed).await {
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut won = 0;
    for id in &ids {
        // With billing running a winner may already be PAID when it is read.
        let order = system
            .order_until(id, Duration::from_secs(60), |o| o["status"] != "PENDING")
            .await;
        if order["status"] == "REJECTED" {
            let reason = order["history"][1]["reason"].as_str().unwrap();
            assert_eq!(
                reason,
                format!("Requested 1 units of SKU-{scarce}; only 0 available.")
            );
        } else {
            assert!(
                ["CONFIRMED", "PAID"].contains(&order["status"].as_str().unwrap()),
                "{order}"
            );
            won += 1;
        }
    }
    assert_eq!(won, 5);
    assert_eq!(system.stock(scarce).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_gives_the_stock_back_once_and_is_idempotent() {
    let system = System::start().await;
    let item = system.product(10.00, 10).await;
    let id = system.placed("c1", 1, &[(item, 4)]).await;
    system.status_becomes(&id, "CONFIRMED").await;
    assert_eq!(system.stock(item).await, 6);
    for _ in 0..2 {
        let r = system.cancel(&id).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "CANCELLED");
        assert_eq!(history(&body), ["PENDING", "CONFIRMED", "CANCELLED"]);
    }
    system.stock_becomes(item, 10).await;

    // A rejected order cannot be cancelled.
    let rejected = system.placed("c2", 1, &[(item, 11)]).await;
    system.status_becomes(&rejected, "REJECTED").await;
    let r = system.cancel(&rejected).await;
    assert_eq!(r.status(), 422);
    assert_eq!(system.stock(item).await, 10);
}

/// The same accept, reads and cancel with orders' database on PostgreSQL (the sqlx path;
/// SQLite files take the rusqlite writer's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_an_order_is_accepted_replayed_confirmed_and_cancelled() {
    let pg = storage::testing::postgres_database(&storage::testing::fresh_name()).await;
    let url = pg.url.clone();
    let system = System::start_with(move |s| s.services.orders.database_url = Some(url)).await;
    let item = system.product(4.00, 3).await;
    let id = system.placed("pg-1", 2, &[(item, 2)]).await;
    let again = system.place("pg-1", 2, &[(item, 2)]).await;
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str());
    assert_eq!(system.place("pg-1", 2, &[(item, 1)]).await.status(), 422);
    system.status_becomes(&id, "CONFIRMED").await;
    let r = system.cancel(&id).await;
    assert_eq!(r.status(), 200);
    system.stock_becomes(item, 3).await;
    let unknown = system.place("pg-2", 77, &[(item, 1)]).await;
    assert_eq!(unknown.status(), 422);
    drop(system);
    drop(pg);
}

/// Accounts never deletes a user, so orders asks about a user once: with accounts gone,
/// a user it confirmed still orders; one it never asked about cannot (503, retryable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_accounts_confirmed_once_is_not_asked_about_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings::Settings {
        data_dir: dir.path().to_path_buf(),
        ..settings::Settings::default()
    };
    for service in settings::ServiceName::ALL {
        settings.services.get_mut(service).port = 0;
    }
    settings.outbound.timeout = std::time::Duration::from_millis(500);
    let accounts = accounts::build(&settings).await.unwrap();
    accounts::seed::seed(
        &accounts::AccountsStore::new(accounts.database().clone()),
        5,
    )
    .await
    .unwrap();
    // Orders reaches accounts through a front that can take it away.
    let front = messaging::testing::TcpFront::to(accounts.local_addr())
        .await
        .unwrap();
    settings.services.accounts.port = front.port();
    let accounts = Running::run(accounts);
    let catalog = catalog::build(&settings).await.unwrap();
    settings.services.catalog.port = catalog.port();
    let catalog = Running::run(catalog);
    let orders = orders::build(&settings).await.unwrap();
    let orders = Running::run(orders);
    let system = System::assemble(settings, accounts, catalog, orders, dir);

    let item = system.product(1.00, 10).await;
    assert_eq!(system.place("known-1", 1, &[(item, 1)]).await.status(), 202);
    front.down();
    assert_eq!(system.place("known-2", 1, &[(item, 1)]).await.status(), 202);
    let unknown = system.place("unknown-1", 2, &[(item, 1)]).await;
    assert_eq!(unknown.status(), 503, "{}", unknown.text().await.unwrap());
}
