//! Who a call is from, past the edge: the gateway decides who a client is (its API key,
//! or anonymous) and every call it makes to a service carries that verdict as a
//! short-lived token signed with a key the system's processes share; a service calling
//! another does the same for the client it acts for. Catalog, accounts, orders and billing
//! refuse a call without a valid token (`identity.require_internal_token`), so their
//! ports are no way around the gateway's checks.
//!
//! Why our own token and not JWT: the token says one thing (which client, until when)
//! to services that share one secret; a JWT library would add algorithm negotiation,
//! JSON and base64 of a header for nothing we use. The format is
//! `v1.<expiry, Unix ms>.<client>.<HMAC-SHA256 of what precedes, base64url>`.
//!
//! The key is `identity.internal_secret`, or `<data_dir>/internal.key`, made on first
//! start (mode 0600) and read by every process sharing the data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderName, HeaderValue};
use settings::Settings;
use sha2::Sha256;

/// The header (and gRPC metadata key) the token travels in.
pub const HEADER_NAME: &str = "x-brigade-identity";
pub const HEADER: HeaderName = HeaderName::from_static(HEADER_NAME);

/// Whose idempotency keys a request's are: keys are unique per client, never globally.
/// Set as a request extension by the token check (the client the token names); without
/// it the scope is `anonymous`.
#[derive(Clone, Debug)]
pub struct ClientScope(pub String);

impl ClientScope {
    pub const ANONYMOUS: &'static str = "anonymous";
    /// Work no client asked for directly (a worker's message, a background task).
    pub const INTERNAL: &'static str = "internal";
}

/// What a service's guard does with identity tokens: check them with `signer`, and
/// refuse a call without one when `required`.
#[derive(Clone, Debug)]
pub struct Check {
    pub signer: Arc<Signer>,
    pub required: bool,
}

/// Signs and checks tokens with the system's key.
pub struct Signer {
    mac: Hmac<Sha256>,
    ttl: Duration,
    /// Tokens made recently, per client: re-used while more than half their life is left,
    /// so a busy client costs one signature per half-TTL, not one per call.
    minted: Mutex<HashMap<Arc<str>, (HeaderValue, u64)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (said to the caller only as "not valid").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no identity token")]
    Missing,
    #[error("the identity token is malformed")]
    Malformed,
    #[error("the identity token's signature does not match")]
    BadSignature,
    #[error("the identity token has expired")]
    Expired,
}

/// Most clients whose tokens are kept for re-use; past it the cache starts again.
const MINTED_MAX: usize = 4096;

