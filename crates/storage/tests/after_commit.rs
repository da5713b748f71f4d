//! `WriteTx::after_commit`: a write's effects on the rest of the process run once its
//! transaction has committed, and never for a transaction that did not commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use storage::{Database, Migrations};

storage::backend_tests!(&[&Migrations::NONE];
    effects_run_once_after_a_commit_and_never_without_one,
);

async fn effects_run_once_after_a_commit_and_never_without_one(db: &Database) {
    let ran = Arc::new(AtomicUsize::new(0));
    let effect = || {
        let ran = Arc::clone(&ran);
        move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }
    };

    let mut tx = db.begin_write().await.unwrap();
    tx.after_commit(effect());
    tx.after_commit(effect());
    assert_eq!(ran.load(Ordering::SeqCst), 0, "not before the commit");
    tx.commit().await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 2);

    let mut rolled_back = db.begin_write().await.unwrap();
    rolled_back.after_commit(effect());
    rolled_back.rollback().await.unwrap();
    let mut dropped = db.begin_write().await.unwrap();
    dropped.after_commit(effect());
    drop(dropped);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "a rolled back or dropped transaction runs none"
    );
}
