//! The conformance suite against the embedded backend (a fresh SQLite file per test), and
//! what only the embedded backend can show here: a consumer process killed with SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use messaging::conformance::Harness;
use messaging::embedded::Embedded;
use messaging::{Broker, Envelope, QueueOptions, StartFrom, StreamOptions};

fn settings() -> settings::MessagingSettings {
    settings::MessagingSettings {
        // Short leases, so a consumer that died is replaced quickly in tests.
        handler_timeout: Duration::from_secs(1),
        ..settings::MessagingSettings::default()
    }
}

struct EmbeddedHarness {
    dir: tempfile::TempDir,
}

impl EmbeddedHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("messaging.db")
    }
}

#[async_trait]
impl Harness for EmbeddedHarness {
    async fn connect(&self) -> Broker {
        messaging::embedded::open(&self.path(), &settings())
            .await
            .unwrap()
    }

    fn unique(&self, base: &str) -> String {
        format!("{base}-{}", uuid::Uuid::new_v4().simple())
    }

    async fn publish_raw(&self, queue: &str, body: &[u8], metadata: &[(&str, String)]) {
        Embedded::open(&self.path(), &settings())
            .await
            .unwrap()
            .publish_raw(queue, body, metadata)
            .await
            .unwrap();
    }

    fn redelivery_within(&self) -> Duration {
        Duration::from_secs(5)
    }
    // The temp dir goes with the harness: no cleanup needed.
}

messaging::all_conformance_tests!(EmbeddedHarness::new());

/// A consumer that died holding messages past `max_deliveries` (here: a consumer that
/// never settles and goes away each time) dead-letters them instead of delivering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumers_keep_dying_is_dead_lettered() {
    let h = EmbeddedHarness::new();
    let broker = h.connect().await;
    let q = h.unique("dying");
    broker
        .queues
        .declare(
            &q,
            &QueueOptions {
                max_deliveries: 2,
                ..QueueOptions::default()
            },
        )
        .await
        .unwrap();
    broker
        .queues
        .publish(&q, &Envelope::new("K", serde_json::json!({})))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.attempt, attempt);
        // A crash: the settle never happens and is never released (forget keeps Drop from running).
        std::mem::forget(d);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut consumer = broker.queues.consume(&q, 1).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await;
        assert!(got.is_err(), "delivered a third time: {got:?}");
        let dead = broker.queues.dead_letters(&q, 10).await.unwrap();
        if dead.len() == 1 {
            assert_eq!(dead[0].attempts, 2);
            assert!(
                dead[0].reason.contains("delivered 2 times"),
                "{}",
                dead[0].reason
            );
            break;
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
    }
}

/// Retention: events older than the stream's retention are gone (purged on publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_retention_are_purged() {
    let h = EmbeddedHarness::new();
    let broker = h.connect().await;
    let s = h.unique("retained");
    let options = StreamOptions {
        retention: Duration::from_millis(100),
        partitions: 1,
    };
    broker.streams.declare(&s, &options).await.unwrap();
    let old = Envelope::new("K", serde_json::json!({"n": 0}));
    broker.streams.publish(&s, &old).await.unwrap();
    // Retention is by age: let the first event age past it. The purge runs at most once a
    // second per stream, so publish until it has run.
    let fresh_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let e = Envelope::new("K", serde_json::json!({"n": 1}));
        broker.streams.publish(&s, &e).await.unwrap();
        let group = h.unique("g");
        let mut c = broker
            .streams
            .subscribe(&s, &group, StartFrom::Earliest)
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .unwrap()
            .unwrap();
        if first.message.as_ref().unwrap().id != old.id {
            break;
        }
        assert!(
            Instant::now() < fresh_deadline,
            "the old event was never purged"
        );
    }
}

