//! Accounts' own database: the `users` table. [`AccountsStore`] is the store's one door:
//! its methods run the private repository functions below on its pool, or inside a
//! caller's transaction (`insert_user_in`: the idempotency key's).

use sqlx::{AnyConnection, FromRow};
use storage::{Database, Migrations, StoreError, WriteTx, now_millis};

use crate::domain::{Email, NewUser, User, UserId, UserName};

pub static MIGRATIONS: Migrations = Migrations {
    owner: "accounts",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

const USER_COLUMNS: &str = "id, name, email, created_at, updated_at";

#[derive(FromRow)]
struct UserRow {
    id: i64,
    name: String,
    email: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("user {}: {what}", row.id));
        Ok(User {
            id: UserId(row.id),
            name: UserName::parse(&row.name).map_err(|r| corrupt(format!("name {r}")))?,
            email: Email::parse(&row.email).map_err(|r| corrupt(format!("email {r}")))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Creates a user; [`StoreError::Conflict`] when the email is taken.
async fn insert_user(conn: &mut AnyConnection, new: &NewUser) -> Result<User, StoreError> {
    let result = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (name, email, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         RETURNING {USER_COLUMNS}"
    )))
    .bind(new.name.as_str())
    .bind(new.email.as_str())
    .bind(now_millis())
    .fetch_one(conn)
    .await;
    match result {
        Ok(row) => row.try_into(),
        Err(e) if storage::is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "a user with email {} already exists",
            new.email.as_str()
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn get_user(conn: &mut AnyConnection, id: UserId) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    row.map(User::try_from).transpose()
}

/// Users with ids in `ids` (unknown ids are simply absent), for batched lookups.
async fn get_users(conn: &mut AnyConnection, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
    let rows: Vec<UserRow> = storage::rows_by_id(conn, USER_COLUMNS, "users", &ids).await?;
    rows.into_iter().map(User::try_from).collect()
}

/// A keyset page of users in id order.
async fn list_users(
    conn: &mut AnyConnection,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<User>, StoreError> {
    let rows: Vec<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    )))
    .bind(after.map_or(0, |a| a.0))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(User::try_from).collect()
}

async fn count_users(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(conn)
        .await?;
    Ok(n)
}

/// The pool-backed face of the repository functions above.
#[derive(Debug, Clone)]
pub struct AccountsStore {
    db: Database,
}

impl AccountsStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let mut conn = self.db.write_conn().await?;
        insert_user(&mut conn, new).await
    }

    /// Creates a user in `tx`, a transaction the caller commits (the idempotency key's);
    /// [`StoreError::Conflict`] when the email is taken.
    pub async fn insert_user_in(
        &self,
        tx: &mut WriteTx,
        new: &NewUser,
    ) -> Result<User, StoreError> {
        insert_user(tx, new).await
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        get_user(&mut conn, id).await
    }

    pub async fn users_by_id(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        get_users(&mut conn, ids).await
    }

    pub async fn users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        list_users(&mut conn, after, limit).await
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        count_users(&mut conn).await
    }
}
