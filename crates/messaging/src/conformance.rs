//! The conformance suite: the same test functions, run against every backend, so no
//! backend can quietly mean something different by "ack", "retry" or "group".
//!
//! A backend's test file implements [`Harness`] (how to get a fresh client, as a new
//! process would, on the same data or server) and lists the properties to run:
//!
//! ```text
//! messaging::conformance_tests!(MyHarness::new();
//!     queue_ack_deletes, queue_redelivers_unacked_when_consumer_dropped, /* ... */);
//! ```
//!
//! [`ALL`] names every property. A backend that cannot support one says so in
//! [`Harness::unsupported`] with the reason; the property then prints that reason on
//! stderr (visible with `--nocapture`) and passes without asserting, so the gap is written
//! down in the harness, not hidden by leaving the test out.
//!
//! Waits are polls with deadlines: a consumer's `next()` under a timeout, a stats query
//! repeated until it matches. The only fixed waits are the "nothing arrives for a while"
//! checks (a retry delay not yet over, a prefetch limit reached), which cannot be
//! observed any other way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::json;

use crate::{
    Broker, Delivery, Envelope, QueueConsumer, QueueOptions, StartFrom, StreamConsumer,
    StreamEvent, StreamOptions,
};

/// A property a backend may not be able to provide (see [`Harness::unsupported`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Publishing an id twice to a queue delivers it once.
    QueueDeduplication,
    /// Publishing an id twice to a stream appends it once.
    StreamDeduplication,
    /// `retry_after` on a queue holds the message back for the delay.
    DelayedRetry,
    /// `StartFrom::Time` replays from a point in time.
    ReplayByTime,
    /// A stream event re-read by another member (after a restart or a rebalance) carries
    /// an `attempt` above 1. Inside one member every backend counts retries.
    StreamAttempts,
}

/// How the suite reaches one backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A fresh client, as a new process would open it, on the same data (embedded) or
    /// server. Every call returns a new connection.
    async fn connect(&self) -> Broker;

    /// `base` made unique to this test run (queue, stream and group names).
    fn unique(&self, base: &str) -> String;

    /// Puts `body` on `queue` with only `metadata` (header name, value), as a producer
    /// that is not ours would: the body need not be JSON.
    async fn publish_raw(&self, queue: &str, body: &[u8], metadata: &[(&str, String)]);

    /// The longest a message held by a consumer that went away takes to be redelivered.
    fn redelivery_within(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// How long a handler may take: the `handler_timeout` the harness's brokers are
    /// connected with (a backend that enforces none, such as RabbitMQ, says how long its
    /// test handlers should run). Properties of slow handlers run them at 90% of it.
    fn handler_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// The backend's time resolution for `StartFrom::Time` (RabbitMQ streams: seconds).
    fn clock_granularity(&self) -> Duration {
        Duration::from_millis(20)
    }

    /// `Some(reason)` when the backend cannot provide `feature`.
    fn unsupported(&self, _feature: Feature) -> Option<&'static str> {
        None
    }

    /// Deletes what a test created (called at the end of each property that passed).
    async fn cleanup(&self, _queues: &[String], _streams: &[String]) {}
}

/// Every property, for `conformance_tests!`.
pub const ALL: &[&str] = &[
    "queue_ack_deletes",
    "queue_prefetch_limits_unsettled",
    "queue_prefetched_messages_keep_their_lease",
    "queue_redelivers_unacked_when_consumer_dropped",
    "queue_nack_and_retry_after",
    "queue_dead_letters_after_max_deliveries",
    "queue_defer_does_not_count",
    "queue_redrive",
    "queue_deduplicates_republished_id",
    "queue_persists_across_reconnect",
    "queue_malformed_body_is_rejected_to_dlq",
    "stream_per_key_order",
    "stream_groups_are_independent",
    "stream_group_members_share_partitions",
    "stream_replay",
    "stream_deduplicates_republished_id",
    "stream_persists_across_reconnect",
    "stream_retry_after_holds_the_partition",
    "stream_slow_members_keep_their_events",
    "series_are_the_same_on_every_backend",
];

/// Every property in [`ALL`], one `#[tokio::test]` each: what a backend that runs the
/// whole suite writes (the one list of names lives here, next to [`ALL`]).
#[macro_export]
macro_rules! all_conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!($harness;
            queue_ack_deletes,
            queue_prefetch_limits_unsettled,
            queue_prefetched_messages_keep_their_lease,
            queue_redelivers_unacked_when_consumer_dropped,
            queue_nack_and_retry_after,
            queue_dead_letters_after_max_deliveries,
            queue_defer_does_not_count,
            queue_redrive,
            queue_deduplicates_republished_id,
            queue_persists_across_reconnect,
            queue_malformed_body_is_rejected_to_dlq,
            stream_per_key_order,
            stream_groups_are_independent,
            stream_group_members_share_partitions,
            stream_replay,
            stream_deduplicates_republished_id,
            stream_persists_across_reconnect,
            stream_retry_after_holds_the_partition,
            stream_slow_members_keep_their_events,
            series_are_the_same_on_every_backend,
        );
    };
}

/// One `#[tokio::test]` per named property, each with a fresh harness from `$harness`
/// (an expression, evaluated inside the async test, so it may `.await`).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $harness;
                $crate::conformance::$name(&harness).await;
            }
        )+
    };
}

const WAIT: Duration = Duration::from_secs(10);

fn skip(h: &dyn Harness, feature: Feature, property: &str) -> bool {
    if let Some(reason) = h.unsupported(feature) {
        eprintln!("conformance: {property}: NOT SUPPORTED ({feature:?}): {reason}");
        return true;
    }
    false
}

fn order(n: u64) -> Envelope {
    Envelope::new(
        "OrderCreated",
        json!({"event_type": "OrderCreated", "order_id": format!("ORD-{n}"), "n": n}),
    )
}

