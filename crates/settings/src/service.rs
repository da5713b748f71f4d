//! The services and the per-service settings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::DatabaseUrl;

/// The services Brigade is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Gateway,
    Catalog,
    Accounts,
    Orders,
    Billing,
    /// The sandbox payment provider billing charges through: an external SaaS stand-in
    /// (Stripe-shaped), shipped so declines, latency and outages can be exercised for real.
    #[serde(rename = "payments_sandbox")]
    PaymentsSandbox,
}

impl ServiceName {
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Gateway,
        ServiceName::Catalog,
        ServiceName::Accounts,
        ServiceName::Orders,
        ServiceName::Billing,
        ServiceName::PaymentsSandbox,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceName::Gateway => "gateway",
            ServiceName::Catalog => "catalog",
            ServiceName::Accounts => "accounts",
            ServiceName::Orders => "orders",
            ServiceName::Billing => "billing",
            ServiceName::PaymentsSandbox => "payments-sandbox",
        }
    }

    /// Its key under `[services]` in configuration (and in `BRIGADE_SERVICES__<KEY>__*`).
    pub const fn config_key(self) -> &'static str {
        match self {
            ServiceName::PaymentsSandbox => "payments_sandbox",
            other => other.as_str(),
        }
    }

    pub const fn default_port(self) -> u16 {
        match self {
            ServiceName::Gateway => 8080,
            ServiceName::Catalog => 8081,
            ServiceName::Accounts => 8082,
            ServiceName::Orders => 8083,
            ServiceName::Billing => 8084,
            ServiceName::PaymentsSandbox => 8085,
        }
    }

    /// Whether browsers on other origins call it by default (CORS): every service but
    /// billing and the payments sandbox, which only the other services call.
    pub const fn is_public(self) -> bool {
        !matches!(self, ServiceName::Billing | ServiceName::PaymentsSandbox)
    }

    pub fn parse(name: &str) -> Option<ServiceName> {
        ServiceName::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one service listens and what database it owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Loopback by default: nothing is exposed beyond this machine unless asked.
    #[serde(default = "loopback")]
    pub host: IpAddr,
    /// One port serves REST, gRPC and gRPC-Web. 0 picks a free port.
    pub port: u16,
    /// `sqlite://...` or `postgres://...`; unset means `<data_dir>/<service>.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    /// The origins whose browsers may call it (CORS): `["*"]` for any, or exact origins
    /// (`"https://shop.example.com"`), or `[]` for none. Unset: any for the public
    /// services, none for billing (see [`ServiceName::is_public`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    /// Terminate TLS on this port (rustls) with this certificate chain and key, for a
    /// service exposed directly (the gateway). Unset: plain HTTP (h2c for HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

/// PEM files: the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl ServiceSettings {
    pub fn for_service(name: ServiceName) -> Self {
        Self {
            host: loopback(),
            port: name.default_port(),
            database_url: None,
            cors_origins: None,
            tls: None,
        }
    }

    /// The origins `name` (this service) answers CORS requests from.
    pub fn cors_origins_of(&self, name: ServiceName) -> Vec<String> {
        match &self.cors_origins {
            Some(origins) => origins.clone(),
            None if name.is_public() => vec!["*".to_owned()],
            None => Vec::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// One entry per service; all always exist (with their defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Services {
    pub gateway: ServiceSettings,
    pub catalog: ServiceSettings,
    pub accounts: ServiceSettings,
    pub orders: ServiceSettings,
    pub billing: ServiceSettings,
    pub payments_sandbox: ServiceSettings,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            gateway: ServiceSettings::for_service(ServiceName::Gateway),
            catalog: ServiceSettings::for_service(ServiceName::Catalog),
            accounts: ServiceSettings::for_service(ServiceName::Accounts),
            orders: ServiceSettings::for_service(ServiceName::Orders),
            billing: ServiceSettings::for_service(ServiceName::Billing),
            payments_sandbox: ServiceSettings::for_service(ServiceName::PaymentsSandbox),
        }
    }
}

impl Services {
    pub fn get(&self, name: ServiceName) -> &ServiceSettings {
        match name {
            ServiceName::Gateway => &self.gateway,
            ServiceName::Catalog => &self.catalog,
            ServiceName::Accounts => &self.accounts,
            ServiceName::Orders => &self.orders,
            ServiceName::Billing => &self.billing,
            ServiceName::PaymentsSandbox => &self.payments_sandbox,
        }
    }

    pub fn get_mut(&mut self, name: ServiceName) -> &mut ServiceSettings {
        match name {
            ServiceName::Gateway => &mut self.gateway,
            ServiceName::Catalog => &mut self.catalog,
            ServiceName::Accounts => &mut self.accounts,
            ServiceName::Orders => &mut self.orders,
            ServiceName::Billing => &mut self.billing,
            ServiceName::PaymentsSandbox => &mut self.payments_sandbox,
        }
    }
}
