//! Brigade's configuration: one typed tree, layered from built-in defaults, then an
//! optional TOML file, then `BRIGADE_*` environment variables (`__` separates levels:
//! `BRIGADE_SERVICES__CATALOG__PORT=9081`), then command-line flags. Parsed and validated
//! once at start-up; an error names the bad key. Secrets never print.
#![forbid(unsafe_code)]

mod database_url;
mod service;

pub use database_url::DatabaseUrl;
pub use service::{ServiceName, ServiceSettings, Services, TlsSettings};

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The prefix of every environment variable Brigade reads as configuration.
pub const ENV_PREFIX: &str = "BRIGADE_";

/// Everything a Brigade process can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where each service's SQLite file (and later the embedded queue) lives.
    pub data_dir: PathBuf,
    /// Whether `brigade up` loads the demo catalog into a data directory it creates.
    pub seed_demo_data: bool,
    /// How long in-flight requests get to finish after SIGINT/SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests one service handles at once; beyond that it sheds load (503 /
    /// UNAVAILABLE with Retry-After, at once) instead of queueing without bound.
    pub max_in_flight: usize,
    /// `development` (the default) or `production`: what is on when a setting leaves it
    /// to the profile (GraphQL introspection, today).
    pub profile: Profile,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub database: PoolSettings,
    pub idempotency: IdempotencySettings,
    pub outbound: OutboundSettings,
    pub catalog: CatalogSettings,
    pub orders: OrdersSettings,
    pub billing: BillingSettings,
    pub gateway: GatewaySettings,
    pub identity: IdentitySettings,
    pub http: HttpSettings,
    pub messaging: MessagingSettings,
    pub services: Services,
    pub slo: SloSettings,
}

/// What every port takes from a client before a request reaches the service: header
/// limits and how long a client may take to send its headers (a slow client holding
/// connections open, slowloris, is cut off). Bodies are capped where they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Most header fields in one request (HTTP/1.1; beyond: 431).
    pub max_headers: usize,
    /// Most bytes of request head (HTTP/1.1 read buffer, at least 8 KiB) and of an HTTP/2
    /// header list.
    pub max_header_bytes: usize,
    /// How long a client has to send a request's headers, from the first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Where Brigade runs: a developer's machine, or in front of real users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Development,
    Production,
}

/// The gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    pub graphql: GraphqlSettings,
    pub keys: KeySettings,
    pub limits: LimitSettings,
    /// Whether a REST request for an owner this process also serves (`brigade up`) is
    /// handed to the owner's router in process — its whole middleware stack, the token
    /// checked — rather than sent over a loopback socket (`server::local`).
    pub forward_in_process: bool,
    pub dashboard: DashboardSettings,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            graphql: GraphqlSettings::default(),
            keys: KeySettings::default(),
            limits: LimitSettings::default(),
            forward_in_process: true,
            dashboard: DashboardSettings::default(),
        }
    }
}

/// The live dashboard at `/dashboard` on the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    pub enabled: bool,
    /// Whether anyone may watch. Unset: anyone in development; in production only a key
    /// with every scope (a secret key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<bool>,
    /// How often the services' metrics are read while someone watches.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The window rates and percentiles are computed over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long one stream stays open; the page then reconnects (and a proxy or a
    /// rotated key never holds one forever).
    #[serde(with = "humantime_serde")]
    pub stream_lifetime: Duration,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            open: None,
            interval: Duration::from_secs(1),
            window: Duration::from_secs(60),
            stream_lifetime: Duration::from_secs(3600),
        }
    }
}

/// A rate: `per_second` on average, with bursts of up to `burst` at once (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// The gateway's admission: per API key (and per client address for anonymous reads)
/// rates and concurrency, after Stripe's limiters. A refusal is a 429 with `Retry-After`
/// and the IETF `RateLimit`/`RateLimit-Policy` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Every API key's request rate (Stripe's default is 100 a second).
    pub per_key: Rate,
    /// Each client address's rate for requests without a key.
    pub anonymous: Rate,
    /// A further rate, per key, for requests that need a scope (`"orders:write" =
    /// { per_second = 10, burst = 20 }`).
    pub scopes: std::collections::BTreeMap<String, Rate>,
    /// Requests one key may have in flight at once.
    pub concurrent_per_key: u32,
    /// The share (percent) of `max_in_flight` kept for writes: reads are shed first,
    /// once the gateway has `100 - write_reserve_percent`% of it in flight.
    pub write_reserve_percent: u8,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            per_key: Rate {
                per_second: 100,
                burst: 100,
            },
            anonymous: Rate {
                per_second: 20,
                burst: 40,
            },
            scopes: std::collections::BTreeMap::new(),
            concurrent_per_key: 25,
            write_reserve_percent: 20,
        }
    }
}

