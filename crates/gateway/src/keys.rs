//! API keys, after Stripe's: a **secret** key may do everything, a **restricted** key
//! only what its scopes allow. A key is shown once, when it is made, and kept only as its
//! SHA-256 (a key is 190 random bits, so a plain hash is enough: there is nothing to
//! guess). Keys look like `bgd_sk_<32 base62>` / `bgd_rk_<32 base62>` followed by six
//! characters of CRC-32 checksum, so a secret scanner can find a leaked one and tell it
//! from random text without asking us (GitHub's token format does the same).
//!
//! `KeyStore` is the table (`brigade keys` uses it); [`Keys`] is the gateway's copy in
//! memory, reloaded every `gateway.keys.refresh`, so checking a key never waits on the
//! database: a new key works, and a revoked one stops, within that bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use problem::{Kind, Problem};
use sha2::{Digest, Sha256};
use sqlx::Row;
use storage::{Database, Migrations};

pub static MIGRATIONS: Migrations = Migrations {
    owner: "gateway",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    postgres: sqlx::migrate!("migrations/postgres"),
};

const SECRET_PREFIX: &str = "bgd_sk_";
const RESTRICTED_PREFIX: &str = "bgd_rk_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may do beyond the public reads (catalog's products and reviews).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    CatalogWrite,
    AccountsRead,
    AccountsWrite,
    OrdersRead,
    OrdersWrite,
    BillingRead,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::CatalogWrite,
        Scope::AccountsRead,
        Scope::AccountsWrite,
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::BillingRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CatalogWrite => "catalog:write",
            Scope::AccountsRead => "accounts:read",
            Scope::AccountsWrite => "accounts:write",
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::BillingRead => "billing:read",
        }
    }

    /// Whether the scope allows changes (a request needing it is a write).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Scope::CatalogWrite | Scope::AccountsWrite | Scope::OrdersWrite
        )
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b11_1111);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// `catalog:write,orders:write` (spaces around commas allowed). An unknown scope is
    /// named in the error.
    pub fn parse(raw: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {part:?} (known: {})", known.join(", "))
            })?;
            scopes.0 |= scope.bit();
        }
        Ok(scopes)
    }

    pub fn list(self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .collect()
    }

    fn to_column(self) -> String {
        self.list()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A key as the table keeps it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// `true`: a secret key (every scope); `false`: restricted to `scopes`.
    pub secret: bool,
    pub scopes: Scopes,
    /// The key's prefix and last four characters, to tell keys apart in a list.
    pub redacted: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    pub fn active_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A key just made: the only time its text exists outside the client's hands.
pub struct NewKey {
    pub record: KeyRecord,
    pub key: String,
}

/// The key never prints.
impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Who a request is from, once its key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id: the client's name on every hop (idempotency keys are scoped to it).
    pub id: Arc<str>,
    pub scopes: Scopes,
    expires_at: Option<i64>,
}

