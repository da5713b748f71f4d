//! Deterministic demo users: the seed's GraphQL example names a reviewer "Jane", so she
//! is user 1; the rest are generated from a fixed seed.

use storage::StoreError;

use crate::domain::{Email, NewUser, UserName};
use crate::store::AccountsStore;

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Linus", "Ken", "Barbara", "Alan", "Margaret", "Dennis", "Radia", "Edsger",
    "Frances", "Leslie",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Thompson", "Liskov", "Turing", "Hamilton", "Ritchie", "Perlman",
];

/// Inserts `users` users in one transaction; does nothing if there are users already.
/// Returns how many were inserted.
pub async fn seed(store: &AccountsStore, users: usize) -> Result<usize, StoreError> {
    if store.user_count().await? > 0 {
        return Ok(0);
    }
    let mut rng = fastrand::Rng::with_seed(0xACC0_0075);
    let mut tx = store.database().begin_write().await?;
    for i in 0..users {
        let (name, email) = if i == 0 {
            ("Jane Doe".to_owned(), "jane@example.com".to_owned())
        } else {
            let first = FIRST[rng.usize(..FIRST.len())];
            let last = LAST[rng.usize(..LAST.len())];
            (
                format!("{first} {last}"),
                format!(
                    "{}.{}.{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i + 1
                ),
            )
        };
        let new = NewUser {
            name: UserName::parse(&name).map_err(|r| StoreError::Corrupt(r.into()))?,
            email: Email::parse(&email).map_err(|r| StoreError::Corrupt(r.into()))?,
        };
        store.insert_user_in(&mut tx, &new).await?;
    }
    tx.commit().await?;
    Ok(users)
}