/// Several processes' worth of clients on one file: a consumer in another `Broker`
/// sees what this one publishes (by polling) and nothing is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_file_share_a_queue_without_duplicates() {
    let h = EmbeddedHarness::new();
    let publisher = h.connect().await;
    let q = h.unique("shared");
    publisher
        .queues
        .declare(&q, &QueueOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..2 {
        let broker = h.connect().await;
        let mut consumer = broker.queues.consume(&q, 8).await.unwrap();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let _broker = broker;
            loop {
                let d = consumer.next().await.unwrap();
                let id = d.message.as_ref().unwrap().id;
                d.ack().await.unwrap();
                if tx.send(id).is_err() {
                    return;
                }
            }
        }));
    }
    let mut sent = HashSet::new();
    for n in 0..500 {
        let e = Envelope::new("K", serde_json::json!({"n": n}));
        sent.insert(e.id);
        publisher.queues.publish(&q, &e).await.unwrap();
    }
    let mut got = HashSet::new();
    while got.len() < sent.len() {
        let id = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(got.insert(id), "{id} delivered twice");
    }
    assert_eq!(got, sent);
    for t in tasks {
        t.abort();
    }
}

const CHILD_ENV: &str = "MESSAGING_KILL9_CHILD_DB";
const CHILD_QUEUE: &str = "kill9";
const CHILD_STREAM: &str = "kill9-stream";

/// The child process of `a_consumer_killed_with_sigkill_...` when that test starts it
/// (with `CHILD_ENV` naming the store): consume and report until killed. Run by
/// `cargo test` on its own, it checks the child's protocol on a store of its own: three
/// messages and events, each reported got, acked and committed, and nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child_process() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let mut out = std::io::stdout().lock();
        serve_child(Path::new(&path), &mut out, None).await;
        return;
    }
    let h = EmbeddedHarness::new();
    let broker = declare_child_channels(&h).await;
    for n in 0..3 {
        let e = Envelope::new("Work", serde_json::json!({"n": n}));
        broker.queues.publish(CHILD_QUEUE, &e).await.unwrap();
        broker.streams.publish(CHILD_STREAM, &e).await.unwrap();
    }
    let mut report = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        serve_child(&h.path(), &mut report, Some(3)),
    )
    .await
    .expect("the child served three messages within 10 s");
    let report = String::from_utf8(report).unwrap();
    let kinds: Vec<&str> = report
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        kinds,
        ["GOT", "ACKED", "COMMITTED"].repeat(3),
        "the child's report: {report}"
    );
    let stats = broker.queues.stats(CHILD_QUEUE).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "{stats:?}");
    assert_eq!(broker.streams.lag(CHILD_STREAM, "g").await.unwrap().lag, 0);
}

/// The kill test's channels on `h`'s store.
async fn declare_child_channels(h: &EmbeddedHarness) -> Broker {
    let broker = h.connect().await;
    broker
        .queues
        .declare(CHILD_QUEUE, &QueueOptions::default())
        .await
        .unwrap();
    let options = StreamOptions {
        partitions: 1,
        ..StreamOptions::default()
    };
    broker
        .streams
        .declare(CHILD_STREAM, &options)
        .await
        .unwrap();
    broker
}

/// Takes a message, acks it, takes an event, commits it, reporting each step on `out`
/// as a line — `limit` times, or until the process is killed.
async fn serve_child(path: &Path, out: &mut impl Write, limit: Option<usize>) {
    let broker = messaging::embedded::open(path, &settings()).await.unwrap();
    let mut queue = broker.queues.consume(CHILD_QUEUE, 16).await.unwrap();
    let mut events = broker
        .streams
        .subscribe(CHILD_STREAM, "g", StartFrom::Earliest)
        .await
        .unwrap();
    let mut served = 0;
    while limit.is_none_or(|l| served < l) {
        let d = queue.next().await.unwrap();
        let id = d.message.as_ref().unwrap().id;
        writeln!(out, "GOT {id}").unwrap();
        out.flush().unwrap();
        d.ack().await.unwrap();
        writeln!(out, "ACKED {id}").unwrap();
        let e = events.next().await.unwrap();
        let (eid, position) = (e.message.as_ref().unwrap().id, e.position);
        e.commit().await.unwrap();
        writeln!(out, "COMMITTED {eid} {position}").unwrap();
        out.flush().unwrap();
        served += 1;
    }
}