/// The gateway's API keys (`brigade keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    /// How often the gateway reloads its keys from its database: a new key works, and a
    /// revoked or expired one stops working, within this bound. Checking a key never
    /// waits on the database.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(2),
        }
    }
}

/// How the services know a call came through the gateway: it (and every service calling
/// another) sends a short-lived token signed with a key the system's processes share.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// Whether catalog, accounts, orders and billing refuse a call without a valid token
    /// (401), so their ports cannot be used to get around the gateway's checks.
    pub require_internal_token: bool,
    /// The signing key (at least 32 characters), the same for every process of one
    /// system. Unset: the key in `<data_dir>/internal.key`, made on first start, which
    /// every process sharing the data directory reads.
    pub internal_secret: Option<String>,
    /// How long a token stays valid.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            require_internal_token: true,
            internal_secret: None,
            token_ttl: Duration::from_secs(60),
        }
    }
}

/// The secret never prints.
impl std::fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("require_internal_token", &self.require_internal_token)
            .field(
                "internal_secret",
                &self.internal_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// `POST /graphql`: what one operation may ask for, checked before anything runs, and
/// the per-client query-cost bucket (Shopify's model and numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlSettings {
    /// Deepest field nesting.
    pub max_depth: u32,
    /// Most aliased fields in one operation.
    pub max_aliases: u32,
    /// Most fields at the operation's root.
    pub max_root_fields: u32,
    /// Most operations in one batched request.
    pub max_batch: u32,
    /// The most one operation may cost (its requested cost, computed before it runs).
    pub max_cost: u32,
    /// The cost bucket each client has: its size...
    pub bucket_size: u32,
    /// ...and the points it regains per second.
    pub restore_rate: u32,
    /// The whole execution's budget; every backend call gets what is left of it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Whether the schema answers introspection; unset: only in `development`.
    pub introspection: Option<bool>,
    /// Whether `/graphiql` serves GraphiQL (from the binary); unset: as introspection.
    pub graphiql: Option<bool>,
    /// Whether fields that load by id (`Product.reviews`, `Review.user`, `OrderItem.product`)
    /// share one backend call per level. `false` makes every id its own call — the N+1
    /// batching exists to avoid — and is there only to measure the difference.
    pub batch_loads: bool,
    /// Answers the gateway keeps for a repeat of the same query by the same client, for
    /// as long as the answer's `Cache-Control` allows (`gateway::graphql::answers`); `0`
    /// keeps none.
    pub answer_cache_entries: u32,
    /// The largest answer kept, in bytes of its `data`.
    pub answer_cache_entry_bytes: u32,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_aliases: 30,
            max_root_fields: 20,
            max_batch: 10,
            max_cost: 1_000,
            bucket_size: 1_000,
            restore_rate: 50,
            timeout: Duration::from_secs(10),
            introspection: None,
            graphiql: None,
            batch_loads: true,
            answer_cache_entries: 512,
            answer_cache_entry_bytes: 128 * 1024,
        }
    }
}

impl GraphqlSettings {
    /// Whether introspection is on under `profile`.
    pub fn introspection(&self, profile: Profile) -> bool {
        self.introspection
            .unwrap_or(profile == Profile::Development)
    }

    /// Whether GraphiQL is served under `profile` (it needs introspection to be useful).
    pub fn graphiql(&self, profile: Profile) -> bool {
        self.graphiql.unwrap_or_else(|| self.introspection(profile))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            seed_demo_data: true,
            shutdown_grace: Duration::from_secs(10),
            max_in_flight: 1024,
            profile: Profile::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
            database: PoolSettings::default(),
            idempotency: IdempotencySettings::default(),
            outbound: OutboundSettings::default(),
            catalog: CatalogSettings::default(),
            orders: OrdersSettings::default(),
            billing: BillingSettings::default(),
            gateway: GatewaySettings::default(),
            identity: IdentitySettings::default(),
            http: HttpSettings::default(),
            messaging: MessagingSettings::default(),
            services: Services::default(),
            slo: SloSettings::default(),
        }
    }
}

