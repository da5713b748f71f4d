//! A database URL that never prints its password.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `sqlite://<path>` or `postgres://user:password@host/db`. `Debug` and `Display` hide
/// the password; only [`DatabaseUrl::expose`] gives the real string, to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if known.iter().any(|p| raw.starts_with(p)) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{} is not a supported database URL (expected sqlite://<path> or postgres://...)",
                DatabaseUrl(raw.to_owned())
            ))
        }
    }

    /// A SQLite file, created if missing.
    pub fn sqlite_file(path: &Path) -> Self {
        Self(format!("sqlite://{}?mode=rwc", path.display()))
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres")
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> String {
        // scheme://user:password@host... -> scheme://user:***@host...
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let Some((userinfo, host)) = rest.rsplit_once('@') else {
            return self.0.clone();
        };
        match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DatabaseUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}
