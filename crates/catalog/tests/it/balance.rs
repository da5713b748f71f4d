//! Client-side balancing across three real catalog replicas: each serves a share of the
//! calls, and when one dies its share moves to the others with no failed call (reads are
//! retried on another replica; the dead one's breaker ejects it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use problem::Problem;
use proto::v1::ProductRequest;
use proto::v1::product_service_client::ProductServiceClient;
use resilience::balance::Replicas;
use resilience::breaker::{BreakerConfig, SlidingWindow};
use resilience::downstream::{Downstream, Policy};
use serde_json::json;
use server::testing::Channel;
use tonic::transport::Endpoint;

use crate::helpers::{Backend, TestData};

#[derive(Default)]
struct Tally {
    served: [AtomicUsize; 3],
    failed: [AtomicUsize; 3],
}

async fn round(
    downstream: &Downstream,
    replicas: &Replicas<ProductServiceClient<Channel>>,
    tally: &Arc<Tally>,
    calls: usize,
) -> usize {
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (downstream, replicas, tally) = (downstream.clone(), replicas.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = 0;
            for _ in 0..calls / 10 {
                let outcome = downstream
                    .call_balanced(&replicas, true, |attempt, client| {
                        let mut client = client.clone();
                        let tally = tally.clone();
                        async move {
                            let mut request = tonic::Request::new(ProductRequest { product_id: 1 });
                            request.set_timeout(attempt.budget);
                            match client.get_product(request).await {
                                Ok(_) => {
                                    tally.served[attempt.replica].fetch_add(1, Ordering::Relaxed);
                                    Ok(())
                                }
                                Err(status) => {
                                    tally.failed[attempt.replica].fetch_add(1, Ordering::Relaxed);
                                    Err(Problem::from_downstream("catalog", &status))
                                }
                            }
                        }
                    })
                    .await;
                if outcome.is_err() {
                    failures += 1;
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    failures
}

fn served(tally: &Tally) -> [usize; 3] {
    [0, 1, 2].map(|i| tally.served[i].load(Ordering::Relaxed))
}

#[tokio::test]
async fn three_replicas_share_the_load_and_a_dead_one_is_ejected() {
    let data = TestData::new(Backend::Sqlite).await;
    let apps = [data.spawn().await, data.spawn().await, data.spawn().await];
    let created = apps[0]
        .post(
            "/v1/products",
            "p",
            &json!({"name": "Laptop", "price": 999.99, "stock": 50}),
        )
        .await;
    assert_eq!(created.status(), 201);

    let clients = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let channel = server::testing::authorized(
                Endpoint::from_shared(app.base.clone())
                    .unwrap()
                    .connect_lazy(),
                app.token.clone(),
            );
            (format!("catalog-{i}"), ProductServiceClient::new(channel))
        })
        .collect();
    let breaker = BreakerConfig {
        window: SlidingWindow::Count(10),
        minimum_calls: 3,
        failure_rate_threshold: 50.0,
        wait_in_open: Duration::from_secs(60),
        ..BreakerConfig::default()
    };
    let replicas = Replicas::new(clients, &breaker);
    let downstream = Downstream::new(
        "catalog",
        Policy {
            timeout: Duration::from_secs(2),
            ..Policy::default()
        },
    );
    let tally = Arc::new(Tally::default());

    assert_eq!(round(&downstream, &replicas, &tally, 300).await, 0);
    let before = served(&tally);
    for (i, n) in before.iter().enumerate() {
        assert!(*n >= 45, "replica {i} served {n} of 300: {before:?}");
    }

    // Replica 2 dies.
    let [a, b, c] = apps;
    c.stop().await;
    let failures = round(&downstream, &replicas, &tally, 300).await;
    assert_eq!(failures, 0, "every call was answered by a live replica");
    let after = served(&tally);
    assert_eq!(after[2], before[2], "the dead replica served nothing");
    assert_eq!(
        after[0] + after[1] - before[0] - before[1],
        300,
        "the others took its share"
    );
    let attempts_on_dead = tally.failed[2].load(Ordering::Relaxed);
    assert!(
        attempts_on_dead <= 10,
        "its breaker ejected it after a few failed attempts, not {attempts_on_dead}"
    );
    assert_eq!(
        replicas.replicas()[2].breaker().state(),
        resilience::breaker::State::Open
    );
    a.stop().await;
    b.stop().await;
}