/// Service-level objectives: what each service promises, over what window; its error
/// budget and burn rates are derived from them (`telemetry::slo`, `/slo`, `/metrics`,
/// `brigade slo`). The top-level values apply to every service; `[slo.services.<name>]`
/// overrides any of them for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloSettings {
    /// The window the budget is counted over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Percent of requests that must not fail on the service's side (5xx).
    pub availability: f64,
    /// Percent of successful requests that must answer within `latency_threshold`.
    pub latency: f64,
    #[serde(with = "humantime_serde")]
    pub latency_threshold: Duration,
    pub services: std::collections::BTreeMap<ServiceName, SloOverride>,
}

/// One service's departures from the shared objectives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloOverride {
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<f64>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub latency_threshold: Option<Duration>,
}

impl Default for SloSettings {
    /// 99.9 % available and 99 % within 250 ms over 30 days, for every service.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30 * 24 * 3600),
            availability: 99.9,
            latency: 99.0,
            latency_threshold: Duration::from_millis(250),
            services: std::collections::BTreeMap::new(),
        }
    }
}

/// A percentage as the fraction it means, to nine places (99.9 / 100 is
/// 0.9990000000000001 in binary; it reads 0.999).
fn fraction(percent: f64) -> f64 {
    (percent * 1e7).round() / 1e9
}

impl SloSettings {
    /// `service`'s objectives: its overrides over the shared values, as fractions.
    pub fn objectives(&self, service: ServiceName) -> telemetry::slo::Objectives {
        let own = self.services.get(&service).cloned().unwrap_or_default();
        telemetry::slo::Objectives {
            availability: fraction(own.availability.unwrap_or(self.availability)),
            latency: fraction(own.latency.unwrap_or(self.latency)),
            latency_threshold: own.latency_threshold.unwrap_or(self.latency_threshold),
            window: own.window.unwrap_or(self.window),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let check = |prefix: &str,
                     window: Option<Duration>,
                     availability: Option<f64>,
                     latency: Option<f64>,
                     threshold: Option<Duration>| {
            for (name, percent) in [("availability", availability), ("latency", latency)] {
                // 100 % leaves no budget to spend (every burn rate infinite); so does a
                // percentage so close to it that its fraction rounds to 1.
                if percent.is_some_and(|p| !(p > 0.0 && p < 100.0 && fraction(p) < 1.0)) {
                    return Err(invalid(
                        format!("{prefix}{name}"),
                        "must be a percentage in (0, 100): 100 leaves no error budget",
                    ));
                }
            }
            if window.is_some_and(|w| w < Duration::from_secs(3600)) {
                return Err(invalid(
                    format!("{prefix}window"),
                    "must be at least 1h (the burn-rate windows reach 6h)",
                ));
            }
            if threshold.is_some_and(|t| t.is_zero()) {
                return Err(invalid(
                    format!("{prefix}latency_threshold"),
                    "must be greater than zero",
                ));
            }
            Ok(())
        };
        check(
            "slo.",
            Some(self.window),
            Some(self.availability),
            Some(self.latency),
            Some(self.latency_threshold),
        )?;
        for (service, own) in &self.services {
            check(
                &format!("slo.services.{}.", service.config_key()),
                own.window,
                own.availability,
                own.latency,
                own.latency_threshold,
            )?;
        }
        Ok(())
    }
}

/// Traces: OpenTelemetry spans of every request, call, publish and consume, exported
/// over OTLP/gRPC to `otlp_endpoint` (`http://127.0.0.1:4317`); unset (the default):
/// no spans are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// How long one batch of spans may take to export before it is dropped.
    #[serde(with = "humantime_serde")]
    pub otlp_timeout: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: telemetry::LogFormat,
    /// `RUST_LOG` syntax, e.g. `info,sqlx=warn`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: telemetry::LogFormat::Auto,
            filter: "info,sqlx=warn".to_owned(),
        }
    }
}

/// Connection pool settings shared by every service's database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a query waits for a connection; the seed's database row says 1–10 s.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How long start-up waits for a database to answer before giving up with a clear error.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest one statement may run (the seed's database row: 1–10 s): PostgreSQL's
    /// `statement_timeout`; on SQLite, how long a statement waits for another writer's
    /// lock (`busy_timeout`). Past it the statement fails and the request answers 503.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// How long `Idempotency-Key`s are remembered (Stripe keeps them 24 hours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// A key older than this is forgotten: its retry runs as a new request.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// A request still "in flight" after this long is presumed lost with a crashed
    /// process, and a retry may take its key over.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// How often expired keys are purged.
    #[serde(with = "humantime_serde")]
    pub purge_every: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 60 * 60),
            lock_timeout: Duration::from_secs(30),
            purge_every: Duration::from_secs(10 * 60),
        }
    }
}

