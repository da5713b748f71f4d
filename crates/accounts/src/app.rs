//! Accounts' application layer: one method per use case, run once for every face. Faces
//! (REST, gRPC) parse the wire into domain values, call a method here and render what it
//! returns; a refusal is an [`AccountsError`], which becomes a [`Problem`] at exactly one
//! place.

use idempotency::{Idempotency, Keyed};
use problem::{FieldError, Problem};
use storage::{Found, StoreError};

use crate::domain::{NewUser, User, UserId};
use crate::store::AccountsStore;

/// Most ids one batched lookup may ask for.
pub const MAX_BATCH: usize = 200;

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("User {} not found", .0.0)]
    UserNotFound(UserId),
    #[error("at most {MAX_BATCH} ids per call")]
    TooManyIds,
    /// A taken email is the store's [`StoreError::Conflict`] (409).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccountsError> for Problem {
    fn from(err: AccountsError) -> Self {
        let detail = err.to_string();
        match err {
            AccountsError::UserNotFound(id) => {
                Problem::not_found(detail).with_extension("user_id", id.0)
            }
            AccountsError::TooManyIds => {
                Problem::validation(vec![FieldError::new("user_ids", detail)])
            }
            AccountsError::Store(err) => err.into(),
        }
    }
}

/// The accounts' use cases over its store and its idempotency keys.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: AccountsStore,
    idempotency: Idempotency,
}

impl Accounts {
    pub fn new(store: AccountsStore, idempotency: Idempotency) -> Self {
        Self { store, idempotency }
    }

    pub async fn user(&self, id: UserId) -> Result<User, AccountsError> {
        self.store
            .user(id)
            .await?
            .ok_or(AccountsError::UserNotFound(id))
    }

    /// Up to `limit` users with ids above `after`, in id order (a page asks for one more
    /// than it shows, to know whether another follows).
    pub async fn users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, AccountsError> {
        Ok(self.store.users(after, limit).await?)
    }

    /// The users of `ids`, in the order asked, and the ids of those that do not exist.
    pub async fn users_by_id(&self, ids: &[UserId]) -> Result<Found<User, UserId>, AccountsError> {
        if ids.len() > MAX_BATCH {
            return Err(AccountsError::TooManyIds);
        }
        let rows = self.store.users_by_id(ids).await?;
        Ok(Found::in_order(ids, rows, |u| u.id))
    }

    /// Creates a user under the face's `Idempotency-Key`, answering with `render`'s
    /// answer (kept for replays); a taken email is a 409 the key also keeps.
    pub async fn create_user<K: Keyed>(
        &self,
        write: &K,
        new: NewUser,
        render: impl FnOnce(User) -> Result<K::Answer, Problem> + Send,
    ) -> K::Output {
        let store = &self.store;
        write
            .run_after(
                &self.idempotency,
                std::future::ready(Ok(())),
                |mut tx| async move {
                    let result = match store.insert_user_in(&mut tx, &new).await {
                        Ok(user) => render(user),
                        Err(err) => Err(AccountsError::from(err).into()),
                    };
                    (tx, result)
                },
            )
            .await
    }
}