/// Why the table could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key has the id {0:?}")]
    NotFound(String),
    #[error("the key {0:?} is revoked")]
    Revoked(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the gateway's database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// The `api_keys` table in the gateway's database.
#[derive(Debug, Clone)]
pub struct KeyStore {
    db: Database,
}

macro_rules! columns {
    () => {
        "id, name, kind, scopes, redacted, created_at, expires_at, revoked_at"
    };
}

impl KeyStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Makes a key named `name`: secret when `scopes` is `None`, else restricted to them.
    pub async fn create(&self, name: &str, scopes: Option<Scopes>) -> Result<NewKey, KeyError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(KeyError::Invalid(
                "a key's name is 1 to 100 characters, no control characters".to_owned(),
            ));
        }
        if scopes == Some(Scopes::default()) {
            return Err(KeyError::Invalid(
                "a restricted key needs at least one scope".to_owned(),
            ));
        }
        let key = generate(scopes.is_none())?;
        let record = KeyRecord {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            name: name.to_owned(),
            secret: scopes.is_none(),
            scopes: scopes.unwrap_or(Scopes::ALL),
            redacted: redact(&key),
            created_at: storage::now_millis(),
            expires_at: None,
            revoked_at: None,
        };
        self.insert(&record, &key).await?;
        Ok(NewKey { record, key })
    }

    async fn insert(&self, record: &KeyRecord, key: &str) -> Result<(), KeyError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, kind, scopes, hash, redacted, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(if record.secret {
            "secret"
        } else {
            "restricted"
        })
        .bind(if record.secret {
            String::new()
        } else {
            record.scopes.to_column()
        })
        .bind(hash(key))
        .bind(&record.redacted)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    async fn get(&self, id: &str) -> Result<KeyRecord, KeyError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        record_of(&row)
    }

    /// Revokes a key at once (the gateway stops taking it within `gateway.keys.refresh`).
    /// Revoking a revoked key changes nothing.
    pub async fn revoke(&self, id: &str) -> Result<KeyRecord, KeyError> {
        let mut tx = self.db.begin_write().await?;
        let now = storage::now_millis();
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        let record = self.get(id).await?;
        if changed.rows_affected() == 0 && record.revoked_at.is_none() {
            return Err(KeyError::NotFound(id.to_owned()));
        }
        Ok(record)
    }

    /// Stripe's roll: a new key with the same name and scopes, and the old one expiring
    /// after `grace` (at once for zero), so clients can move over without an outage.
    pub async fn roll(&self, id: &str, grace: Duration) -> Result<NewKey, KeyError> {
        let old = self.get(id).await?;
        if old.revoked_at.is_some() {
            return Err(KeyError::Revoked(id.to_owned()));
        }
        let now = storage::now_millis();
        let expires = now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let new = self
            .create(&old.name, (!old.secret).then_some(old.scopes))
            .await?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE api_keys SET expires_at = $1 \
             WHERE id = $2 AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(expires)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// The keys that may be used now, by hash.
    async fn active(&self) -> Result<Active, KeyError> {
        let now = storage::now_millis();
        let rows = sqlx::query(
            "SELECT id, kind, scopes, hash, expires_at FROM api_keys \
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        let mut keys = HashMap::with_capacity(rows.len());
        for row in &rows {
            let hash: String = row.try_get("hash")?;
            let Some(digest) = unhex(&hash) else { continue };
            let kind: String = row.try_get("kind")?;
            let scopes = if kind == "secret" {
                Scopes::ALL
            } else {
                let raw: String = row.try_get("scopes")?;
                // A scope this build does not know (a newer writer) grants nothing here.
                Scopes(
                    raw.split(',')
                        .filter_map(Scope::parse)
                        .fold(0, |bits, s| bits | s.bit()),
                )
            };
            let id: String = row.try_get("id")?;
            keys.insert(
                digest,
                Principal {
                    id: Arc::from(id),
                    scopes,
                    expires_at: row.try_get("expires_at")?,
                },
            );
        }
        Ok(keys)
    }
}

fn record_of(row: &sqlx::any::AnyRow) -> Result<KeyRecord, KeyError> {
    let kind: String = row.try_get("kind")?;
    let secret = kind == "secret";
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret,
        scopes: if secret {
            Scopes::ALL
        } else {
            Scopes::parse(&scopes).map_err(KeyError::Invalid)?
        },
        redacted: row.try_get("redacted")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A new key's text: prefix, 32 random base62 characters, 6 of checksum.
fn generate(secret: bool) -> Result<String, KeyError> {
    let mut key = String::from(if secret {
        SECRET_PREFIX
    } else {
        RESTRICTED_PREFIX
    });
    while key.len() < SECRET_PREFIX.len() + RANDOM_LEN {
        let mut bytes = [0u8; 48];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        // 248 = 4 × 62: taking only bytes below it keeps every character equally likely.
        for b in bytes.into_iter().filter(|b| *b < 248) {
            if key.len() == SECRET_PREFIX.len() + RANDOM_LEN {
                break;
            }
            key.push(char::from(BASE62[usize::from(b % 62)]));
        }
    }
    let checksum = checksum(&key);
    key.push_str(&checksum);
    Ok(key)
}

fn checksum(body: &str) -> String {
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `key` has a key's shape and checksum (before anything is looked up).
pub fn well_formed(key: &str) -> bool {
    key.len() == SECRET_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN
        && (key.starts_with(SECRET_PREFIX) || key.starts_with(RESTRICTED_PREFIX))
        && key
            .bytes()
            .skip(SECRET_PREFIX.len())
            .all(|b| b.is_ascii_alphanumeric())
        && key.is_char_boundary(key.len() - CHECKSUM_LEN)
        && checksum(&key[..key.len() - CHECKSUM_LEN]) == key[key.len() - CHECKSUM_LEN..]
}

fn redact(key: &str) -> String {
    let tail = key.get(key.len().saturating_sub(4)..).unwrap_or("");
    format!("{}…{tail}", &key[..SECRET_PREFIX.len()])
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hash(key: &str) -> String {
    digest(key).iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The live keys, by the SHA-256 of the key.
type Active = HashMap<[u8; 32], Principal>;

/// The gateway's keys in memory: what a request's key is checked against.
#[derive(Clone)]
pub struct Keys {
    store: KeyStore,
    active: Arc<RwLock<Arc<Active>>>,
}

/// What a request's credentials come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` at all: public reads only.
    Anonymous,
    Key(Principal),
}

impl Caller {
    /// The client's name on every hop: the key's id, or `anonymous`.
    pub fn client(&self) -> Arc<str> {
        match self {
            Caller::Anonymous => Arc::from(server::identity::ClientScope::ANONYMOUS),
            Caller::Key(principal) => Arc::clone(&principal.id),
        }
    }

    /// Whether this caller may act under `scope`: a 401 for no key, a 403 for a key
    /// without it.
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        match self {
            Caller::Anonymous => Err(Problem::new(Kind::Unauthenticated).with_detail(format!(
                "this needs an API key with the {scope} scope: send it as `Authorization: Bearer <key>`"
            ))),
            Caller::Key(principal) if principal.scopes.contains(scope) => Ok(()),
            Caller::Key(_) => Err(Problem::new(Kind::Forbidden)
                .with_detail(format!("this API key lacks the {scope} scope"))),
        }
    }
}

/// Neither the keys' hashes nor their ids print: only how many there are.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let active = self.active.read().map_or(0, |a| a.len());
        f.debug_struct("Keys").field("active", &active).finish()
    }
}

impl Keys {
    pub fn new(store: KeyStore) -> Self {
        Self {
            store,
            active: Arc::default(),
        }
    }

    /// Loads the table now.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let active = Arc::new(self.store.active().await?);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = active;
        Ok(())
    }

    /// Reloads every `every` until `stop`; a failed load keeps the last good copy.
    pub async fn run_refresh(self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(err) = self.reload().await {
                        tracing::warn!(%err, "could not reload API keys; keeping the last copy");
                    }
                }
            }
        }
    }

    /// Whether `caller` may still act: anonymous always; a key while it is in the
    /// latest copy of the table and not expired.
    pub fn is_live(&self, caller: &Caller) -> bool {
        let Caller::Key(principal) = caller else {
            return true;
        };
        let active = Arc::clone(&self.active.read().unwrap_or_else(|p| p.into_inner()));
        active.values().any(|p| {
            p.id == principal.id && p.expires_at.is_none_or(|at| at > storage::now_millis())
        })
    }

    /// The caller `authorization` names: anonymous without the header, a key's principal
    /// for a live key, else a 401 (a malformed header, an unknown, revoked or expired key).
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Caller, Problem> {
        let Some(value) = authorization else {
            return Ok(Caller::Anonymous);
        };
        let invalid = || {
            Problem::new(Kind::Unauthenticated)
                .with_detail("the API key is not valid (unknown, revoked, expired or malformed)")
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, key) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
            })
            .ok_or_else(|| {
                Problem::new(Kind::Unauthenticated)
                    .with_detail("send the API key as `Authorization: Bearer <key>`")
            })?;
        if !well_formed(key) {
            return Err(invalid());
        }
        let active = Arc::clone(&self.active.read().unwrap_or_else(|p| p.into_inner()));
        let principal = active.get(&digest(key)).ok_or_else(invalid)?;
        if principal
            .expires_at
            .is_some_and(|at| at <= storage::now_millis())
        {
            return Err(invalid());
        }
        Ok(Caller::Key(principal.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_their_shape_and_checksum() {
        for secret in [true, false] {
            let key = generate(secret).unwrap();
            assert_eq!(key.len(), 45, "{key}");
            assert!(key.starts_with(if secret { "bgd_sk_" } else { "bgd_rk_" }));
            assert!(well_formed(&key), "{key}");
            // One character changed breaks the checksum.
            let mut broken = key.clone().into_bytes();
            broken[10] = if broken[10] == b'a' { b'b' } else { b'a' };
            assert!(!well_formed(std::str::from_utf8(&broken).unwrap()));
        }
        assert_ne!(generate(true).unwrap(), generate(true).unwrap());
        assert!(!well_formed("bgd_sk_short"));
        assert!(!well_formed(&format!("bgd_xx_{}", "a".repeat(38))));
        assert!(!well_formed(&"é".repeat(23)));
    }

    #[test]
    fn scopes_parse_and_name_the_unknown() {
        let scopes = Scopes::parse("catalog:write, orders:write").unwrap();
        assert!(scopes.contains(Scope::CatalogWrite));
        assert!(scopes.contains(Scope::OrdersWrite));
        assert!(!scopes.contains(Scope::OrdersRead));
        assert_eq!(scopes.to_column(), "catalog:write,orders:write");
        let err = Scopes::parse("catalog:write,catalog:delete").unwrap_err();
        assert!(err.contains("\"catalog:delete\""), "{err}");
        for scope in Scope::ALL {
            assert!(Scopes::ALL.contains(scope));
        }
    }

    #[test]
    fn a_redacted_key_keeps_its_prefix_and_last_four() {
        let key = generate(false).unwrap();
        let redacted = redact(&key);
        assert!(redacted.starts_with("bgd_rk_…"));
        assert!(redacted.ends_with(&key[key.len() - 4..]));
        assert!(!redacted.contains(&key[7..20]));
    }
}
