//! The repository, run against both backends.

use accounts::domain::{NewUser, UserId};
use accounts::{AccountsStore, MIGRATIONS, seed};
use storage::{Database, StoreError};

storage::backend_tests!(&[&MIGRATIONS];
    creates_and_reads_users,
    emails_are_unique,
    pages_and_batches,
    seeding_puts_jane_first_and_runs_once,
);

async fn creates_and_reads_users(db: &Database) {
    let store = AccountsStore::new(db.clone());
    let jane = store
        .create_user(&NewUser::parse("Jane", "jane@Example.COM").unwrap())
        .await
        .unwrap();
    assert_eq!(jane.email.as_str(), "jane@example.com");
    assert_eq!(store.user(jane.id).await.unwrap().unwrap(), jane);
    assert!(store.user(UserId(404)).await.unwrap().is_none());
}

async fn emails_are_unique(db: &Database) {
    let store = AccountsStore::new(db.clone());
    store
        .create_user(&NewUser::parse("Jane", "jane@example.com").unwrap())
        .await
        .unwrap();
    let err = store
        .create_user(&NewUser::parse("Other Jane", "jane@EXAMPLE.com").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let problem = problem::Problem::from(err);
    assert_eq!(problem.kind(), problem::Kind::Conflict);
    assert_eq!(store.user_count().await.unwrap(), 1);
}

async fn pages_and_batches(db: &Database) {
    let store = AccountsStore::new(db.clone());
    for i in 0..9 {
        store
            .create_user(&NewUser::parse(&format!("U{i}"), &format!("u{i}@example.com")).unwrap())
            .await
            .unwrap();
    }
    let first = store.users(None, 4).await.unwrap();
    let second = store.users(first.last().map(|u| u.id), 4).await.unwrap();
    let third = store.users(second.last().map(|u| u.id), 4).await.unwrap();
    let ids: Vec<i64> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|u| u.id.0)
        .collect();
    assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    let batch = store
        .users_by_id(&[UserId(3), UserId(99), UserId(1)])
        .await
        .unwrap();
    assert_eq!(batch.iter().map(|u| u.id.0).collect::<Vec<_>>(), [1, 3]);
    assert!(store.users_by_id(&[]).await.unwrap().is_empty());
}

async fn seeding_puts_jane_first_and_runs_once(db: &Database) {
    let store = AccountsStore::new(db.clone());
    assert_eq!(seed::seed(&store, 50).await.unwrap(), 50);
    let jane = store.user(UserId(1)).await.unwrap().unwrap();
    assert_eq!(jane.name.as_str(), "Jane Doe");
    assert_eq!(seed::seed(&store, 50).await.unwrap(), 0);
    assert_eq!(store.user_count().await.unwrap(), 50);
}