/// The whole consumer process is killed with SIGKILL mid-consumption; a new process
/// (this one, on a fresh client) finds every message not acked, and none that was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_with_sigkill_loses_nothing_and_repeats_no_ack() {
    let h = EmbeddedHarness::new();
    let path = h.path();
    let broker = declare_child_channels(&h).await;
    let mut sent = Vec::new();
    for n in 0..2000 {
        let e = Envelope::new("Work", serde_json::json!({"n": n}));
        broker.queues.publish(CHILD_QUEUE, &e).await.unwrap();
        broker.streams.publish(CHILD_STREAM, &e).await.unwrap();
        sent.push(e.id);
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill9_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read the child's report to the end (so it never writes to a closed pipe); say when
    // it has acked enough to be killed mid-consumption.
    let (enough_tx, enough_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut got = HashSet::new();
        let mut acked = HashSet::new();
        let mut committed = 0_u64;
        let mut enough = Some(enough_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("GOT"), Some(id)) => {
                    got.insert(uuid::Uuid::parse_str(id).unwrap());
                }
                (Some("ACKED"), Some(id)) => {
                    acked.insert(uuid::Uuid::parse_str(id).unwrap());
                }
                (Some("COMMITTED"), Some(_)) => {
                    committed = words.next().unwrap().parse().unwrap();
                    if acked.len() >= 300
                        && let Some(tx) = enough.take()
                    {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
        (got, acked, committed)
    });
    tokio::task::spawn_blocking(move || enough_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the child acked 300 messages");
    child.kill().unwrap(); // SIGKILL, mid-consumption
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died of SIGKILL, not otherwise: {status:?}"
    );
    let (got, acked, committed) = reader.join().unwrap();
    assert!(
        acked.len() >= 300,
        "the child acked {} before the kill",
        acked.len()
    );

    // A new client, as a new process: the rest of the queue, nothing acked again.
    let broker = h.connect().await;
    let mut consumer = broker.queues.consume(CHILD_QUEUE, 64).await.unwrap();
    let mut after = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = broker.queues.stats(CHILD_QUEUE).await.unwrap();
        if stats.ready == 0 && stats.in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "queue never drained: {stats:?}");
        let Ok(d) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await else {
            continue;
        };
        let d = d.unwrap();
        let id = d.message.as_ref().unwrap().id;
        assert!(
            !acked.contains(&id),
            "{id} was acked by the killed process and came back"
        );
        if got.contains(&id) {
            assert!(
                d.attempt >= 2,
                "{id} was in the killed process's hands: attempt {}",
                d.attempt
            );
        }
        assert!(after.insert(id), "{id} delivered twice after the kill");
        d.ack().await.unwrap();
    }
    let all: HashSet<uuid::Uuid> = sent.iter().copied().collect();
    let missing: HashSet<uuid::Uuid> = all
        .difference(&acked)
        .copied()
        .collect::<HashSet<_>>()
        .difference(&after)
        .copied()
        .collect();
    // Only a message the child got and acked but was killed before reporting may be
    // neither reported nor redelivered.
    let unexplained: Vec<_> = missing
        .iter()
        .filter(|id| !got.contains(id) || acked.contains(id))
        .collect();
    eprintln!(
        "kill -9: child got {} and acked {} before SIGKILL; {} consumed after; {} acked unreported",
        got.len(),
        acked.len(),
        after.len(),
        missing.len()
    );
    assert!(unexplained.is_empty(), "lost messages: {unexplained:?}");
    assert!(
        missing.len() <= 1,
        "at most the one in flight at the kill: {}",
        missing.len()
    );
    assert_eq!(broker.queues.stats(CHILD_QUEUE).await.unwrap().dead, 0);

    // The stream group resumes after the killed member's last commit.
    let mut events = broker
        .streams
        .subscribe(CHILD_STREAM, "g", StartFrom::Earliest)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.position > committed,
        "resumed at {} but {committed} was committed",
        first.position
    );
    assert!(
        first.position <= committed + 2,
        "skipped past {committed} to {}",
        first.position
    );
}

/// A member that closes leaves its group at once: the next member (another process, in
/// `brigade events tail`) takes its partitions without waiting out the lease.
#[tokio::test]
async fn a_closed_member_hands_its_partitions_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test may wait.
    let settings = settings::MessagingSettings {
        handler_timeout: Duration::from_secs(300),
        partitions: 1,
        ..settings::MessagingSettings::default()
    };
    let path = dir.path().join("messaging.db");
    let first = messaging::embedded::open(&path, &settings).await.unwrap();
    first
        .streams
        .declare(
            "handover",
            &messaging::StreamOptions {
                partitions: 1,
                ..messaging::StreamOptions::default()
            },
        )
        .await
        .unwrap();
    for n in 0..2 {
        let e = Envelope::new("E", serde_json::json!({ "n": n })).with_key("k");
        first.streams.publish("handover", &e).await.unwrap();
    }
    let mut member = first
        .streams
        .subscribe("handover", "g", messaging::StartFrom::Earliest)
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), member.next())
        .await
        .unwrap()
        .unwrap();
    event.commit().await.unwrap();
    member.close().await.unwrap();

    // A new process on the same file, same group: it resumes after the commit, at once.
    let second = messaging::embedded::open(&path, &settings).await.unwrap();
    let mut next = second
        .streams
        .subscribe("handover", "g", messaging::StartFrom::Earliest)
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), next.next())
        .await
        .expect("the partition was handed over without waiting for the 300 s lease")
        .unwrap();
    assert_eq!(event.message.as_ref().unwrap().payload["n"], 1);
}

