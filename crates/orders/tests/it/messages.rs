//! What orders says on its channels, and what it does with what it cannot handle.

use std::time::Duration;

use messaging::{Envelope, StartFrom};
use serde_json::{Value, json};

use crate::helpers::System;

/// Reads `order-events` as a group of the test's own until `want` matches an event.
async fn event_where(system: &System, want: impl Fn(&Envelope) -> bool) -> Envelope {
    let broker = messaging::connect(&system.settings).await.unwrap();
    let group = format!("test-{}", uuid::Uuid::now_v7());
    let mut consumer = broker
        .streams
        .subscribe(orders::events::ORDER_EVENTS, &group, StartFrom::Earliest)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .expect("no such event within 20 s")
            .unwrap();
        let envelope = event.message.as_ref().unwrap().clone();
        event.commit().await.unwrap();
        if want(&envelope) {
            return envelope;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_carries_the_insufficient_stock_details_through_grpc_onto_the_stream() {
    let system = System::start().await;
    let few = system.product(2.50, 2).await;
    let r = system.place("few", 3, &[(few, 7)]).await;
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let correlation = accepted["correlation_id"].as_str().unwrap().to_owned();

    let created = event_where(&system, |e| {
        e.kind == "OrderCreated" && e.payload["order_id"] == id.as_str()
    })
    .await;
    // The seed's shape, ours added beside it.
    assert_eq!(created.payload["event_type"], "OrderCreated");
    assert_eq!(created.payload["total"], 17.5);
    assert_eq!(created.payload["total_minor"], 1750);
    assert_eq!(created.key.as_deref(), Some(id.as_str()));
    assert_eq!(
        created.correlation_id.as_deref(),
        Some(correlation.as_str())
    );

    let rejected = event_where(&system, |e| {
        e.kind == "OrderRejected" && e.payload["order_id"] == id.as_str()
    })
    .await;
    assert_eq!(
        rejected.payload["problem_type"],
        "https://brigade.dev/problems/insufficient-stock"
    );
    assert_eq!(rejected.payload["sku"], format!("SKU-{few}"));
    assert_eq!(rejected.payload["requested"], 7);
    assert_eq!(rejected.payload["available"], 2);
    // The worker handled it in the accept's chain.
    assert_eq!(
        rejected.correlation_id.as_deref(),
        Some(correlation.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_order_for_no_order_is_dead_lettered_with_its_reason_and_the_worker_keeps_serving()
 {
    let system = System::start().await;
    let broker = messaging::connect(&system.settings).await.unwrap();
    // What the seed's pika producer sends: a bare body naming an order we never took.
    let foreign = Envelope::new(
        "ProcessOrder",
        json!({"order_id": "ORD-12345", "total": 1999.98}),
    );
    broker
        .queues
        .publish(orders::events::ORDER_PROCESSING, &foreign)
        .await
        .unwrap();
    let garbage = Envelope::new("ProcessOrder", json!({"order": 1}));
    broker
        .queues
        .publish(orders::events::ORDER_PROCESSING, &garbage)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = broker
            .queues
            .dead_letters(orders::events::ORDER_PROCESSING, 10)
            .await
            .unwrap();
        if dead.len() == 2 || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.contains(&"no order ORD-12345 exists"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("does not parse")),
        "{reasons:?}"
    );

    let item = system.product(1.00, 1).await;
    let id = system.placed("after", 1, &[(item, 1)]).await;
    system.status_becomes(&id, "CONFIRMED").await;
}

/// The operator's redrive over `OperationsService`: only the queue orders consumes, a
/// limit in range, and under an idempotency key a repeat answers the same and moves
/// nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_dead_letters_moves_them_back_once_per_key() {
    use proto::v1::RedriveDeadLettersRequest;
    use proto::v1::operations_service_client::OperationsServiceClient;

    let system = System::start().await;
    let broker = messaging::connect(&system.settings).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(system.orders.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut operations = OperationsServiceClient::new(server::testing::authorized(
        channel,
        system.orders.token.clone(),
    ));
    let ask = |queue: &str, limit: i32, key: &str| {
        let mut request = tonic::Request::new(RedriveDeadLettersRequest {
            queue: queue.to_owned(),
            limit,
        });
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    for (queue, limit, code) in [
        ("order-events", 0, tonic::Code::NotFound),
        ("nobodys", 0, tonic::Code::NotFound),
        (
            orders::events::ORDER_PROCESSING,
            -1,
            tonic::Code::InvalidArgument,
        ),
        (
            orders::events::ORDER_PROCESSING,
            10_001,
            tonic::Code::InvalidArgument,
        ),
    ] {
        let refused = operations
            .redrive_dead_letters(ask(queue, limit, "refused"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{queue} {limit}: {refused:?}");
    }

    // Two messages orders cannot handle (they never parse): dead at once.
    for n in 0..2 {
        let garbage = Envelope::new("ProcessOrder", json!({"order": n}));
        broker
            .queues
            .publish(orders::events::ORDER_PROCESSING, &garbage)
            .await
            .unwrap();
    }
    let dead = || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = broker
                .queues
                .stats(orders::events::ORDER_PROCESSING)
                .await
                .unwrap();
            if stats.dead == 2 && stats.ready == 0 && stats.in_flight == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    dead().await;
    let redriven = || async {
        let text = reqwest::get(format!("{}/metrics", system.orders.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let queue = [("queue", orders::events::ORDER_PROCESSING)];
        telemetry::metrics::series_value(&text, "brigade_messaging_redriven_total", &queue)
    };
    // One at a time with a limit; then the rest with another key.
    let first = operations
        .redrive_dead_letters(ask(orders::events::ORDER_PROCESSING, 1, "one"))
        .await
        .unwrap();
    assert!(!first.metadata().contains_key("idempotent-replayed"));
    assert_eq!(first.get_ref().moved, 1);
    assert_eq!(first.get_ref().queue, orders::events::ORDER_PROCESSING);
    assert_eq!(redriven().await, 1.0);
    dead().await;
    let replayed = operations
        .redrive_dead_letters(ask(orders::events::ORDER_PROCESSING, 1, "one"))
        .await
        .unwrap();
    assert_eq!(
        replayed.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    assert_eq!(replayed.get_ref().moved, 1);
    // The replay moved nothing.
    assert_eq!(redriven().await, 1.0);
    // The same key for another redrive: refused, nothing moved.
    let reused = operations
        .redrive_dead_letters(ask(orders::events::ORDER_PROCESSING, 2, "one"))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::InvalidArgument, "{reused:?}");
    assert_eq!(redriven().await, 1.0);

    // Eight at once under one key: one of them moves, the others hear the key in use
    // (409's ABORTED) or replay its answer; nothing moves twice.
    let tries = (0..8).map(|_| {
        let mut operations = operations.clone();
        let request = ask(orders::events::ORDER_PROCESSING, 0, "all");
        async move { operations.redrive_dead_letters(request).await }
    });
    let answers = futures::future::join_all(tries).await;
    let (mut moved, mut replays) = (None, Vec::new());
    for answer in answers {
        match answer {
            Ok(done) if done.metadata().contains_key("idempotent-replayed") => {
                replays.push(done.get_ref().moved);
            }
            Ok(done) => {
                assert!(moved.is_none(), "two redrives ran under one key");
                moved = Some(done.get_ref().moved);
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}"),
        }
    }
    assert!(
        replays.iter().all(|n| Some(*n) == moved),
        "{replays:?} {moved:?}"
    );
    assert_eq!(moved, Some(2));
    assert_eq!(redriven().await, 3.0);
}
