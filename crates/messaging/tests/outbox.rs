//! The transactional outbox and the inbox, on both database backends (SQLite and
//! PostgreSQL), relaying to the embedded broker: a message commits with its write or not
//! at all, the relay publishes in write order and resumes after a crash (twice at worst,
//! never zero times), and an inbox gives a repeated message no second effect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use messaging::outbox::{self, Destination, Outbox, RelayOptions};
use messaging::{Broker, Envelope, StartFrom, StreamOptions, inbox};
use storage::Database;

storage::backend_tests!(&[&outbox::MIGRATIONS];
    a_message_commits_with_its_write_or_not_at_all,
    the_relay_resumes_after_a_crash_and_never_loses_one,
    a_failed_publish_stays_in_the_outbox_in_order,
    an_unreadable_row_stops_the_pass_after_what_precedes_it,
    the_inbox_lets_a_message_have_one_effect,
    the_inbox_purger_forgets_only_old_ids,
);

struct Setup {
    _dir: tempfile::TempDir,
    broker: Broker,
    stream: String,
}

async fn broker() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings::MessagingSettings::default();
    let broker = messaging::embedded::open(&dir.path().join("messaging.db"), &settings)
        .await
        .unwrap();
    let stream = format!("outbox-test-{}", uuid::Uuid::now_v7().simple());
    broker
        .streams
        .declare(&stream, &StreamOptions::default())
        .await
        .unwrap();
    Setup {
        _dir: dir,
        broker,
        stream,
    }
}

fn event(n: u64) -> Envelope {
    Envelope::new("OrderCreated", serde_json::json!({"n": n})).with_key("ORD-1")
}

/// Every event on `stream` from the start, as one new group sees them.
async fn read_all(broker: &Broker, stream: &str, expect: usize) -> Vec<Envelope> {
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let mut consumer = broker
        .streams
        .subscribe(stream, &group, StartFrom::Earliest)
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < expect {
        let event = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("an event within 10 s")
            .unwrap();
        out.push(event.message.clone().unwrap());
        event.commit().await.unwrap();
    }
    // Nothing more arrives: what we have is all there is.
    let more = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(
        more.is_err(),
        "an unexpected extra event: {:?}",
        more.map(|e| e.map(|e| e.message))
    );
    out
}

async fn unsent(db: &Database) -> i64 {
    Outbox::new(db.clone(), "test").backlog().await.unwrap()
}

async fn a_message_commits_with_its_write_or_not_at_all(db: &Database) {
    let setup = broker().await;
    let committed = event(1);
    let mut tx = db.begin_write().await.unwrap();
    outbox::enqueue(&mut tx, Destination::Stream(&setup.stream), &committed)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin_write().await.unwrap();
    outbox::enqueue(&mut tx, Destination::Stream(&setup.stream), &event(2))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(unsent(db).await, 1, "only the committed one");

    let relay = Outbox::new(db.clone(), "test");
    let sent = relay
        .relay_once(&setup.broker, &RelayOptions::default())
        .await
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(unsent(db).await, 0);
    let got = read_all(&setup.broker, &setup.stream, 1).await;
    assert_eq!(got, vec![committed]);
}

