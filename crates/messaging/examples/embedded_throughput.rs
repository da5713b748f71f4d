//! Durable publish → consume → ack throughput of the embedded backend, end to end.
//!
//! `cargo run --release -p messaging --example embedded_throughput -- [N] [PAYLOAD_BYTES] [IN_FLIGHT]`
//!
//! One task publishes N messages (each publish returns after its transaction committed;
//! up to IN_FLIGHT (256) publishes are in flight at once, so the writer thread commits them in
//! groups); another task consumes them with prefetch 256 and acks each (acks also in
//! flight concurrently, up to the prefetch). Prints messages per second from the first
//! publish to the last ack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use messaging::{Envelope, QueueOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(100_000, |a| a.parse().unwrap());
    let size: usize = args.next().map_or(1024, |a| a.parse().unwrap());
    let in_flight: usize = args.next().map_or(256, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messaging.db");
    let settings = settings::MessagingSettings {
        handler_timeout: Duration::from_secs(60),
        ..settings::MessagingSettings::default()
    };
    // Counted as a service's broker is (`series`), with the process's recorder.
    let broker = messaging::embedded::open(&path, &settings)
        .await
        .unwrap()
        .for_service("bench");
    broker
        .queues
        .declare("bench", &QueueOptions::default())
        .await
        .unwrap();
    let pad = "x".repeat(size.saturating_sub(40));

    let started = Instant::now();
    let consumer_broker = broker.clone();
    let consumer = tokio::spawn(async move {
        let mut consumer = consumer_broker.queues.consume("bench", 256).await.unwrap();
        let mut acks = futures::stream::FuturesUnordered::new();
        let mut done = 0;
        while done < n {
            tokio::select! {
                d = consumer.next() => {
                    let d = d.unwrap();
                    assert!(d.message.is_ok());
                    acks.push(d.ack());
                }
                Some(r) = acks.next(), if !acks.is_empty() => {
                    r.unwrap();
                    done += 1;
                }
            }
        }
    });
    let published = futures::stream::iter(0..n)
        .map(|i| {
            let broker = broker.clone();
            let e = Envelope::new("Bench", serde_json::json!({"i": i, "pad": pad}));
            async move { broker.queues.publish("bench", &e).await }
        })
        .buffer_unordered(in_flight)
        .fold(0_usize, |count, r| async move {
            r.unwrap();
            count + 1
        })
        .await;
    let publish_time = started.elapsed();
    consumer.await.unwrap();
    let total = started.elapsed();
    println!(
        "embedded: {published} messages of {size} B, {in_flight} publishes in flight: published in {publish_time:.2?} ({:.0}/s); \
         published+consumed+acked in {total:.2?}: {:.0} msgs/s end to end",
        published as f64 / publish_time.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
}
