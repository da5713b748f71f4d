//! The command line. Flags override the configuration file and `BRIGADE_*` variables.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use settings::ServiceName;

/// Brigade: an e-commerce backend (catalog, accounts, orders, billing, gateway) whose
/// services talk REST, gRPC, GraphQL and messaging, in one small binary.
///
/// Configuration is layered: built-in defaults, then the TOML file given by --config
/// (or BRIGADE_CONFIG), then BRIGADE_* environment variables with `__` between levels
/// (BRIGADE_SERVICES__CATALOG__PORT=9081), then these flags.
#[derive(Debug, Parser)]
#[command(name = "brigade", version, propagate_version = true)]
pub struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, env = "BRIGADE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every service in this process, each on its own port (gateway 8080, catalog
    /// 8081, accounts 8082, orders 8083, billing 8084), until SIGINT or SIGTERM.
    ///
    /// A new data directory is filled with demo data first (the seed's Laptop and Mouse
    /// plus generated products, users and reviews) unless --no-seed is given.
    Up(UpArgs),
    /// Run one service in this process, until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Load the deterministic demo data into the catalog and accounts databases
    /// (does nothing to a database that already has data).
    Seed(SeedArgs),
    /// Print each REST service's OpenAPI 3.1 document, or with --write refresh the
    /// committed copies (`openapi/<service>.json`) that the tests compare with the code.
    Openapi(OpenapiArgs),
    /// Print the AsyncAPI 3.0 document of every queue and stream, or with --write refresh
    /// the committed copy (`asyncapi/brigade.json`) that the tests compare with the code.
    Asyncapi(AsyncapiArgs),
    /// Print the gateway's GraphQL schema (SDL) or a service's subgraph, or with --write
    /// refresh the committed copies (`graphql/schema.graphql` and
    /// `graphql/subgraphs/<service>.graphql`) that the tests compare with the code.
    Graphql(GraphqlArgs),
    /// Look at a work queue's dead letters, or put them back on the queue.
    Dlq(DlqArgs),
    /// Watch an event stream.
    Events(EventsArgs),
    /// Rebuild a projection from its event stream.
    Replay(ReplayArgs),
    /// Make, list, revoke and roll the API keys the gateway takes (`Authorization:
    /// Bearer <key>`). A key is printed once, when it is made; only its hash is kept.
    Keys(KeysArgs),
    /// Print an internal identity token, for calling a service directly as the gateway
    /// would (a federation router in front of the subgraphs, a debugging session).
    InternalToken(InternalTokenArgs),
    /// Print each running service's error budget: its objectives, the budget left over
    /// the SLO window, the burn rates over 5m, 30m, 1h and 6h, and whether the SRE
    /// workbook's page (1h and 5m above 14.4) or ticket (6h and 30m above 6) alert fires.
    /// Asks every service at its configured address (`/slo`).
    Slo(SloArgs),
}

#[derive(Debug, Args)]
pub struct SloArgs {
    /// Print the services' reports as one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a key: a secret key (every scope) without --scopes, else a restricted key.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: catalog:write, accounts:read, accounts:write, orders:read,
        /// orders:write, billing:read.
        #[arg(long, value_name = "SCOPES")]
        scopes: Option<String>,
    },
    /// Every key (never the key itself: its prefix and last four characters).
    List,
    /// Revoke a key by id; the gateway stops taking it within `gateway.keys.refresh`.
    Revoke { id: String },
    /// Make a new key with the same name and scopes; the old one expires after --expire-in.
    Roll {
        id: String,
        /// How long the old key keeps working (e.g. 1h); 0s: at once.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
        expire_in: std::time::Duration,
    },
}

#[derive(Debug, Args)]
pub struct InternalTokenArgs {
    /// The client the token acts for (its idempotency keys are scoped to it).
    #[arg(long, default_value = "internal")]
    pub client: String,
    /// How long it is valid (at most 30 days: a token cannot be revoked, only the key
    /// that signs it replaced).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = ttl)]
    pub ttl: std::time::Duration,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Args)]