/// The catalog's read cache of single products (`GET /v1/products/{id}`, `GetProduct`).
/// Writes made by the same process are seen at once; writes by another process sharing
/// the database are seen within `read_cache_ttl`. `0s` turns the cache off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSettings {
    #[serde(with = "humantime_serde")]
    pub read_cache_ttl: Duration,
    /// Most products held at once.
    pub read_cache_capacity: usize,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            read_cache_ttl: Duration::from_secs(1),
            read_cache_capacity: 10_000,
        }
    }
}

/// The orders pipeline: its `order_processing` worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersSettings {
    /// Deliveries of `order_processing` one worker holds unsettled at once (AMQP's
    /// `basic_qos(prefetch_count)`; the seed's fair dispatch is 1).
    pub prefetch: u16,
    /// Workers on `order_processing` in each orders process. 0: this process accepts,
    /// serves and cancels orders but processes none (its workers run in other orders
    /// processes on the same database and broker — an accept tier scaled apart).
    pub workers: u16,
}

impl Default for OrdersSettings {
    fn default() -> Self {
        Self {
            prefetch: 8,
            workers: 4,
        }
    }
}

/// Billing's payment provider: an external SaaS, the seed's 5–30 s timeout class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSettings {
    /// The provider's base URL (`POST {url}/v1/charges`); unset means the payments
    /// sandbox at its configured address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_url: Option<String>,
    /// A call to the provider (a charge, a refund), all of its attempts included; the
    /// event that asked for it is retried later, with the same idempotency key, if it
    /// runs out.
    #[serde(with = "humantime_serde")]
    pub provider_timeout: Duration,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            provider_url: None,
            provider_timeout: Duration::from_secs(10),
        }
    }
}

/// Which messaging backend carries the work queues and event streams, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessagingBackend {
    /// A SQLite file under the data dir (`messaging.db`): no broker needed.
    #[default]
    Embedded,
    /// RabbitMQ over AMQP 0.9.1 (`url`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`).
    Rabbitmq,
    /// NATS JetStream (`url`, e.g. `nats://127.0.0.1:4222`).
    Nats,
    /// Kafka or Redpanda (`url`: bootstrap servers); needs the `kafka` build feature.
    Kafka,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingSettings {
    pub backend: MessagingBackend,
    /// The broker's address; unused by `embedded`. May hold credentials: never logged.
    pub url: Option<String>,
    /// A message delivered this many times without success goes to its dead-letter queue.
    /// A delivery whose handler found a dependency down (its breaker open, or opened by
    /// this very failure) is deferred until the breaker's wait is over and does not count
    /// while the message is younger than `max_defer`: an outage shorter than that leaves
    /// messages waiting rather than dead.
    pub max_deliveries: u32,
    /// How long after a message was made its deferrals stop being free: past it they
    /// count like any failure, so work whose dependency never comes back (or a message
    /// that keeps tripping its dependency's breaker) still reaches the dead-letter queue.
    #[serde(with = "humantime_serde")]
    pub max_defer: Duration,
    /// How long event streams keep events.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Partitions per event stream: how many consumers of one group can share its work.
    pub partitions: u16,
    /// The seed's "async job: 30 s – 5 min": how long a consumer's handler may take with
    /// one message before it is abandoned (and the message redelivered).
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// How long a publish may wait for the backend's confirmation.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How often the outbox relay looks for unsent messages when nothing woke it.
    #[serde(with = "humantime_serde")]
    pub relay_poll: Duration,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        Self {
            backend: MessagingBackend::Embedded,
            url: None,
            max_deliveries: 10,
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            partitions: 4,
            handler_timeout: Duration::from_secs(30),
            max_defer: Duration::from_secs(24 * 60 * 60),
            publish_timeout: Duration::from_secs(5),
            relay_poll: Duration::from_millis(200),
        }
    }
}