/// `publish_all` stores a batch in one commit, in order, and drops copies of events the
/// stream already has (the outbox relay re-publishes after a crash with the same ids).
#[tokio::test]
async fn a_batch_is_stored_in_order_without_duplicates() {
    let h = EmbeddedHarness::new();
    let broker = h.connect().await;
    let s = h.unique("batch");
    let options = StreamOptions {
        partitions: 1,
        ..StreamOptions::default()
    };
    broker.streams.declare(&s, &options).await.unwrap();
    let e: Vec<Envelope> = (0..5)
        .map(|n| Envelope::new("K", serde_json::json!({ "n": n })))
        .collect();
    broker.streams.publish(&s, &e[0]).await.unwrap();
    let batch = [
        e[1].clone(),
        e[0].clone(),
        e[2].clone(),
        e[2].clone(),
        e[3].clone(),
    ];
    broker.streams.publish_all(&s, &batch).await.unwrap();
    broker.streams.publish(&s, &e[4]).await.unwrap();

    let mut c = broker
        .streams
        .subscribe(&s, &h.unique("g"), StartFrom::Earliest)
        .await
        .unwrap();
    for expected in &e {
        let next = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .expect("the next event within 5 s")
            .unwrap();
        assert_eq!(next.message.as_ref().unwrap().id, expected.id);
        next.commit().await.unwrap();
    }
}

/// A retry re-reads its partition: events the member handed out before come back as
/// redeliveries (attempt above 1: the store counts re-reads of the partition's head, so
/// an event behind the retried one may say more than it lived), events it only read
/// ahead come on their first delivery (attempt 1).
#[tokio::test]
async fn a_retry_counts_only_what_was_handed_out_as_redelivered() {
    let harness = EmbeddedHarness::new();
    let broker = harness.connect().await;
    let options = StreamOptions {
        partitions: 1,
        ..StreamOptions::default()
    };
    broker.streams.declare("attempts", &options).await.unwrap();
    for n in 0..5_u64 {
        let event = Envelope::new("Happened", serde_json::json!({ "n": n })).with_key("k");
        broker.streams.publish("attempts", &event).await.unwrap();
    }
    let mut member = broker
        .streams
        .subscribe("attempts", "g", StartFrom::Earliest)
        .await
        .unwrap();
    let mut next = async || {
        let event = tokio::time::timeout(Duration::from_secs(10), member.next())
            .await
            .expect("an event within 10 s")
            .unwrap();
        let n = event.message.as_ref().unwrap().payload["n"]
            .as_u64()
            .unwrap();
        (n, event.attempt, event)
    };
    // Three handed out (0, 1, 2), all five read ahead; 0 is retried.
    let (n0, a0, first) = next().await;
    let (n1, a1, _second) = next().await;
    let (n2, a2, _third) = next().await;
    assert_eq!([(n0, a0), (n1, a1), (n2, a2)], [(0, 1), (1, 1), (2, 1)]);
    first.retry_after(Duration::from_millis(10)).await.unwrap();
    // Round two: 0, 1, 2 again as redeliveries; 0 retried once more.
    let (n, a, again) = next().await;
    assert_eq!((n, a), (0, 2));
    again.retry_after(Duration::from_millis(10)).await.unwrap();
    // Round three: 1 and 2 still redeliveries; 3 and 4 on their first delivery.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (n, a, event) = next().await;
        seen.push((n, a));
        event.commit().await.unwrap();
    }
    let attempts: Vec<u32> = seen.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(attempts[0], 3, "{seen:?}");
    assert!(attempts[1] >= 2 && attempts[2] >= 2, "{seen:?}");
    assert_eq!(
        &attempts[3..],
        [1, 1],
        "read ahead, never handed out: {seen:?}"
    );
}

