//! `grpc-layers`: where Brigade's gRPC read path spends its time, one layer at a time
//! (`BENCH_LAYERS=1 bench/grpc.sh` measures these beside Brigade and `bare-grpc`).
//!
//! `serve --variant`:
//! * `plain-memory`: the from-memory service of `bare-grpc` behind catalog's gRPC face
//!   wrapping (`server::grpc::face`: tonic-web, deadline) on `axum::serve`, as Brigade
//!   hosts it, but without the shared middleware stack: tonic's server vs axum's hosting.
//! * `hosted-memory`: the same service hosted exactly as Brigade hosts a service
//!   (`server::Application::build`: the shared stack, health, reflection, metrics, the
//!   same logging): Brigade minus its database.
//!
//! So bare-grpc → plain-memory → hosted-memory → brigade adds one layer at each step:
//! axum's hosting and the face's wrapping, then the shared stack, then the database.
//!
//! `sqlite`: the catalog's own queries in a loop on a pool configured like
//! `storage::Database` (the same PRAGMAs, 8 connections), with sqlx's
//! `test_before_acquire` on (sqlx's default, and so Brigade's) and off, to price the
//! connection check sqlx makes on every acquire: queries/s, CPU per query and thread
//! context switches per query. The queries: GetProduct's (`get_product`), the one
//! ListProducts(page_size 50) makes (`list_products` of a whole stream batch, 200 rows),
//! and the same for only the 50 rows the page needs.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use proto::v1::product_service_server::ProductServiceServer;
use settings::ServiceName;
use storage::sqlx::Executor;
use storage::sqlx::any::{AnyPoolOptions, install_default_drivers};

#[path = "shared/canned.rs"]
mod canned;
#[path = "shared/pages.rs"]
mod pages;