pub struct AsyncapiArgs {
    /// Write the document instead of printing it.
    #[arg(long)]
    pub write: bool,
    /// Where --write puts it.
    #[arg(long, value_name = "FILE", default_value = "asyncapi/brigade.json")]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List a queue's dead letters, oldest first, one JSON object per line.
    List {
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move dead letters back onto their queue, with a fresh delivery count.
    Redrive {
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub action: EventsAction,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Print a stream's events as they come, one JSON envelope per line, until Ctrl-C.
    Tail {
        stream: String,
        /// Read as this consumer group: its position is committed, so the next tail
        /// resumes where this one stopped. Without it, a new group `tail-<uuid>` is made
        /// for this run (and left behind on the backend: name one to reuse it).
        #[arg(long)]
        group: Option<String>,
        /// Where a new group starts (and, with --replay, where an existing one restarts):
        /// `earliest`, `latest`, a position (a number) or an RFC 3339 time.
        #[arg(long, default_value = "latest")]
        from: String,
        /// Move an existing group back (or forward) to --from first: replay.
        #[arg(long)]
        replay: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(subcommand)]
    pub projection: ReplayProjection,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum ReplayProjection {
    /// Rebuild billing's analytics projection (orders and revenue per product) from
    /// `order-events`: empty its tables in billing's database (one transaction), then
    /// move consumer group `analytics` to --from. Billing's analytics member (running now,
    /// or when billing next starts) applies the stream again, to the same result.
    ///
    /// Safest with billing stopped. With billing running, a member may commit an event it
    /// took before the reset: the projection still ends the same (the clear and each
    /// event's write are serialized, and the projection depends only on which events were
    /// applied), and the embedded store, RabbitMQ and NATS discard that member's late
    /// stream commit. Kafka refuses to reset a group with a member in another process: the
    /// command then fails after the clear; stop billing and run it again.
    Analytics {
        /// Where the group restarts: `earliest` (a full rebuild), `latest`, a position (a
        /// number) or an RFC 3339 time. Anything but `earliest` rebuilds from that point
        /// only, leaving out what came before.
        #[arg(long, default_value = "earliest")]
        from: String,
    },
}

#[derive(Debug, Args)]
pub struct GraphqlArgs {
    /// Write the SDL instead of printing it.
    #[arg(long)]
    pub write: bool,
    /// Where --write puts it; the subgraphs go to `subgraphs/` beside it.
    #[arg(long, value_name = "FILE", default_value = "graphql/schema.graphql")]
    pub path: PathBuf,
    /// Print this service's subgraph (catalog, accounts or orders: the services that
    /// own data) instead: what a federation router composes.
    #[arg(long, value_name = "SERVICE", conflicts_with = "write")]
    pub subgraph: Option<String>,
}

#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// Write `<dir>/<service>.json` for every REST service instead of printing.
    #[arg(long)]
    pub write: bool,
    /// Where --write puts the documents.
    #[arg(long, value_name = "DIR", default_value = "openapi")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Where the services keep their SQLite files [default: ./data].
    // Global, so `brigade events tail <stream> --data-dir X` works after a sub-subcommand.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Do not load demo data into a new data directory.
    #[arg(long)]
    pub no_seed: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub service: ServiceArg,
    #[command(flatten)]
    pub data: DataDirArg,
    /// The port to listen on (0 picks a free one) [default: the service's port].
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// How many products (the first two are the seed's Laptop and Mouse).
    #[arg(long, default_value_t = 3_000)]
    pub products: usize,
    /// How many users (the first is Jane Doe).
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// How many reviews, spread over the products and users.
    #[arg(long, default_value_t = 6_000)]
    pub reviews: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ServiceArg {
    Gateway,
    Catalog,
    Accounts,
    Orders,
    Billing,
    /// The sandbox payment provider (Stripe-shaped) billing charges through.
    PaymentsSandbox,
}

impl From<ServiceArg> for ServiceName {
    fn from(arg: ServiceArg) -> Self {
        match arg {
            ServiceArg::Gateway => ServiceName::Gateway,
            ServiceArg::Catalog => ServiceName::Catalog,
            ServiceArg::Accounts => ServiceName::Accounts,
            ServiceArg::Orders => ServiceName::Orders,
            ServiceArg::Billing => ServiceName::Billing,
            ServiceArg::PaymentsSandbox => ServiceName::PaymentsSandbox,
        }
    }
}

/// A token's life: a duration of at most 30 days.
fn ttl(raw: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if ttl > std::time::Duration::from_secs(30 * 86_400) {
        return Err("at most 30 days".to_owned());
    }
    Ok(ttl)
}
