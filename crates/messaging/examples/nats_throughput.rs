//! Durable publish → consume throughput of N 1 KiB messages through the NATS backend of
//! `messaging`, against raw `async-nats` JetStream doing the same work in the same run
//! (same stream layout, same publish window, same pull batch / prefetch, one ack each).
//!
//! ```text
//! cargo run --release -p messaging --example nats_throughput -- [N] [prefetch] [window]
//! ```
//! Needs nats-server with JetStream at 127.0.0.1:4222.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull, stream};
use futures::{StreamExt, TryStreamExt};
use messaging::{Envelope, QueueOptions};

const URL: &str = "nats://127.0.0.1:4222";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let prefetch: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let window: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let payload = serde_json::json!({ "data": "x".repeat(1024 - 12) });
    let body = serde_json::to_vec(&payload).unwrap();
    println!(
        "N={n} messages of {} bytes, prefetch/batch {prefetch}, publish window {window}",
        body.len()
    );

    let raw = raw_run(n, prefetch, window, &body).await;
    let ours = our_run(n, prefetch, window, &payload).await;
    report("raw async-nats", raw, n);
    report("messaging::nats", ours, n);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio ours/raw: publish {:.2}x, consume {:.2}x, end-to-end {:.2}x (goal >= 0.80x)",
        ratio(raw.0, ours.0),
        ratio(raw.1, ours.1),
        ratio(raw.0 + raw.1, ours.0 + ours.1),
    );
}

fn report(name: &str, (publish, consume): (Duration, Duration), n: usize) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{name:>16}: publish {:>9.0} msg/s, consume {:>9.0} msg/s, end-to-end {:>9.0} msg/s",
        rate(publish),
        rate(consume),
        rate(publish + consume)
    );
}

async fn our_run(
    n: usize,
    prefetch: u16,
    window: usize,
    payload: &serde_json::Value,
) -> (Duration, Duration) {
    let settings = settings::MessagingSettings::default();
    // Counted as a service's broker is (`series`), with the process's recorder.
    let broker = messaging::nats::connect(URL, &settings)
        .await
        .expect("NATS")
        .for_service("bench");
    let queue = format!("bench_ours_{}", uuid::Uuid::new_v4().simple());
    broker
        .queues
        .declare(&queue, &QueueOptions::default())
        .await
        .unwrap();
    let envelopes: Vec<Envelope> = (0..n)
        .map(|_| Envelope::new("Bench", payload.clone()))
        .collect();

    let started = Instant::now();
    futures::stream::iter(envelopes.iter())
        .map(|e| broker.queues.publish(&queue, e))
        .buffer_unordered(window)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let publish = started.elapsed();

    let started = Instant::now();
    let mut consumer = broker.queues.consume(&queue, prefetch).await.unwrap();
    for _ in 0..n {
        let delivery = consumer.next().await.unwrap();
        assert!(delivery.message.is_ok());
        delivery.ack().await.unwrap();
    }
    let consume = started.elapsed();
    drop(consumer);
    let js = jetstream::new(async_nats::connect(URL).await.unwrap());
    let _ = js.delete_stream(&queue).await;
    let _ = js.delete_stream(format!("{queue}-dlq")).await;
    (publish, consume)
}

async fn raw_run(n: usize, prefetch: u16, window: usize, body: &[u8]) -> (Duration, Duration) {
    let js = jetstream::new(async_nats::connect(URL).await.expect("NATS"));
    let name = format!("bench_raw_{}", uuid::Uuid::new_v4().simple());
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![name.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 6,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let bodies: Vec<(String, Vec<u8>)> = (0..n)
        .map(|_| (uuid::Uuid::now_v7().to_string(), body.to_vec()))
        .collect();

    let started = Instant::now();
    futures::stream::iter(bodies)
        .map(|(id, body)| {
            let js = js.clone();
            let subject = name.clone();
            async move {
                let publish = jetstream::message::PublishMessage::build()
                    .payload(body.into())
                    .message_id(id);
                js.send_publish(subject, publish).await?.await
            }
        })
        .buffer_unordered(window)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let publish = started.elapsed();

    let started = Instant::now();
    let mut received = 0;
    while received < n {
        let mut batch = consumer
            .batch()
            .max_messages(usize::from(prefetch))
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            message.ack().await.unwrap();
            received += 1;
            if received == n {
                break;
            }
        }
    }
    let consume = started.elapsed();
    let _ = js.delete_stream(&name).await;
    (publish, consume)
}
