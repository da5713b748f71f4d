//! `grpc-load`: a small tonic client for `bench/grpc.sh`. Two jobs:
//!
//! * `--once`: make one call and print what came back, one line per message: the protobuf
//!   bytes in hex (the script compares Brigade's answer with `bare-grpc`'s, so the
//!   benchmark is known to compare servers that send the same messages). Exits non-zero on
//!   any status but OK.
//! * otherwise: a closed-loop load: `--concurrency` tasks share `--connections` HTTP/2
//!   connections (one tonic `Channel` each) and call back to back for `--duration`
//!   seconds; prints one line `calls=N failures=F seconds=S calls_per_s=X`. Every answer is
//!   checked (status OK; a stream must bring `--page-size` messages), so a server that
//!   fails fast cannot look fast.
//!
//! `bench/grpc.sh` drives the measured load with h2load (a C client that costs the
//! machine less per call, see the script); this client is its cross-check
//! (`BENCH_CLIENT=grpc-load`) and what a Rust caller of the service would see.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use prost::Message;
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::{ProductRequest, ProductResponse};
use tonic::transport::{Channel, Endpoint};

#[path = "shared/pages.rs"]
mod pages;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Call {
    /// `GetProduct {product_id: --id}` (unary).
    Get,
    /// `ListProducts {page_size: --page-size}` (server stream).
    List,
    /// `ListProducts {page_size: --page-size, page_token}`, each call asking for the next
    /// of the catalog's pages (round robin over all of them, crawled once before the load),
    /// so that no cache of one page can stand in for the database. Each stream must bring
    /// the whole page. With `--once`, every page's messages, in order.
    Spread,
}

/// Call a Brigade-shaped ProductService over loopback, once or in a closed loop.
#[derive(Debug, Parser)]
#[command(name = "grpc-load")]
struct Args {
    /// The server, e.g. http://127.0.0.1:9081.
    #[arg(long, value_name = "URL")]
    url: String,
    #[arg(long, value_enum)]
    call: Call,
    /// The product GetProduct asks for.
    #[arg(long, default_value_t = 1)]
    id: i32,
    /// The page_size ListProducts asks for; the stream must bring exactly this many.
    #[arg(long, default_value_t = 50)]
    page_size: i32,
    /// Make one call and print the messages (hex), instead of loading the server.
    #[arg(long)]
    once: bool,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at any moment (tasks), spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to keep calling.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Multi-threaded, one worker per CPU this process may run on (the script pins it).
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpc-load: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a URL"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// One call (`ListProducts` with `token`, if it is a list); the messages it brought back.
async fn call(
    client: &mut ProductServiceClient<Channel>,
    args: &Args,
    token: &str,
) -> Result<Vec<ProductResponse>, tonic::Status> {
    match args.call {
        Call::Get => {
            let response = client
                .get_product(ProductRequest {
                    product_id: args.id,
                })
                .await?;
            Ok(vec![response.into_inner()])
        }
        Call::List | Call::Spread => {
            let page = pages::list(client, args.page_size, token).await?;
            if page.len() != usize::try_from(args.page_size).unwrap_or(0) {
                return Err(tonic::Status::data_loss(format!(
                    "streamed {} products, asked for {}",
                    page.len(),
                    args.page_size
                )));
            }
            Ok(page)
        }
    }
}

/// The page tokens the calls go through: the first page's for `get` and `list`, every
/// whole page's for `spread`.
async fn tokens(args: &Args) -> anyhow::Result<Arc<[String]>> {
    if args.call != Call::Spread {
        return Ok(Arc::from([String::new()]));
    }
    let size = usize::try_from(args.page_size).context("--page-size must not be negative")?;
    let mut client = ProductServiceClient::new(connect(&args.url).await?);
    let tokens: Vec<String> = pages::crawl(&mut client, size, &args.url)
        .await?
        .into_iter()
        .filter(|(_, page)| page.len() == size)
        .map(|(token, _)| token)
        .collect();
    if tokens.is_empty() {
        bail!("{} has no whole page of {size} products", args.url);
    }
    Ok(tokens.into())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tokens = tokens(&args).await?;
    if args.once {
        let mut client = ProductServiceClient::new(connect(&args.url).await?);
        for token in tokens.iter() {
            let messages = call(&mut client, &args, token)
                .await
                .with_context(|| format!("{:?} {token:?} on {}", args.call, args.url))?;
            for message in messages {
                let hex: String = message
                    .encode_to_vec()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                println!("{hex}");
            }
        }
        return Ok(());
    }

    if args.connections == 0 || args.concurrency == 0 || args.duration <= 0.0 {
        bail!("--connections, --concurrency and --duration must be positive");
    }
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(connect(&args.url).await?);
    }
    let args = Arc::new(args);
    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let mut client = ProductServiceClient::new(channels[i % channels.len()].clone());
        let (args, tokens, calls, failures, first_error) = (
            Arc::clone(&args),
            Arc::clone(&tokens),
            Arc::clone(&calls),
            Arc::clone(&failures),
            Arc::clone(&first_error),
        );
        tasks.spawn(async move {
            // Each task starts at another page, so the pages in flight differ.
            let mut next = i;
            while Instant::now() < end {
                let token = &tokens[next % tokens.len()];
                next += 1;
                match call(&mut client, &args, token).await {
                    Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert_with(|| status.to_string());
                        }
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a load task panicked")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let calls = calls.load(Ordering::Relaxed);
    let failures = failures.load(Ordering::Relaxed);
    println!(
        "calls={calls} failures={failures} seconds={seconds:.3} calls_per_s={:.1}",
        calls as f64 / seconds
    );
    if let Ok(first) = first_error.lock()
        && let Some(first) = first.as_ref()
    {
        eprintln!("grpc-load: first failure: {first}");
    }
    Ok(())
}