impl Signer {
    /// A signer over `secret`'s bytes, making tokens valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        // What HMAC itself does with a key of any length (RFC 2104): one longer than the
        // block is hashed first, then it is padded with zeros to the block.
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            use sha2::Digest as _;
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        let mac = Hmac::<Sha256>::new(&block.into());
        Self {
            mac,
            ttl,
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// The signer of the system `settings` describe: one per key source in the process
    /// (services of one process share it; tests with their own data directories each get
    /// their own).
    pub fn for_settings(settings: &Settings) -> std::io::Result<Arc<Signer>> {
        static SIGNERS: Mutex<Vec<(Source, Arc<Signer>)>> = Mutex::new(Vec::new());
        let identity = &settings.identity;
        let source = match &identity.internal_secret {
            Some(secret) => Source::Configured(secret.clone()),
            None => Source::File(settings.data_dir.join("internal.key")),
        };
        let mut signers = SIGNERS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, signer)) = signers
            .iter()
            .find(|(s, signer)| *s == source && signer.ttl == identity.token_ttl)
        {
            return Ok(Arc::clone(signer));
        }
        let secret = match &source {
            Source::Configured(secret) => secret.as_bytes().to_vec(),
            Source::File(path) => key_file(path)?,
        };
        let signer = Arc::new(Signer::new(&secret, identity.token_ttl));
        signers.push((source, Arc::clone(&signer)));
        Ok(signer)
    }

    /// A token for `client`, valid for the signer's TTL from now (re-used while more than
    /// half of that is left). `client` is 1–64 characters of `[A-Za-z0-9_:-]`; anything
    /// else is signed as `anonymous` rather than trusted to separate the token's fields.
    pub fn token(&self, client: &str) -> HeaderValue {
        let now = now_ms();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, expires)) = minted.get(client)
            && expires.saturating_sub(now) > ttl / 2
        {
            return token.clone();
        }
        let client: Arc<str> = if valid_client(client) {
            Arc::from(client)
        } else {
            Arc::from(ClientScope::ANONYMOUS)
        };
        let expires = now.saturating_add(ttl);
        let token = self.sign(expires, &client);
        if minted.len() >= MINTED_MAX {
            minted.clear();
        }
        minted.insert(client, (token.clone(), expires));
        token
    }

    /// A token for `client` valid for `ttl`, not kept (for `brigade internal-token`).
    pub fn token_for(&self, client: &str, ttl: Duration) -> Option<HeaderValue> {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        valid_client(client).then(|| self.sign(now_ms().saturating_add(ttl), client))
    }

    fn sign(&self, expires: u64, client: &str) -> HeaderValue {
        let claims = format!("v1.{expires}.{client}");
        let mut mac = self.mac.clone();
        mac.update(claims.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        // Digits, the client's checked characters, dots and base64url: always a header value.
        HeaderValue::try_from(format!("{claims}.{signature}"))
            .unwrap_or_else(|_| HeaderValue::from_static("v1.0.anonymous.invalid"))
    }

    /// The client a token names, if it is well formed, signed with this key and not
    /// expired.
    pub fn verify(&self, token: &HeaderValue) -> Result<Arc<str>, Refused> {
        self.verify_at(token.as_bytes(), now_ms())
    }

    fn verify_at(&self, token: &[u8], now: u64) -> Result<Arc<str>, Refused> {
        let token = std::str::from_utf8(token).map_err(|_| Refused::Malformed)?;
        let (claims, signature) = token.rsplit_once('.').ok_or(Refused::Malformed)?;
        let mut parts = claims.splitn(3, '.');
        let (Some("v1"), Some(expires), Some(client)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| Refused::Malformed)?;
        if !valid_client(client) {
            return Err(Refused::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refused::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(claims.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| Refused::BadSignature)?;
        if expires <= now {
            return Err(Refused::Expired);
        }
        Ok(Arc::from(client))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Source {
    Configured(String),
    File(PathBuf),
}

fn valid_client(client: &str) -> bool {
    (1..=64).contains(&client.len())
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-')
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The key in `path`, made first if there is none: 32 random bytes, hex, written to a
/// file of its own and linked into place, so two processes starting at once agree on
/// one key (the second link fails and that process reads the first's).
fn key_file(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds fewer than 32 bytes", path.display()),
            ));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut unique = [0u8; 8];
    getrandom::fill(&mut unique).map_err(std::io::Error::other)?;
    let temp = path.with_extension(format!("key.{}", u64::from_le_bytes(unique)));
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(hex.as_bytes())?;
        file.sync_all()?;
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(hex.into_bytes()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(err) => Err(err),
    }
}

/// Stamps every outbound gRPC call with a token for the client the current request acts
/// for (`internal` for work no client asked for); [`crate::grpc::client::channel`]'s
/// channels carry it.
#[derive(Clone, Debug)]
pub struct Stamp {
    signer: Arc<Signer>,
}

impl Stamp {
    pub fn new(signer: Arc<Signer>) -> Self {
        Self { signer }
    }

    /// The token for the current request's client.
    pub fn token(&self) -> HeaderValue {
        let client = telemetry::context::with_current(|ctx| ctx.client().cloned()).flatten();
        self.signer
            .token(client.as_deref().unwrap_or(ClientScope::INTERNAL))
    }
}

impl tonic::service::Interceptor for Stamp {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let token = self.token();
        if let Ok(value) = tonic::metadata::AsciiMetadataValue::try_from(token.as_bytes()) {
            request.metadata_mut().insert(HEADER_NAME, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60))
    }

    #[test]
    fn a_token_names_its_client_until_it_expires() {
        let signer = signer();
        let token = signer.token("key_01abc");
        assert_eq!(signer.verify(&token).unwrap().as_ref(), "key_01abc");
        let expires: u64 = token
            .to_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            signer.verify_at(token.as_bytes(), expires),
            Err(Refused::Expired)
        );
        assert!(signer.verify_at(token.as_bytes(), expires - 1).is_ok());
    }

    #[test]
    fn another_key_or_an_edited_token_is_refused() {
        let token = signer().token("key_a");
        let other = Signer::new(b"another key, also 32 bytes long!", Duration::from_secs(60));
        assert_eq!(other.verify(&token), Err(Refused::BadSignature));
        let text = token.to_str().unwrap();
        let forged = text.replace("key_a", "key_b");
        assert_eq!(
            signer().verify(&HeaderValue::try_from(forged).unwrap()),
            Err(Refused::BadSignature)
        );
        let later = {
            let mut parts: Vec<&str> = text.split('.').collect();
            let exp = (parts[1].parse::<u64>().unwrap() + 3_600_000).to_string();
            parts[1] = Box::leak(exp.into_boxed_str());
            parts.join(".")
        };
        assert_eq!(
            signer().verify(&HeaderValue::try_from(later).unwrap()),
            Err(Refused::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v2.1.a.b",
            "v1.x.a.AAAA",
            "v1.1.a b.AAAA",
            "v1.99999999999999.a.!!",
        ] {
            assert_eq!(
                signer().verify(&HeaderValue::from_static(bad)),
                Err(Refused::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_client_name_that_could_split_the_token_is_signed_as_anonymous() {
        let signer = signer();
        for odd in ["a.b", "", "é", &"x".repeat(65)] {
            assert_eq!(
                signer.verify(&signer.token(odd)).unwrap().as_ref(),
                "anonymous"
            );
            assert!(signer.token_for(odd, Duration::from_secs(1)).is_none());
        }
    }

    #[test]
    fn tokens_are_reused_while_fresh() {
        let signer = signer();
        assert_eq!(signer.token("k"), signer.token("k"));
        assert_ne!(signer.token("k"), signer.token("j"));
    }

    #[test]
    fn the_key_file_is_made_once_and_read_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("internal.key");
        let first = key_file(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(key_file(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(key_file(&path).is_err());
    }
}