fn n_of(envelope: &Envelope) -> u64 {
    envelope.payload["n"].as_u64().expect("payload n")
}

async fn next(consumer: &mut Box<dyn QueueConsumer>, within: Duration, what: &str) -> Delivery {
    match tokio::time::timeout(within, consumer.next()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => panic!("{what}: next() failed: {e}"),
        Err(_) => panic!("{what}: nothing delivered within {within:?}"),
    }
}

async fn next_event(
    consumer: &mut Box<dyn StreamConsumer>,
    within: Duration,
    what: &str,
) -> StreamEvent {
    match tokio::time::timeout(within, consumer.next()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => panic!("{what}: next() failed: {e}"),
        Err(_) => panic!("{what}: no event within {within:?}"),
    }
}

/// Nothing is delivered for `quiet`.
async fn assert_quiet(consumer: &mut Box<dyn QueueConsumer>, quiet: Duration, what: &str) {
    if let Ok(got) = tokio::time::timeout(quiet, consumer.next()).await {
        panic!("{what}: expected nothing for {quiet:?}, got {got:?}");
    }
}

async fn queue(h: &dyn Harness, broker: &Broker, base: &str, options: QueueOptions) -> String {
    let name = h.unique(base);
    broker.queues.declare(&name, &options).await.unwrap();
    name
}

async fn stream(h: &dyn Harness, broker: &Broker, base: &str, partitions: u16) -> String {
    let name = h.unique(base);
    let options = StreamOptions {
        partitions,
        ..StreamOptions::default()
    };
    broker.streams.declare(&name, &options).await.unwrap();
    name
}

/// A one-partition stream holding one key's events `n` for `ns`, and a new group's
/// member reading it from the start.
async fn one_key_stream(
    h: &dyn Harness,
    broker: &Broker,
    base: &str,
    ns: std::ops::Range<u64>,
) -> (String, String, Box<dyn StreamConsumer>) {
    let s = stream(h, broker, base, 1).await;
    for n in ns {
        broker
            .streams
            .publish(&s, &keyed("ORD-1", n))
            .await
            .unwrap();
    }
    let group = h.unique("g");
    let member = broker
        .streams
        .subscribe(&s, &group, StartFrom::Earliest)
        .await
        .unwrap();
    (s, group, member)
}

