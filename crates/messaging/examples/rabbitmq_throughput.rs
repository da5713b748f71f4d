//! Durable publish → consume of N messages with a 1 KiB payload through our layer and
//! through raw `lapin`, in the same run, against RabbitMQ at 127.0.0.1:5672:
//! publisher confirms on both sides (up to 256 publishes awaiting their confirm at a
//! time), a consumer with the same prefetch acking each message.
//!
//! `cargo run --release -p messaging --example rabbitmq_throughput -- [N]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use messaging::{Envelope, QueueOptions};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PREFETCH: u16 = 256;
const IN_FLIGHT_PUBLISHES: usize = 256;

fn payload() -> serde_json::Value {
    // 1 KiB of JSON: {"order_id": "...", "data": "xxxx..."}
    let filler = "x".repeat(1024 - 40);
    serde_json::json!({"order_id": "ORD-12345", "data": filler})
}

async fn ours(n: usize) -> Duration {
    let settings = settings::MessagingSettings {
        backend: settings::MessagingBackend::Rabbitmq,
        url: Some(URL.to_owned()),
        ..settings::MessagingSettings::default()
    };
    // Counted as a service's broker is (`series`), with the process's recorder.
    let broker = messaging::rabbitmq::connect(URL, &settings)
        .await
        .expect("RabbitMQ at 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)")
        .for_service("bench");
    let queue = format!("bench-ours-{}", uuid::Uuid::new_v4().simple());
    broker
        .queues
        .declare(&queue, &QueueOptions::default())
        .await
        .unwrap();
    let messages: Vec<Envelope> = (0..n).map(|_| Envelope::new("Bench", payload())).collect();

    let start = Instant::now();
    let mut consumer = broker.queues.consume(&queue, PREFETCH).await.unwrap();
    let consume = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.next().await.unwrap();
            assert!(d.message.is_ok());
            d.ack().await.unwrap();
        }
    });
    let queues = broker.queues.clone();
    futures::stream::iter(messages.iter().map(|m| {
        let queues = queues.clone();
        let queue = queue.clone();
        async move { queues.publish(&queue, m).await }
    }))
    .buffer_unordered(IN_FLIGHT_PUBLISHES)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    consume.await.unwrap();
    let took = start.elapsed();
    delete(&[
        queue.clone(),
        format!("{queue}.dlq"),
        format!("{queue}.retry"),
    ])
    .await;
    took
}

async fn raw(n: usize) -> Duration {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let queue = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let publisher = conn.create_channel().await.unwrap();
    publisher
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = serde_json::to_vec(&payload()).unwrap();

    let start = Instant::now();
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consume = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    futures::stream::iter((0..n).map(|_| {
        let publisher = publisher.clone();
        let queue = queue.clone();
        let body = body.clone();
        async move {
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await?
                .await?;
            assert!(confirm.is_ack());
            Ok::<_, lapin::Error>(())
        }
    }))
    .buffer_unordered(IN_FLIGHT_PUBLISHES)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    consume.await.unwrap();
    let took = start.elapsed();
    delete(&[queue]).await;
    took
}

async fn delete(queues: &[String]) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "OK".into()).await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    // Warm up both paths once, then measure raw first and ours second.
    let _ = raw(n / 10).await;
    let _ = ours(n / 10).await;
    let raw_took = raw(n).await;
    let ours_took = ours(n).await;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("messages: {n} x 1 KiB, durable, publisher confirms, prefetch {PREFETCH}");
    println!(
        "raw lapin:  {:>10.0} msgs/s ({raw_took:.2?})",
        rate(raw_took)
    );
    println!(
        "messaging:  {:>10.0} msgs/s ({ours_took:.2?})",
        rate(ours_took)
    );
    println!(
        "ratio:      {:.2}x (goal >= 0.8x)",
        rate(ours_took) / rate(raw_took)
    );
}