/// A dependency down for longer than a message's retry budget: the worker defers the
/// message each time the dependency says it is down without being tried (an open breaker:
/// `TransientFor`), and those deliveries do not count, so it is handled once the
/// dependency is back instead of being dead-lettered. A message whose own handling fails
/// (`Transient`) still goes to the dead-letter queue after `max_deliveries`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_budget_defers_instead_of_dead_lettering() {
    use messaging::worker::{self, HandleError, WorkerOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const DOWN_FOR: u32 = 6;
    let h = EmbeddedHarness::new();
    let broker = h.connect().await;
    let q = h.unique("outage");
    broker
        .queues
        .declare(
            &q,
            &QueueOptions {
                max_deliveries: 2,
                ..QueueOptions::default()
            },
        )
        .await
        .unwrap();
    let waits = Envelope::new("Waits", serde_json::json!({}));
    let fails = Envelope::new("Fails", serde_json::json!({}));
    broker.queues.publish(&q, &waits).await.unwrap();
    broker.queues.publish(&q, &fails).await.unwrap();
    let (refused, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (done, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let handler = {
        let (refused, failed) = (refused.clone(), failed.clone());
        move |envelope: Envelope| {
            let (refused, failed, done) = (refused.clone(), failed.clone(), done.clone());
            async move {
                if envelope.kind == "Fails" {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return Err(HandleError::Transient("its own failure".into()));
                }
                if refused.fetch_add(1, Ordering::SeqCst) < DOWN_FOR {
                    return Err(HandleError::TransientFor(
                        "catalog: the breaker is open".into(),
                        Duration::from_millis(20),
                    ));
                }
                let _ = done.send(envelope.id);
                Ok(())
            }
        }
    };
    let options = WorkerOptions {
        handler_timeout: Duration::from_secs(1),
        retry_base: Duration::from_millis(10),
        retry_cap: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let consumer = broker.queues.consume(&q, 1).await.unwrap();
    let running = {
        let (q, stop) = (q.clone(), stop.clone());
        tokio::spawn(async move { worker::run(&q, consumer, options, handler, stop).await })
    };
    let id = tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .expect("handled once the dependency was back")
        .unwrap();
    assert_eq!(id, waits.id);
    assert_eq!(refused.load(Ordering::SeqCst), DOWN_FOR + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = broker.queues.dead_letters(&q, 10).await.unwrap();
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        dead.len(),
        1,
        "only the message that failed on its own: {dead:?}"
    );
    assert_eq!(dead[0].id, fails.id.to_string());
    assert_eq!(failed.load(Ordering::SeqCst), 2);
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Deferral is free only while the message is younger than `max_defer`: past it, a
/// dependency that is still down counts against the message like any failure, so work
/// whose dependency never comes back still reaches the dead-letter queue, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_defer_a_deferral_counts() {
    use messaging::worker::{self, HandleError, WorkerOptions};

    let h = EmbeddedHarness::new();
    let broker = h.connect().await;
    let q = h.unique("never-back");
    broker
        .queues
        .declare(
            &q,
            &QueueOptions {
                max_deliveries: 2,
                ..QueueOptions::default()
            },
        )
        .await
        .unwrap();
    let waits = Envelope::new("Waits", serde_json::json!({}));
    broker.queues.publish(&q, &waits).await.unwrap();
    let handler = |_: Envelope| async {
        Err::<(), _>(HandleError::TransientFor(
            "catalog: the breaker is open".into(),
            Duration::from_millis(10),
        ))
    };
    let options = WorkerOptions {
        retry_base: Duration::from_millis(10),
        retry_cap: Duration::from_millis(20),
        // Every message is already older than this.
        max_defer: Duration::ZERO,
        ..WorkerOptions::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = broker.queues.consume(&q, 1).await.unwrap();
    let running = {
        let (q, stop) = (q.clone(), stop.clone());
        tokio::spawn(async move { worker::run(&q, consumer, options, handler, stop).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = broker.queues.dead_letters(&q, 10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead[0].id, waits.id.to_string());
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].reason.contains("max_defer"), "{}", dead[0].reason);
    stop.cancel();
    running.await.unwrap().unwrap();
}