/// Polls `stats` until `check` holds.
async fn stats_until(
    broker: &Broker,
    queue: &str,
    what: &str,
    check: impl Fn(&crate::QueueStats) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = broker.queues.stats(queue).await.unwrap();
        if check(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: stats stayed {stats:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn dead_letters_until(broker: &Broker, queue: &str, n: usize) -> Vec<crate::DeadLetter> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = broker.queues.dead_letters(queue, 100).await.unwrap();
        if dead.len() >= n {
            return dead;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} dead letters, have {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Publish, consume, ack: the queue is empty afterwards.
pub async fn queue_ack_deletes(h: &dyn Harness) {
    let broker = h.connect().await;
    let q = queue(h, &broker, "ack", QueueOptions::default()).await;
    let sent: Vec<Envelope> = (0..3).map(order).collect();
    for m in &sent {
        broker.queues.publish(&q, m).await.unwrap();
    }
    let mut consumer = broker.queues.consume(&q, 10).await.unwrap();
    for m in &sent {
        let d = next(&mut consumer, WAIT, "ack").await;
        let got = d.message.as_ref().expect("an envelope");
        assert_eq!(got, m, "delivered in publish order, intact");
        assert_eq!(d.attempt, 1);
        d.ack().await.unwrap();
    }
    stats_until(&broker, &q, "after acks", |s| {
        s.ready == 0 && s.in_flight == 0
    })
    .await;
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// A consumer never holds more than `prefetch` unsettled deliveries.
pub async fn queue_prefetch_limits_unsettled(h: &dyn Harness) {
    let broker = h.connect().await;
    let q = queue(h, &broker, "prefetch", QueueOptions::default()).await;
    for n in 0..5 {
        broker.queues.publish(&q, &order(n)).await.unwrap();
    }
    let mut consumer = broker.queues.consume(&q, 2).await.unwrap();
    let first = next(&mut consumer, WAIT, "prefetch 1").await;
    let second = next(&mut consumer, WAIT, "prefetch 2").await;
    assert_quiet(
        &mut consumer,
        Duration::from_millis(300),
        "a third while two are unsettled",
    )
    .await;
    first.ack().await.unwrap();
    let third = next(&mut consumer, WAIT, "after one ack").await;
    second.ack().await.unwrap();
    third.ack().await.unwrap();
    for _ in 0..2 {
        next(&mut consumer, WAIT, "the rest")
            .await
            .ack()
            .await
            .unwrap();
    }
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// Slow handlers behind a prefetch: two consumers with prefetch 4, each handling one
/// delivery at a time (as `worker::run` does) for 90% of the handler timeout. The first
/// takes four of six messages, so its last one waits three handlers' time in its buffer;
/// the second runs out of work early and asks for more all the while. Every message is
/// handled exactly once, every ack succeeds and nothing is dead-lettered: a message
/// waiting in a live consumer's buffer is not given to another consumer.
pub async fn queue_prefetched_messages_keep_their_lease(h: &dyn Harness) {
    const MESSAGES: u64 = 6;
    let broker = h.connect().await;
    let q = queue(h, &broker, "slow", QueueOptions::default()).await;
    for n in 0..MESSAGES {
        broker.queues.publish(&q, &order(n)).await.unwrap();
    }
    let work = h.handler_timeout().mul_f64(0.9);
    let handled = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, u32>::new()));
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let own = h.connect().await;
        let mut consumer = own.queues.consume(&q, 4).await.unwrap();
        let handled = Arc::clone(&handled);
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        consumers.spawn(async move {
            let _own = own;
            let mut started = Some(started);
            loop {
                let delivery =
                    match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                        Ok(delivery) => delivery.unwrap(),
                        Err(_) if handled.lock().unwrap().len() as u64 == MESSAGES => return,
                        Err(_) => continue,
                    };
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
                let n = n_of(delivery.message.as_ref().unwrap());
                // The handler's work: it takes 90% of the time it may take.
                tokio::time::sleep(work).await;
                *handled.lock().unwrap().entry(n).or_default() += 1;
                delivery
                    .ack()
                    .await
                    .unwrap_or_else(|e| panic!("the ack of message {n} failed: {e}"));
            }
        });
        // The first consumer has its prefetch before the second asks.
        tokio::time::timeout(WAIT, has_started)
            .await
            .expect("a first delivery within WAIT")
            .unwrap();
    }
    each_handled_once(consumers, &handled, MESSAGES, work).await;
    assert!(broker.queues.dead_letters(&q, 10).await.unwrap().is_empty());
    stats_until(&broker, &q, "an empty queue", |s| {
        (s.ready, s.in_flight, s.dead) == (0, 0, 0)
    })
    .await;
    h.cleanup(&[q], &[]).await;
}

/// Waits for the `handlers` of a slow-handler property (each ends once `n` messages are
/// handled; a panic in one, such as a failed settle, fails the test) and asserts that
/// messages `0..n` were each handled exactly once.
async fn each_handled_once(
    mut handlers: tokio::task::JoinSet<()>,
    handled: &std::sync::Mutex<BTreeMap<u64, u32>>,
    n: u64,
    work: Duration,
) {
    let all = work * u32::try_from(n).unwrap() + WAIT;
    tokio::time::timeout(all, async {
        while let Some(done) = handlers.join_next().await {
            done.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} messages were not handled within {all:?}"));
    let handled = handled.lock().unwrap().clone();
    let expected: BTreeMap<u64, u32> = (0..n).map(|i| (i, 1)).collect();
    assert_eq!(handled, expected, "every message handled exactly once");
}

/// At-least-once: a delivery whose consumer went away unsettled comes again, attempt 2.
pub async fn queue_redelivers_unacked_when_consumer_dropped(h: &dyn Harness) {
    let broker = h.connect().await;
    let q = queue(h, &broker, "redeliver", QueueOptions::default()).await;
    let sent = order(1);
    broker.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer, WAIT, "first delivery").await;
    assert_eq!(d.attempt, 1);
    drop(d);
    drop(consumer);
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer, h.redelivery_within(), "redelivery").await;
    assert_eq!(d.message.as_ref().unwrap().id, sent.id);
    assert_eq!(d.attempt, 2, "a redelivery counts as the second attempt");
    d.ack().await.unwrap();
    stats_until(&broker, &q, "after ack", |s| {
        s.ready == 0 && s.in_flight == 0
    })
    .await;
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// `nack` redelivers now; `retry_after` not before the delay, then redelivers.
pub async fn queue_nack_and_retry_after(h: &dyn Harness) {
    let broker = h.connect().await;
    let q = queue(h, &broker, "retry", QueueOptions::default()).await;
    let sent = order(7);
    broker.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer, WAIT, "first").await;
    d.nack().await.unwrap();
    let d = next(&mut consumer, WAIT, "after nack").await;
    assert_eq!(d.attempt, 2);
    assert_eq!(d.message.as_ref().unwrap().id, sent.id);
    if skip(h, Feature::DelayedRetry, "queue_nack_and_retry_after") {
        d.ack().await.unwrap();
        h.cleanup(&[q], &[]).await;
        return;
    }
    let delay = Duration::from_millis(800);
    let asked = Instant::now();
    d.retry_after(delay).await.unwrap();
    assert_quiet(&mut consumer, delay / 2, "during the retry delay").await;
    let d = next(&mut consumer, WAIT, "after the delay").await;
    assert!(
        asked.elapsed() >= delay.mul_f32(0.9),
        "redelivered after {:?}, before the {delay:?} delay",
        asked.elapsed()
    );
    assert_eq!(d.attempt, 3);
    d.ack().await.unwrap();
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// After `max_deliveries` failed deliveries the message is dead-lettered with its reason
/// and attempt count, and not delivered again.
pub async fn queue_dead_letters_after_max_deliveries(h: &dyn Harness) {
    let broker = h.connect().await;
    let options = QueueOptions {
        max_deliveries: 3,
        ..QueueOptions::default()
    };
    let q = queue(h, &broker, "dlq", options).await;
    let sent = order(3);
    broker.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    for attempt in 1..=3 {
        let d = next(&mut consumer, WAIT, "a failing delivery").await;
        assert_eq!(d.attempt, attempt);
        assert_eq!(d.max_deliveries, 3);
        d.nack().await.unwrap();
    }
    let dead = dead_letters_until(&broker, &q, 1).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.id, sent.id.to_string());
    assert_eq!(letter.kind.as_deref(), Some("OrderCreated"));
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.reason.contains("delivered 3 times"),
        "reason: {}",
        letter.reason
    );
    assert_eq!(letter.body, sent.body());
    let age = SystemTime::now()
        .duration_since(letter.dead_at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "dead_at is now-ish: {age:?} ago"
    );
    assert_quiet(
        &mut consumer,
        Duration::from_millis(200),
        "after dead-lettering",
    )
    .await;
    stats_until(&broker, &q, "dead", |s| s.dead == 1 && s.ready == 0).await;
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// A deferred delivery (a dependency known to be down: the message was not tried) comes
/// back after its delay without counting: deferred more times than `max_deliveries`, the
/// message is still delivered as attempt 1, and only the deliveries that fail count
/// towards the dead-letter queue.
pub async fn queue_defer_does_not_count(h: &dyn Harness) {
    let broker = h.connect().await;
    let options = QueueOptions {
        max_deliveries: 2,
        ..QueueOptions::default()
    };
    let q = queue(h, &broker, "defer", options).await;
    let sent = order(11);
    broker.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let delay = Duration::from_millis(300);
    for deferral in 1..=4 {
        let d = next(&mut consumer, WAIT, "a deferred delivery").await;
        assert_eq!(d.attempt, 1, "deferral {deferral} counted a delivery");
        assert_eq!(d.message.as_ref().unwrap().id, sent.id);
        let asked = Instant::now();
        d.defer(delay).await.unwrap();
        if deferral == 1 {
            assert_quiet(&mut consumer, delay / 2, "during the deferral").await;
            let d = next(&mut consumer, WAIT, "after the deferral").await;
            assert!(
                asked.elapsed() >= delay.mul_f32(0.9),
                "redelivered after {:?}, before the {delay:?} deferral",
                asked.elapsed()
            );
            assert_eq!(d.attempt, 1);
            d.defer(delay).await.unwrap();
        }
    }
    // Tried now, and failing: these count.
    let d = next(&mut consumer, WAIT, "tried at last").await;
    assert_eq!(d.attempt, 1);
    d.nack().await.unwrap();
    let d = next(&mut consumer, WAIT, "tried again").await;
    assert_eq!(d.attempt, 2);
    d.nack().await.unwrap();
    let dead = dead_letters_until(&broker, &q, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2, "{:?}", dead[0].reason);
    assert_quiet(
        &mut consumer,
        Duration::from_millis(200),
        "after dead-lettering",
    )
    .await;
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// A rejected message can be re-driven back onto its queue with a fresh count.
pub async fn queue_redrive(h: &dyn Harness) {
    let broker = h.connect().await;
    let q = queue(h, &broker, "redrive", QueueOptions::default()).await;
    let sent = order(9);
    broker.queues.publish(&q, &sent).await.unwrap();
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer, WAIT, "first").await;
    d.reject("the warehouse is closed").await.unwrap();
    let dead = dead_letters_until(&broker, &q, 1).await;
    assert_eq!(dead[0].reason, "the warehouse is closed");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(broker.queues.redrive(&q, 10).await.unwrap(), 1);
    let d = next(&mut consumer, WAIT, "re-driven").await;
    assert_eq!(d.message.as_ref().unwrap(), &sent);
    assert_eq!(d.attempt, 1, "a re-driven message starts counting again");
    d.ack().await.unwrap();
    assert!(broker.queues.dead_letters(&q, 10).await.unwrap().is_empty());
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// Publishing an id that was already published to the queue is a no-op. A backend that
/// cannot de-duplicate must deliver the copy, and the inbox must absorb it: asserted so,
/// the property fails if the backend's behaviour changes either way.
pub async fn queue_deduplicates_republished_id(h: &dyn Harness) {
    let broker = h.connect().await;
    if let Some(reason) = h.unsupported(Feature::QueueDeduplication) {
        eprintln!(
            "conformance: queue_deduplicates_republished_id: asserting the limitation: {reason}"
        );
        let q = queue(h, &broker, "dedup", QueueOptions::default()).await;
        let (first, second) = (order(1), order(2));
        for e in [&first, &first, &second] {
            broker.queues.publish(&q, e).await.unwrap();
        }
        let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let d = next(&mut consumer, WAIT, "every copy").await;
            ids.push(d.message.as_ref().unwrap().id);
            d.ack().await.unwrap();
        }
        assert_eq!(
            ids,
            [first.id, first.id, second.id],
            "the copy is delivered"
        );
        assert_eq!(
            inbox_effects(&ids).await,
            [true, false, true],
            "the inbox absorbs it"
        );
        drop(consumer);
        h.cleanup(&[q], &[]).await;
        return;
    }
    let q = queue(h, &broker, "dedup", QueueOptions::default()).await;
    let first = order(1);
    let second = order(2);
    broker.queues.publish(&q, &first).await.unwrap();
    broker.queues.publish(&q, &first).await.unwrap();
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer, WAIT, "first").await;
    assert_eq!(d.message.as_ref().unwrap().id, first.id);
    d.ack().await.unwrap();
    // Also after the first copy was consumed.
    broker.queues.publish(&q, &first).await.unwrap();
    broker.queues.publish(&q, &second).await.unwrap();
    let d = next(&mut consumer, WAIT, "second").await;
    assert_eq!(
        d.message.as_ref().unwrap().id,
        second.id,
        "the duplicate was delivered"
    );
    d.ack().await.unwrap();
    stats_until(&broker, &q, "empty", |s| s.ready == 0 && s.in_flight == 0).await;
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// Every client closes and a new one connects: nothing is lost, nothing acked returns.
pub async fn queue_persists_across_reconnect(h: &dyn Harness) {
    let broker = h.connect().await;
    let q = queue(h, &broker, "persist", QueueOptions::default()).await;
    for n in 0..10 {
        broker.queues.publish(&q, &order(n)).await.unwrap();
    }
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let mut acked = HashSet::new();
    for _ in 0..3 {
        let d = next(&mut consumer, WAIT, "before restart").await;
        acked.insert(n_of(d.message.as_ref().unwrap()));
        d.ack().await.unwrap();
    }
    let unsettled = next(&mut consumer, WAIT, "held at restart").await;
    drop(unsettled);
    drop(consumer);
    drop(broker);

    let broker = h.connect().await;
    let mut consumer = broker.queues.consume(&q, 10).await.unwrap();
    let mut rest = HashSet::new();
    while rest.len() < 7 {
        let d = next(&mut consumer, h.redelivery_within(), "after restart").await;
        let n = n_of(d.message.as_ref().unwrap());
        assert!(
            !acked.contains(&n),
            "message {n} was acked before the restart and came back"
        );
        rest.insert(n);
        d.ack().await.unwrap();
    }
    let all: HashSet<u64> = acked.union(&rest).copied().collect();
    assert_eq!(all, (0..10).collect());
    stats_until(&broker, &q, "drained", |s| s.ready == 0 && s.in_flight == 0).await;
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

/// A body that is not JSON arrives as `Err(Malformed)` and goes to the DLQ with its
/// reason; a foreign JSON message without a type gets the queue's default type.
pub async fn queue_malformed_body_is_rejected_to_dlq(h: &dyn Harness) {
    let broker = h.connect().await;
    let options = QueueOptions {
        default_kind: Some("ProcessOrder".into()),
        ..QueueOptions::default()
    };
    let q = queue(h, &broker, "malformed", options).await;
    h.publish_raw(&q, b"not json {", &[]).await;
    h.publish_raw(&q, br#"{"order_id": "ORD-12345", "total": 1999.98}"#, &[])
        .await;
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer, WAIT, "malformed").await;
    let malformed = d.message.as_ref().expect_err("a body that is not JSON");
    assert!(
        malformed.reason.contains("not JSON"),
        "{}",
        malformed.reason
    );
    assert_eq!(malformed.body, b"not json {");
    let reason = malformed.reason.clone();
    d.reject(reason.clone()).await.unwrap();
    let d = next(&mut consumer, WAIT, "foreign").await;
    let got = d.message.as_ref().expect("foreign JSON is an envelope");
    assert_eq!(got.kind, "ProcessOrder");
    assert_eq!(got.payload["order_id"], "ORD-12345");
    d.ack().await.unwrap();
    let dead = dead_letters_until(&broker, &q, 1).await;
    assert_eq!(dead[0].reason, reason);
    assert_eq!(dead[0].body, b"not json {");
    drop(consumer);
    h.cleanup(&[q], &[]).await;
}

fn keyed(key: &str, n: u64) -> Envelope {
    Envelope::new("OrderUpdated", json!({"order_id": key, "n": n})).with_key(key)
}

/// Events of one key arrive in publish order; positions only grow.
pub async fn stream_per_key_order(h: &dyn Harness) {
    let broker = h.connect().await;
    let s = stream(h, &broker, "order", 4).await;
    let keys = ["ORD-1", "ORD-2", "ORD-3", "ORD-4", "ORD-5"];
    for n in 0..20 {
        for key in keys {
            broker.streams.publish(&s, &keyed(key, n)).await.unwrap();
        }
    }
    let group = h.unique("g");
    let mut consumer = broker
        .streams
        .subscribe(&s, &group, StartFrom::Earliest)
        .await
        .unwrap();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut last_position: HashMap<u16, u64> = HashMap::new();
    for _ in 0..(20 * keys.len()) {
        let e = next_event(&mut consumer, WAIT, "per-key order").await;
        let m = e.message.as_ref().unwrap();
        let key = m.key.clone().unwrap();
        assert_eq!(
            e.partition,
            crate::partition_of(&key, 4),
            "key {key} in its partition"
        );
        let n = n_of(m);
        if let Some(prev) = last.insert(key.clone(), n) {
            assert_eq!(n, prev + 1, "key {key}: {n} after {prev}");
        } else {
            assert_eq!(n, 0, "key {key} starts at 0");
        }
        if let Some(prev) = last_position.insert(e.partition, e.position) {
            assert!(e.position > prev, "positions grow within a partition");
        }
        e.commit().await.unwrap();
    }
    let lag = broker.streams.lag(&s, &group).await.unwrap();
    assert_eq!(lag.lag, 0);
    drop(consumer);
    h.cleanup(&[], &[s]).await;
}

async fn collect(
    consumer: &mut Box<dyn StreamConsumer>,
    n: usize,
    what: &str,
) -> Vec<(uuid::Uuid, u64)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let e = next_event(consumer, WAIT, what).await;
        got.push((e.message.as_ref().unwrap().id, e.position));
        e.commit().await.unwrap();
    }
    got
}

/// Which of `ids`, handled in order by one consumer through the inbox
/// ([`crate::inbox::first_time`], on a database of its own), have their effect.
async fn inbox_effects(ids: &[uuid::Uuid]) -> Vec<bool> {
    let db = storage::testing::sqlite(&[&crate::outbox::MIGRATIONS]).await;
    let mut effects = Vec::with_capacity(ids.len());
    for id in ids {
        let mut tx = db.db.begin_write().await.unwrap();
        effects.push(
            crate::inbox::first_time(&mut tx, "conformance", *id)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    effects
}

/// Two groups each see every event.
pub async fn stream_groups_are_independent(h: &dyn Harness) {
    let broker = h.connect().await;
    let s = stream(h, &broker, "groups", 2).await;
    let sent: Vec<Envelope> = (0..10).map(|n| keyed(&format!("ORD-{n}"), n)).collect();
    for e in &sent {
        broker.streams.publish(&s, e).await.unwrap();
    }
    let ids: HashSet<uuid::Uuid> = sent.iter().map(|e| e.id).collect();
    for base in ["billing", "shipping"] {
        let group = h.unique(base);
        let mut consumer = broker
            .streams
            .subscribe(&s, &group, StartFrom::Earliest)
            .await
            .unwrap();
        let got: HashSet<uuid::Uuid> = collect(&mut consumer, 10, base)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(got, ids, "group {base} sees every event");
    }
    h.cleanup(&[], &[s]).await;
}

/// Two members of one group (two clients, as two processes) share the partitions, each
/// event reaches the group, and per-key order holds across both.
pub async fn stream_group_members_share_partitions(h: &dyn Harness) {
    let admin = h.connect().await;
    let s = stream(h, &admin, "share", 4).await;
    let group = h.unique("workers");
    let seen = Arc::new(std::sync::Mutex::new(
        Vec::<(usize, String, u64, usize)>::new(),
    ));
    let clock = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut members = Vec::new();
    for member in 0..2 {
        let broker = h.connect().await;
        let mut consumer = broker
            .streams
            .subscribe(&s, &group, StartFrom::Earliest)
            .await
            .unwrap();
        let (seen, clock, stop) = (seen.clone(), clock.clone(), stop.clone());
        members.push(tokio::spawn(async move {
            let _broker = broker;
            loop {
                let e = tokio::select! {
                    e = consumer.next() => e.unwrap(),
                    () = stop.notified() => return,
                };
                let m = e.message.as_ref().unwrap();
                let at = clock.fetch_add(1, Ordering::SeqCst);
                seen.lock()
                    .unwrap()
                    .push((at, m.key.clone().unwrap(), n_of(m), member));
                e.commit().await.unwrap();
            }
        }));
    }
    let keys: Vec<String> = (0..8).map(|k| format!("ORD-{k}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0_u64;
    // Publish rounds until both members have had a share (and at least 10 rounds).
    loop {
        for key in &keys {
            admin.streams.publish(&s, &keyed(key, round)).await.unwrap();
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let both = {
            let seen = seen.lock().unwrap();
            seen.iter().any(|r| r.3 == 0) && seen.iter().any(|r| r.3 == 1)
        };
        if both && round >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second member never got a partition"
        );
    }
    let total = keys.len() * usize::try_from(round).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let distinct: HashSet<(String, u64)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.1.clone(), r.2))
            .collect();
        if distinct.len() == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} events reached the group",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.notify_waiters();
    for m in members {
        m.abort();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|r| r.0);
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (_, key, n, member) in &seen {
        if let Some(prev) = last.insert(key, *n) {
            assert!(*n >= prev, "key {key}: {n} after {prev} (member {member})");
        }
    }
    h.cleanup(&[], &[s]).await;
}

/// `reset` replays from the earliest event, a position or a time.
pub async fn stream_replay(h: &dyn Harness) {
    let broker = h.connect().await;
    let s = stream(h, &broker, "replay", 2).await;
    let first: Vec<Envelope> = (0..6).map(|n| keyed(&format!("ORD-{n}"), n)).collect();
    for e in &first {
        broker.streams.publish(&s, e).await.unwrap();
    }
    let group = h.unique("replayer");
    let mut consumer = broker
        .streams
        .subscribe(&s, &group, StartFrom::Earliest)
        .await
        .unwrap();
    let got = collect(&mut consumer, 6, "first read").await;
    let first_ids: HashSet<uuid::Uuid> = first.iter().map(|e| e.id).collect();
    assert_eq!(got.iter().map(|g| g.0).collect::<HashSet<_>>(), first_ids);
    assert_eq!(broker.streams.lag(&s, &group).await.unwrap().lag, 0);

    broker
        .streams
        .reset(&s, &group, StartFrom::Earliest)
        .await
        .unwrap();
    assert_eq!(broker.streams.lag(&s, &group).await.unwrap().lag, 6);
    let again = collect(&mut consumer, 6, "replay from earliest").await;
    assert_eq!(again.iter().map(|g| g.0).collect::<HashSet<_>>(), first_ids);

    let positions: BTreeMap<u64, uuid::Uuid> = got.iter().map(|(id, p)| (*p, *id)).collect();
    let (from, _) = positions.iter().nth(3).unwrap();
    let expected: HashSet<uuid::Uuid> = positions.range(from..).map(|(_, id)| *id).collect();
    broker
        .streams
        .reset(&s, &group, StartFrom::Position(*from))
        .await
        .unwrap();
    let tail = collect(&mut consumer, expected.len(), "replay from a position").await;
    assert_eq!(tail.iter().map(|g| g.0).collect::<HashSet<_>>(), expected);

    if skip(h, Feature::ReplayByTime, "stream_replay") {
        drop(consumer);
        h.cleanup(&[], &[s]).await;
        return;
    }
    // The clock must move past the first batch before the cut, and past the cut before
    // the second batch: fixed waits of the backend's time resolution.
    tokio::time::sleep(h.clock_granularity()).await;
    let cut = SystemTime::now();
    tokio::time::sleep(h.clock_granularity()).await;
    let second: Vec<Envelope> = (6..9).map(|n| keyed(&format!("ORD-{n}"), n)).collect();
    for e in &second {
        broker.streams.publish(&s, e).await.unwrap();
    }
    // Read the second batch once (committing), then replay it by time.
    let _ = collect(&mut consumer, 3, "second batch").await;
    broker
        .streams
        .reset(&s, &group, StartFrom::Time(cut))
        .await
        .unwrap();
    let by_time = collect(&mut consumer, 3, "replay from a time").await;
    assert_eq!(
        by_time.iter().map(|g| g.0).collect::<HashSet<_>>(),
        second.iter().map(|e| e.id).collect::<HashSet<_>>()
    );
    drop(consumer);
    h.cleanup(&[], &[s]).await;
}

/// Re-publishing an id to a stream appends nothing.
pub async fn stream_deduplicates_republished_id(h: &dyn Harness) {
    let broker = h.connect().await;
    let s = stream(h, &broker, "dedup", 2).await;
    let first = keyed("ORD-1", 1);
    let second = keyed("ORD-1", 2);
    broker.streams.publish(&s, &first).await.unwrap();
    broker.streams.publish(&s, &first).await.unwrap();
    broker.streams.publish(&s, &second).await.unwrap();
    let group = h.unique("g");
    let mut consumer = broker
        .streams
        .subscribe(&s, &group, StartFrom::Earliest)
        .await
        .unwrap();
    if let Some(reason) = h.unsupported(Feature::StreamDeduplication) {
        // The limitation, asserted: the copy is appended and delivered, and the inbox
        // absorbs it.
        eprintln!(
            "conformance: stream_deduplicates_republished_id: asserting the limitation: {reason}"
        );
        let ids: Vec<uuid::Uuid> = collect(&mut consumer, 3, "every copy")
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [first.id, first.id, second.id], "the copy is appended");
        assert_eq!(
            inbox_effects(&ids).await,
            [true, false, true],
            "the inbox absorbs it"
        );
        drop(consumer);
        h.cleanup(&[], &[s]).await;
        return;
    }
    let got = collect(&mut consumer, 2, "dedup").await;
    assert_eq!(got[0].0, first.id);
    assert_eq!(got[1].0, second.id, "the duplicate was appended");
    assert_eq!(broker.streams.lag(&s, &group).await.unwrap().lag, 0);
    drop(consumer);
    h.cleanup(&[], &[s]).await;
}

/// A group resumes after every client went away: committed events do not come back,
/// the uncommitted one does.
pub async fn stream_persists_across_reconnect(h: &dyn Harness) {
    let broker = h.connect().await;
    let (s, group, mut consumer) = one_key_stream(h, &broker, "resume", 0..10).await;
    for n in 0..4 {
        let e = next_event(&mut consumer, WAIT, "before restart").await;
        assert_eq!(n_of(e.message.as_ref().unwrap()), n);
        e.commit().await.unwrap();
    }
    let held = next_event(&mut consumer, WAIT, "held at restart").await;
    assert_eq!(n_of(held.message.as_ref().unwrap()), 4);
    drop(held);
    drop(consumer);
    drop(broker);

    let broker = h.connect().await;
    assert_eq!(broker.streams.lag(&s, &group).await.unwrap().lag, 6);
    let mut consumer = broker
        .streams
        .subscribe(&s, &group, StartFrom::Latest)
        .await
        .unwrap();
    for n in 4..10 {
        let e = next_event(&mut consumer, h.redelivery_within(), "after restart").await;
        assert_eq!(
            n_of(e.message.as_ref().unwrap()),
            n,
            "resumes at the committed position"
        );
        if n == 4 && h.unsupported(Feature::StreamAttempts).is_none() {
            assert!(
                e.attempt >= 2,
                "the uncommitted event counts as redelivered"
            );
        }
        e.commit().await.unwrap();
    }
    assert_eq!(broker.streams.lag(&s, &group).await.unwrap().lag, 0);
    drop(consumer);
    h.cleanup(&[], &[s]).await;
}

/// `retry_after` on an event redelivers it after the delay, and its partition waits:
/// the next event of the key comes after it.
pub async fn stream_retry_after_holds_the_partition(h: &dyn Harness) {
    let broker = h.connect().await;
    let (s, _group, mut consumer) = one_key_stream(h, &broker, "retry", 0..3).await;
    let e = next_event(&mut consumer, WAIT, "first").await;
    assert_eq!(n_of(e.message.as_ref().unwrap()), 0);
    let delay = Duration::from_millis(500);
    let asked = Instant::now();
    e.retry_after(delay).await.unwrap();
    let e = next_event(&mut consumer, WAIT, "retried").await;
    assert_eq!(
        n_of(e.message.as_ref().unwrap()),
        0,
        "the partition waited for the retry"
    );
    assert!(
        asked.elapsed() >= delay.mul_f32(0.9),
        "retried after {:?}",
        asked.elapsed()
    );
    // A retry inside one member: every backend counts it.
    assert_eq!(e.attempt, 2);
    e.commit().await.unwrap();
    for n in 1..3 {
        let e = next_event(&mut consumer, WAIT, "rest").await;
        assert_eq!(n_of(e.message.as_ref().unwrap()), n);
        e.commit().await.unwrap();
    }
    drop(consumer);
    h.cleanup(&[], &[s]).await;
}

/// Slow members: two members of a group, each handling one event at a time for 90% of
/// the handler timeout, over a stream whose partitions hand a member events faster than
/// it handles them (an event waits while its member works on another partition's). Every
/// event is handled exactly once and every commit succeeds: an event that waits for a
/// live member, then meets a slow handler, is not given to the other member meanwhile.
pub async fn stream_slow_members_keep_their_events(h: &dyn Harness) {
    const EVENTS: u64 = 6;
    let admin = h.connect().await;
    let s = stream(h, &admin, "slow", 2).await;
    let group = h.unique("slow");
    let work = h.handler_timeout().mul_f64(0.9);
    let handled = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, u32>::new()));
    let mut members = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let broker = h.connect().await;
        let mut consumer = broker
            .streams
            .subscribe(&s, &group, StartFrom::Earliest)
            .await
            .unwrap();
        let handled = Arc::clone(&handled);
        members.spawn(async move {
            let _broker = broker;
            loop {
                let event =
                    match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                        Ok(event) => event.unwrap(),
                        Err(_) if handled.lock().unwrap().len() as u64 == EVENTS => return,
                        Err(_) => continue,
                    };
                let n = n_of(event.message.as_ref().unwrap());
                tokio::time::sleep(work).await;
                *handled.lock().unwrap().entry(n).or_default() += 1;
                event
                    .commit()
                    .await
                    .unwrap_or_else(|e| panic!("the commit of event {n} failed: {e}"));
            }
        });
    }
    for n in 0..EVENTS {
        admin
            .streams
            .publish(&s, &keyed(&format!("ORD-{n}"), n))
            .await
            .unwrap();
    }
    each_handled_once(members, &handled, EVENTS, work).await;
    h.cleanup(&[], &[s]).await;
}