/// How services call each other (the `resilience` crate's policy). Defaults follow the
/// seed's timeout table: an in-region internal call gets 200 ms – 2 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSettings {
    /// The whole call's budget, all attempts included (capped by the inbound deadline).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Taken off the inbound request's remaining time for every outbound call.
    #[serde(with = "humantime_serde")]
    pub deadline_margin: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// The breaker's count window (last N calls).
    pub breaker_window: u32,
    /// Calls recorded before failure rates count.
    pub breaker_minimum_calls: u32,
    /// Failure rate (percent) that opens the breaker.
    pub breaker_failure_rate: f64,
    /// How long an open breaker fails fast before letting probes through.
    #[serde(with = "humantime_serde")]
    pub breaker_wait: Duration,
    /// Probes let through when half-open.
    pub breaker_probes: u32,
    /// Calls in flight to one downstream at once.
    pub max_concurrency: usize,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            deadline_margin: Duration::from_millis(10),
            max_attempts: 3,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(1),
            breaker_window: 50,
            breaker_minimum_calls: 10,
            breaker_failure_rate: 50.0,
            breaker_wait: Duration::from_secs(5),
            breaker_probes: 3,
            max_concurrency: 64,
        }
    }
}

/// Why configuration could not be loaded. Each message names the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        // figment's message already names the key path and where the value came from
        // ("... for key `services.catalog.port` in config.toml"); keep its first error.
        ConfigError::Parse(err.to_string())
    }
}