#[derive(Debug, Parser)]
#[command(name = "grpc-layers")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one variant on loopback (the chosen URL is printed).
    Serve {
        #[arg(long, value_enum)]
        variant: Variant,
        /// The running Brigade catalog to copy the messages from.
        #[arg(long, value_name = "URL")]
        from: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Price sqlx's connection check: GetProduct's query in a loop, with and without it.
    Sqlite {
        /// A seeded data directory (its catalog.db).
        #[arg(long)]
        data_dir: PathBuf,
        /// Concurrent tasks querying.
        #[arg(long, default_value_t = 64)]
        tasks: usize,
        /// Seconds per query and setting.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

/// The database work of one call.
#[derive(Debug, Clone, Copy)]
enum Query {
    /// GetProduct: one product by id.
    Get,
    /// ListProducts: the first `n` products.
    List(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    PlainMemory,
    HostedMemory,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The same runtime as `brigade`.
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpc-layers: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve {
            variant,
            from,
            port,
        } => serve(variant, &from, port).await,
        Command::Sqlite {
            data_dir,
            tasks,
            seconds,
        } => {
            for query in [Query::Get, Query::List(200), Query::List(50)] {
                for check in [true, false] {
                    sqlite(&data_dir, query, tasks, seconds, check).await?;
                }
            }
            Ok(())
        }
    }
}

fn memory_face(canned: canned::Canned) -> axum::Router {
    server::grpc::face(
        server::grpc::GrpcRoutes::new().add_service(ProductServiceServer::new(canned)),
    )
}

async fn serve(variant: Variant, from: &str, port: u16) -> anyhow::Result<()> {
    let canned = canned::fetch(from.trim_end_matches('/')).await?;
    match variant {
        Variant::PlainMemory => {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .await
                    .with_context(|| format!("binding 127.0.0.1:{port}"))?;
            println!(
                "grpc-layers {variant:?} serving http://{}",
                listener.local_addr()?
            );
            axum::serve(listener, memory_face(canned)).await?;
        }
        Variant::HostedMemory => {
            // Brigade's hosting, down to its logging; a scratch database for /readyz.
            let (settings_, _dir) = brigade_like_settings(port)?;
            telemetry::init_logging(settings_.log.format, &settings_.log.filter)?;
            let db = storage::Database::open(
                &settings_.database_url(ServiceName::Catalog),
                &settings_.database,
                catalog::ALL_MIGRATIONS,
            )
            .await?;
            let app = server::Application::build(
                ServiceName::Catalog,
                &settings_,
                db,
                memory_face(canned),
            )
            .await?;
            println!(
                "grpc-layers {variant:?} serving http://{}",
                app.local_addr()
            );
            // Until SIGTERM (as `bench/grpc.sh` stops it), so the scratch directory goes too.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("listening for SIGTERM")?;
            app.run_until_stopped(async move {
                term.recv().await;
            })
            .await?;
        }
    }
    Ok(())
}

/// What `bench/grpc.sh` gives Brigade: defaults (the shipped log filter, or
/// BENCH_LOG_FILTER when set and not empty), JSON logs, the given port, a scratch data
/// directory.
fn brigade_like_settings(port: u16) -> anyhow::Result<(settings::Settings, tempfile::TempDir)> {
    let mut s = settings::Settings::default();
    s.services.catalog.port = port;
    s.log.format = telemetry::LogFormat::Json;
    if let Ok(filter) = std::env::var("BENCH_LOG_FILTER")
        && !filter.is_empty()
    {
        s.log.filter = filter;
    }
    let dir = tempfile::tempdir().context("creating a scratch data directory")?;
    s.data_dir = dir.path().to_owned();
    Ok((s, dir))
}

/// Sum of voluntary and involuntary context switches of every thread of this process.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// utime+stime of this process, in seconds.
fn process_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat
        .rsplit_once(") ")
        .context("unexpected /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // CLK_TCK is 100 on Linux.
    Ok(ticks / 100.0)
}

async fn sqlite(
    dir: &std::path::Path,
    query: Query,
    tasks: usize,
    seconds: f64,
    check: bool,
) -> anyhow::Result<()> {
    install_default_drivers();
    let url = settings::DatabaseUrl::sqlite_file(&dir.join("catalog.db"));
    // As storage::Database::connect builds it, but for test_before_acquire.
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(check)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(url.expose())
        .await
        .context("opening the catalog")?;
    let queries = Arc::new(AtomicU64::new(0));
    let run_for = |d: f64| {
        let end = Instant::now() + Duration::from_secs_f64(d);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (pool, queries) = (pool.clone(), Arc::clone(&queries));
            set.spawn(async move {
                while Instant::now() < end {
                    let mut conn = pool.acquire().await?;
                    let rows = match query {
                        Query::Get => {
                            catalog::store::get_product(&mut conn, catalog::domain::ProductId(1))
                                .await?
                                .map_or(0, |_| 1)
                        }
                        Query::List(n) => catalog::store::list_products(&mut conn, None, n)
                            .await?
                            .len(),
                    };
                    anyhow::ensure!(rows > 0, "{query:?} found nothing");
                    queries.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        set
    };
    // Warm up (opens the connections), then measure.
    let mut warm = run_for(0.5);
    while let Some(r) = warm.join_next().await {
        r??;
    }
    queries.store(0, Ordering::Relaxed);
    let (cpu0, cs0, t0) = (process_cpu()?, context_switches(), Instant::now());
    let mut set = run_for(seconds);
    while let Some(r) = set.join_next().await {
        r??;
    }
    let (cpu, cs, wall) = (
        process_cpu()? - cpu0,
        context_switches() - cs0,
        t0.elapsed().as_secs_f64(),
    );
    let n = queries.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "{:<20} test_before_acquire={check:<5}  {:>8.0} queries/s  {:>6.1} µs CPU/query  {:>4.1} context switches/query  ({tasks} tasks, {wall:.1} s)",
        match query {
            Query::Get => "get_product(1)".to_owned(),
            Query::List(n) => format!("list_products({n})"),
        },
        n / wall,
        cpu / n * 1e6,
        cs as f64 / n
    );
    pool.close().await;
    Ok(())
}