/// The same traffic through a service's broker ([`Broker::for_service`]) shows the same
/// series with the same values on every backend, read back from the process's Prometheus
/// page: a work queue (three messages: one acked, one retried then out of attempts, one
/// deferred then rejected; both dead letters re-driven and acked), a stream (two events, one retried)
/// and the owner's gauges. The expected table is one constant for every backend, so two
/// backends that pass agree with each other.
pub async fn series_are_the_same_on_every_backend(h: &dyn Harness) {
    // The recorder must exist before the decorator resolves its counters.
    assert!(
        telemetry::metrics::handle().is_some(),
        "the recorder installs"
    );
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let service = leak(h.unique("series"));
    let broker = h.connect().await.for_service(service);
    let options = QueueOptions {
        max_deliveries: 2,
        default_kind: None,
    };
    let q = queue(h, &broker, "series", options).await;
    for n in 1..=3 {
        broker.queues.publish(&q, &order(n)).await.unwrap();
    }
    let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
    let (mut settled, mut deferred) = (0, false);
    while settled < 3 {
        let d = next(&mut consumer, WAIT, "series: a job").await;
        match (n_of(d.message.as_ref().unwrap()), d.attempt) {
            (3, _) if !deferred => {
                deferred = true;
                d.defer(Duration::from_millis(50)).await.unwrap();
                continue;
            }
            (1, _) => d.ack().await.unwrap(),
            (2, 1) => {
                d.retry_after(Duration::from_millis(50)).await.unwrap();
                continue;
            }
            // Its last attempt: a retry dead-letters it.
            (2, _) => d.nack().await.unwrap(),
            _ => d.reject("job 3 is invalid").await.unwrap(),
        }
        settled += 1;
    }
    dead_letters_until(&broker, &q, 2).await;
    assert_eq!(broker.queues.redrive(&q, 10).await.unwrap(), 2);
    for _ in 0..2 {
        next(&mut consumer, WAIT, "series: re-driven")
            .await
            .ack()
            .await
            .unwrap();
    }
    stats_until(&broker, &q, "series: empty", |s| {
        s.ready == 0 && s.in_flight == 0 && s.dead == 0
    })
    .await;
    drop(consumer);

    let (s, group, mut member) = one_key_stream(h, &broker, "series", 1..3).await;
    let e = next_event(&mut member, WAIT, "series: first event").await;
    e.retry_after(Duration::from_millis(50)).await.unwrap();
    for _ in 0..2 {
        next_event(&mut member, WAIT, "series: events")
            .await
            .commit()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while broker.streams.lag(&s, &group).await.unwrap().lag > 0 {
        assert!(
            Instant::now() < deadline,
            "series: the group's lag stayed above 0"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    member.close().await.unwrap();

    let watch = crate::observe::Watch {
        service,
        queues: vec![leak(q.clone())],
        groups: vec![(leak(s.clone()), leak(group.clone()))],
    };
    crate::observe::sample(&broker, &watch).await;
    let shown = series_of(&telemetry::metrics::render(), service);
    let expected: std::collections::BTreeMap<String, f64> = [
        ("brigade_messaging_published_total{queue}", 3.0),
        ("brigade_messaging_duplicates_total{queue}", 0.0),
        ("brigade_messaging_publish_failures_total{queue}", 0.0),
        ("brigade_messaging_delivered_total{queue}", 7.0),
        ("brigade_messaging_redelivered_total{queue}", 1.0),
        ("brigade_messaging_settled_total{outcome=ack,queue}", 3.0),
        (
            "brigade_messaging_settled_total{outcome=requeue,queue}",
            0.0,
        ),
        ("brigade_messaging_settled_total{outcome=retry,queue}", 1.0),
        ("brigade_messaging_settled_total{outcome=defer,queue}", 1.0),
        ("brigade_messaging_settled_total{outcome=reject,queue}", 2.0),
        ("brigade_messaging_dead_lettered_total{queue}", 2.0),
        ("brigade_messaging_settle_failures_total{queue}", 0.0),
        ("brigade_messaging_redriven_total{queue}", 2.0),
        ("brigade_messaging_queue_depth{queue,state=ready}", 0.0),
        ("brigade_messaging_queue_depth{queue,state=in_flight}", 0.0),
        ("brigade_messaging_queue_depth{queue,state=dead}", 0.0),
        ("brigade_messaging_published_total{stream}", 2.0),
        ("brigade_messaging_duplicates_total{stream}", 0.0),
        ("brigade_messaging_publish_failures_total{stream}", 0.0),
        ("brigade_messaging_delivered_total{group,stream}", 3.0),
        ("brigade_messaging_redelivered_total{group,stream}", 1.0),
        (
            "brigade_messaging_settled_total{group,outcome=commit,stream}",
            2.0,
        ),
        (
            "brigade_messaging_settled_total{group,outcome=retry,stream}",
            1.0,
        ),
        ("brigade_messaging_settle_failures_total{group,stream}", 0.0),
        ("brigade_messaging_consumer_lag{group,stream}", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(shown, expected, "the series of {service}");
    h.cleanup(&[q], &[s]).await;
}

/// `service`'s series on a Prometheus page, each as its name and label names (with the
/// values of `outcome` and `state`, whose values are part of the contract; the channel's
/// names and the backend are not), and its value.
fn series_of(page: &str, service: &str) -> std::collections::BTreeMap<String, f64> {
    let own = format!("service=\"{service}\"");
    let mut series = std::collections::BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&own))
    {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = head.split_once('{') else {
            continue;
        };
        let mut keys: Vec<String> = labels
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, _)| !matches!(*k, "service" | "backend"))
            .map(|(k, v)| match k {
                "outcome" | "state" => format!("{k}={}", v.trim_matches('"')),
                _ => k.to_owned(),
            })
            .collect();
        keys.sort();
        let value: f64 = value.parse().unwrap_or(f64::NAN);
        series.insert(format!("{name}{{{}}}", keys.join(",")), value);
    }
    series
}

#[cfg(test)]
mod tests {
    /// `all_conformance_tests!` names exactly the properties in `ALL`.
    #[test]
    fn the_full_suite_macro_lists_every_property() {
        let source = include_str!("conformance.rs");
        let start = source
            .find("macro_rules! all_conformance_tests")
            .unwrap_or(0);
        let end = source[start..]
            .find("macro_rules! conformance_tests")
            .map_or(source.len(), |e| start + e);
        let listed: Vec<&str> = source[start..end]
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_suffix(','))
            .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert_eq!(listed, super::ALL);
    }
}