impl Settings {
    /// Defaults, then `file` (when given), then `BRIGADE_*` variables of this process.
    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // BRIGADE_CONFIG names the file itself; it is not a setting.
        Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])))
    }

    /// Extracts and validates settings from any layering (tests build their own).
    pub fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", &err.to_string()));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        self.slo.validate()?;
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL (the collector's OTLP/gRPC port, 4317)",
            ));
        }
        if self.telemetry.otlp_timeout.is_zero() {
            return Err(invalid(
                "telemetry.otlp_timeout",
                "must be greater than zero",
            ));
        }
        let dashboard = &self.gateway.dashboard;
        if dashboard.interval < Duration::from_millis(100) {
            return Err(invalid(
                "gateway.dashboard.interval",
                "must be at least 100ms (each reading scrapes every service)",
            ));
        }
        if dashboard.stream_lifetime < Duration::from_secs(1) {
            return Err(invalid(
                "gateway.dashboard.stream_lifetime",
                "must be at least 1s",
            ));
        }
        if dashboard.interval > Duration::from_secs(3600) {
            return Err(invalid("gateway.dashboard.interval", "must be at most 1h"));
        }
        if dashboard.window < dashboard.interval * 2
            || dashboard.window > Duration::from_secs(86_400)
        {
            return Err(invalid(
                "gateway.dashboard.window",
                "must be at least twice the interval (a window compares two readings) and at most 1d",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.acquire_timeout.is_zero() {
            return Err(invalid(
                "database.acquire_timeout",
                "must be greater than zero",
            ));
        }
        if self.database.connect_timeout.is_zero() {
            return Err(invalid(
                "database.connect_timeout",
                "must be greater than zero",
            ));
        }
        for (key, value) in [
            ("idempotency.ttl", self.idempotency.ttl),
            ("idempotency.lock_timeout", self.idempotency.lock_timeout),
            ("idempotency.purge_every", self.idempotency.purge_every),
            ("outbound.timeout", self.outbound.timeout),
            ("outbound.backoff_base", self.outbound.backoff_base),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        let o = &self.outbound;
        if o.max_attempts == 0 {
            return Err(invalid("outbound.max_attempts", "must be at least 1"));
        }
        if o.breaker_window == 0 || o.breaker_minimum_calls == 0 || o.breaker_probes == 0 {
            return Err(invalid(
                "outbound.breaker_window",
                "breaker counts must be at least 1",
            ));
        }
        if !(0.0..=100.0).contains(&o.breaker_failure_rate) || o.breaker_failure_rate == 0.0 {
            return Err(invalid(
                "outbound.breaker_failure_rate",
                "must be a percentage in (0, 100]",
            ));
        }
        let graphql = &self.gateway.graphql;
        if [
            graphql.max_depth,
            graphql.max_root_fields,
            graphql.max_batch,
            graphql.max_cost,
            graphql.bucket_size,
            graphql.restore_rate,
        ]
        .contains(&0)
            || graphql.timeout.is_zero()
        {
            return Err(invalid(
                "gateway.graphql",
                "max_depth, max_root_fields, max_batch, max_cost, bucket_size, restore_rate and timeout must be above 0",
            ));
        }
        if graphql.max_cost > graphql.bucket_size {
            return Err(invalid(
                "gateway.graphql.max_cost",
                "must not exceed bucket_size (such a query could never run)",
            ));
        }
        let limits = &self.gateway.limits;
        for (key, rate) in [
            ("per_key", &limits.per_key),
            ("anonymous", &limits.anonymous),
        ]
        .into_iter()
        .chain(limits.scopes.iter().map(|(k, r)| (k.as_str(), r)))
        {
            if rate.per_second == 0 || rate.burst == 0 {
                return Err(invalid(
                    &format!("gateway.limits.{key}"),
                    "per_second and burst must be at least 1",
                ));
            }
        }
        if limits.concurrent_per_key == 0 {
            return Err(invalid(
                "gateway.limits.concurrent_per_key",
                "must be at least 1",
            ));
        }
        if limits.write_reserve_percent >= 100 {
            return Err(invalid(
                "gateway.limits.write_reserve_percent",
                "must be below 100 (reads need some room)",
            ));
        }
        if self.http.max_headers == 0 || self.http.max_header_bytes < 8192 {
            return Err(invalid(
                "http",
                "max_headers must be at least 1 and max_header_bytes at least 8192",
            ));
        }
        if self.http.header_read_timeout.is_zero() {
            return Err(invalid(
                "http.header_read_timeout",
                "must be greater than zero",
            ));
        }
        if self.gateway.keys.refresh.is_zero() {
            return Err(invalid("gateway.keys.refresh", "must be greater than zero"));
        }
        if self
            .identity
            .internal_secret
            .as_ref()
            .is_some_and(|s| s.len() < 32)
        {
            return Err(invalid(
                "identity.internal_secret",
                "must be at least 32 characters",
            ));
        }
        if self.identity.token_ttl < Duration::from_secs(2) {
            return Err(invalid("identity.token_ttl", "must be at least 2s"));
        }
        if self.orders.prefetch == 0 {
            return Err(invalid("orders.prefetch", "must be at least 1"));
        }
        if self.billing.provider_timeout.is_zero() {
            return Err(invalid(
                "billing.provider_timeout",
                "must be greater than zero",
            ));
        }
        if o.max_concurrency == 0 {
            return Err(invalid("outbound.max_concurrency", "must be at least 1"));
        }
        let mut seen: Vec<(ServiceName, &ServiceSettings)> = Vec::new();
        for name in ServiceName::ALL {
            let svc = self.services.get(name);
            if let Some((other, _)) = seen
                .iter()
                .find(|(_, s)| svc.port != 0 && s.port == svc.port && s.host == svc.host)
            {
                return Err(invalid(
                    &format!("services.{}.port", name.config_key()),
                    &format!("{} is already the port of {other}", svc.port),
                ));
            }
            seen.push((name, svc));
            let origins = svc.cors_origins_of(name);
            let key = format!("services.{}.cors_origins", name.config_key());
            if origins.len() > 1 && origins.iter().any(|o| o == "*") {
                return Err(invalid(&key, "\"*\" allows every origin: list it alone"));
            }
            if let Some(bad) = origins.iter().find(|o| *o != "*" && !is_origin(o)) {
                return Err(invalid(
                    &key,
                    &format!("{bad:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        Ok(())
    }

    /// Where `service` is reached by the others (its configured host and port).
    pub fn service_url(&self, service: ServiceName) -> String {
        format!("http://{}", self.services.get(service).addr())
    }

    /// Billing's payment provider: `billing.provider_url`, or the payments sandbox.
    pub fn provider_url(&self) -> String {
        match &self.billing.provider_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => self.service_url(ServiceName::PaymentsSandbox),
        }
    }

    /// The embedded messaging backend's file.
    pub fn messaging_path(&self) -> PathBuf {
        self.data_dir.join("messaging.db")
    }

    /// The database of `service`: its configured URL, or a SQLite file in the data dir.
    pub fn database_url(&self, service: ServiceName) -> DatabaseUrl {
        match &self.services.get(service).database_url {
            Some(url) => url.clone(),
            None => DatabaseUrl::sqlite_file(&self.data_dir.join(format!("{service}.db"))),
        }
    }
}

#[cfg(test)]
mod tests;

/// `scheme://host[:port]` as a browser sends it in `Origin`: http or https, a host, no
/// path, query or trailing slash.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, port)| {
        if port.parse::<u16>().is_ok() {
            host
        } else {
            ""
        }
    });
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}