async fn the_relay_resumes_after_a_crash_and_never_loses_one(db: &Database) {
    let setup = broker().await;
    let events: Vec<Envelope> = (1..=5).map(event).collect();
    let mut tx = db.begin_write().await.unwrap();
    for e in &events {
        outbox::enqueue(&mut tx, Destination::Stream(&setup.stream), e)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let relay = Outbox::new(db.clone(), "test");
    let options = RelayOptions {
        batch: 3,
        ..RelayOptions::default()
    };
    assert_eq!(relay.relay_once(&setup.broker, &options).await.unwrap(), 3);
    // A crash after publishing the third but before stamping it: its stamp is lost.
    let mut conn = db.pool().acquire().await.unwrap();
    sqlx::query(
        "UPDATE outbox SET sent_at = NULL WHERE seq = (SELECT MAX(seq) FROM outbox WHERE sent_at IS NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);

    // A new relay (the restarted process) publishes from the third on.
    let restarted = Outbox::new(db.clone(), "test");
    assert_eq!(
        restarted.relay_once(&setup.broker, &options).await.unwrap(),
        3
    );
    assert_eq!(unsent(db).await, 0);
    // The third went twice; the embedded broker drops the copy by its id, so readers see
    // each event once, in write order.
    let got = read_all(&setup.broker, &setup.stream, 5).await;
    assert_eq!(got, events);
}

async fn a_failed_publish_stays_in_the_outbox_in_order(db: &Database) {
    let setup = broker().await;
    let undeclared = format!("nowhere-{}", uuid::Uuid::now_v7().simple());
    let mut tx = db.begin_write().await.unwrap();
    outbox::enqueue(&mut tx, Destination::Stream(&undeclared), &event(1))
        .await
        .unwrap();
    outbox::enqueue(&mut tx, Destination::Stream(&setup.stream), &event(2))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let relay = Outbox::new(db.clone(), "test");
    let err = relay
        .relay_once(&setup.broker, &RelayOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&undeclared), "{err}");
    // The failure holds back what came after it: order is kept, nothing is lost.
    assert_eq!(unsent(db).await, 2);
    let mut conn = db.pool().acquire().await.unwrap();
    let (attempts, last_error): (i64, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM outbox ORDER BY seq LIMIT 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(last_error.unwrap().contains(&undeclared));
    drop(conn);

    // Once the destination exists, both go, in order.
    setup
        .broker
        .streams
        .declare(&undeclared, &StreamOptions::default())
        .await
        .unwrap();
    assert_eq!(
        relay
            .relay_once(&setup.broker, &RelayOptions::default())
            .await
            .unwrap(),
        2
    );
    assert_eq!(unsent(db).await, 0);
}

async fn the_inbox_lets_a_message_have_one_effect(db: &Database) {
    let mut conn = db.pool().acquire().await.unwrap();
    sqlx::query("CREATE TABLE effects (message_id TEXT NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let message = event(1);
    // The same message handled three times (a redelivery, a re-publish): one effect.
    for _ in 0..3 {
        let mut tx = db.begin_write().await.unwrap();
        if inbox::first_time(&mut tx, "billing", message.id)
            .await
            .unwrap()
        {
            sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
                .bind(message.id.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // A handling that rolled back left no record: its retry still has its effect.
    let other = event(2);
    let mut tx = db.begin_write().await.unwrap();
    assert!(
        inbox::first_time(&mut tx, "billing", other.id)
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    let mut tx = db.begin_write().await.unwrap();
    assert!(
        inbox::first_time(&mut tx, "billing", other.id)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    // Another consumer handles the same message on its own account.
    let mut tx = db.begin_write().await.unwrap();
    assert!(
        inbox::first_time(&mut tx, "audit", message.id)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    let mut conn = db.pool().acquire().await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM effects")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// The relay publishes runs of messages for one destination at once; a row it cannot read
/// (hand-edited) stops the pass right there: what precedes it goes, in order, and it and
/// everything after it stay unsent.
async fn an_unreadable_row_stops_the_pass_after_what_precedes_it(db: &Database) {
    let setup = broker().await;
    let mut tx = db.begin_write().await.unwrap();
    for n in 1..=4 {
        outbox::enqueue(&mut tx, Destination::Stream(&setup.stream), &event(n))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let third: i64 = sqlx::query_scalar("SELECT seq FROM outbox ORDER BY seq LIMIT 1 OFFSET 2")
        .fetch_one(db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET envelope = 'not json' WHERE seq = $1")
        .bind(third)
        .execute(&mut *db.write_conn().await.unwrap())
        .await
        .unwrap();

    let relay = Outbox::new(db.clone(), "test");
    let err = relay
        .relay_once(&setup.broker, &RelayOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not readable"), "{err}");
    assert!(
        err.to_string().contains(&format!("message {third}")),
        "{err}"
    );
    assert_eq!(
        unsent(db).await,
        2,
        "the unreadable row and the one after it"
    );
    let published = read_all(&setup.broker, &setup.stream, 2).await;
    let ns: Vec<_> = published.iter().map(|e| e.payload["n"].clone()).collect();
    assert_eq!(ns, [1, 2]);
}

/// `inbox::run_purger` forgets ids handled longer ago than it keeps them, and only those.
async fn the_inbox_purger_forgets_only_old_ids(db: &Database) {
    let mut tx = db.begin_write().await.unwrap();
    let (old, recent) = (event(1), event(2));
    for message in [&old, &recent] {
        assert!(
            inbox::first_time(&mut tx, "billing", message.id)
                .await
                .unwrap()
        );
    }
    // `old` was handled two days ago.
    sqlx::query("UPDATE inbox SET handled_at = handled_at - $1 WHERE message_id = $2")
        .bind(2 * 24 * 60 * 60 * 1000_i64)
        .bind(old.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    let purger = tokio::spawn(inbox::run_purger(
        db.clone(),
        Duration::from_secs(24 * 60 * 60),
        Duration::from_secs(3600),
        stop.clone(),
    ));
    let ids = || async {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT message_id FROM inbox")
            .fetch_all(db.pool())
            .await
            .unwrap();
        rows.into_iter().map(|(id,)| id).collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ids().await.len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purger did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ids().await, vec![recent.id.to_string()]);
    stop.cancel();
    purger.await.unwrap();
}
