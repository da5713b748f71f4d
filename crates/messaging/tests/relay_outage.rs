//! The outbox relay loop against real brokers that go away and come back (a TCP front
//! between the relay and a broker of the test's own): while the broker is gone the relay
//! backs off, its breaker opens and nothing is lost or reordered; when the broker returns
//! the backlog drains by itself, every message is on the stream in write order, and sent
//! rows are purged. On NATS JetStream (a `nats-server` of the test's own) and RabbitMQ (a
//! virtual host of the test's own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use messaging::outbox::{self, Destination, Outbox, RelayOptions};
use messaging::testing::{NatsServer, RabbitVhost, TcpFront};
use messaging::{Broker, Envelope, StartFrom, StreamOptions};
use resilience::breaker::{BreakerConfig, SlidingWindow};
use resilience::downstream::Policy;
use resilience::retry::RetryPolicy;
use storage::Database;

const SERVICE: &str = "relay-outage";
const WAIT: Duration = Duration::from_secs(30);

fn event(n: u64) -> Envelope {
    Envelope::new("OrderCreated", serde_json::json!({"n": n})).with_key("ORD-1")
}

async fn enqueue(db: &Database, stream: &str, ns: std::ops::Range<u64>) {
    let mut tx = db.begin_write().await.unwrap();
    for n in ns {
        outbox::enqueue(&mut tx, Destination::Stream(stream), &event(n))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Polls `check` until it holds, within `WAIT`.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event's `n` on `stream`, as a new group reads it from the start, until `expect`
/// distinct ones came (a publish the broker took just as the connection broke may come
/// twice on a broker that keeps no ids: at least once).
async fn read_ns(broker: &Broker, stream: &str, expect: usize) -> Vec<u64> {
    let group = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let mut member = broker
        .streams
        .subscribe(stream, &group, StartFrom::Earliest)
        .await
        .unwrap();
    let mut ns: Vec<u64> = Vec::new();
    while ns.len() < expect {
        let e = tokio::time::timeout(WAIT, member.next())
            .await
            .expect("an event within WAIT")
            .unwrap();
        let n = e.message.as_ref().unwrap().payload["n"].as_u64().unwrap();
        if !ns.contains(&n) {
            ns.push(n);
        }
        e.commit().await.unwrap();
    }
    member.close().await.unwrap();
    ns
}

async fn sent_rows(db: &Database) -> i64 {
    let mut conn = db.pool().acquire().await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    n
}

/// The whole story on one broker, reached through `front` (which relays to `target`);
/// `connect` opens the broker at the front's URL.
async fn the_relay_rides_out_an_outage(front: TcpFront, target: SocketAddr, broker: Broker) {
    // The test's own recorder (current-thread runtime): the relay's series are its alone.
    let recorder = telemetry::metrics::isolated_recorder();
    let series = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);

    let db = storage::testing::sqlite(&[&outbox::MIGRATIONS]).await;
    let stream = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let options = StreamOptions {
        partitions: 1,
        ..StreamOptions::default()
    };
    broker.streams.declare(&stream, &options).await.unwrap();
    // A small breaker, so an outage of a few publishes opens it.
    let policy = Policy {
        timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        breaker: BreakerConfig {
            window: SlidingWindow::Count(4),
            minimum_calls: 2,
            wait_in_open: Duration::from_millis(300),
            permitted_calls_in_half_open: 1,
            ..BreakerConfig::default()
        },
        ..Policy::default()
    };
    let relay = Outbox::with_policy(db.db.clone(), SERVICE, policy);
    let options = RelayOptions {
        poll: Duration::from_millis(50),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(400),
        keep_sent: Duration::ZERO,
        purge_every: Duration::from_millis(200),
        ..RelayOptions::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(
        relay
            .clone()
            .run_relay(broker.clone(), options, stop.clone()),
    );

    // Up: the first five go.
    enqueue(&db.db, &stream, 0..5).await;
    relay.notify();
    until("the first five published", || async {
        relay.backlog().await.unwrap() == 0
    })
    .await;

    // Down: five more wait in the outbox; the relay fails, backs off, its breaker opens.
    front.down();
    enqueue(&db.db, &stream, 5..10).await;
    relay.notify();
    let open = format!(r#"brigade_breaker_state{{service="{SERVICE}",breaker="broker"}} 1"#);
    until("the relay's breaker opened", || async {
        series.render().contains(&open)
    })
    .await;
    let page = series.render();
    assert!(
        page.contains(&format!(
            r#"brigade_outbox_publish_failures_total{{service="{SERVICE}"}}"#
        )),
        "{page}"
    );
    assert_eq!(
        relay.backlog().await.unwrap(),
        5,
        "nothing is lost while the broker is gone"
    );

    // Back: the backlog drains by itself, in write order, and sent rows are purged.
    front.up(target);
    until("the backlog drained after the broker returned", || async {
        relay.backlog().await.unwrap() == 0
    })
    .await;
    let ns = read_ns(&broker, &stream, 10).await;
    assert_eq!(
        ns,
        (0..10).collect::<Vec<_>>(),
        "every message, in write order"
    );
    until("sent rows purged", || async {
        sent_rows(&db.db).await == 0
    })
    .await;
    let closed = format!(r#"brigade_breaker_state{{service="{SERVICE}",breaker="broker"}} 0"#);
    assert!(series.render().contains(&closed), "{}", series.render());

    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn on_nats_the_relay_rides_out_an_outage() {
    let nats = NatsServer::start().await;
    let front = TcpFront::to(nats.addr()).await.unwrap();
    let settings = settings::MessagingSettings {
        publish_timeout: Duration::from_millis(500),
        ..settings::MessagingSettings::default()
    };
    let url = format!("nats://127.0.0.1:{}", front.port());
    let broker = messaging::nats::connect(&url, &settings).await.unwrap();
    the_relay_rides_out_an_outage(front, nats.addr(), broker).await;
}

#[tokio::test]
async fn on_rabbitmq_the_relay_rides_out_an_outage() {
    let vhost = RabbitVhost::new();
    let target = SocketAddr::from(([127, 0, 0, 1], 5672));
    let front = TcpFront::to(target).await.unwrap();
    let settings = settings::MessagingSettings {
        publish_timeout: Duration::from_millis(500),
        ..settings::MessagingSettings::default()
    };
    let broker = messaging::rabbitmq::connect(&vhost.url_via(front.port()), &settings)
        .await
        .unwrap();
    the_relay_rides_out_an_outage(front, target, broker).await;
}
