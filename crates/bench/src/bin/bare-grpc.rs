//! `bare-grpc`: the baseline of `bench/grpc.sh`. A plain tonic server
//! (`tonic::transport::Server` with its defaults, no middleware, no REST beside it) that
//! serves from memory the messages a running Brigade catalog returns for
//! `ProductService/GetProduct {product_id: 1}` and `ProductService/ListProducts
//! {page_size: 50}` (fetched once at start-up over gRPC). It uses the same generated
//! server and codec (`proto::codec::BrigadeCodec`) as Brigade, so the two differ only in
//! what sits between the socket and the handler, and in where the data comes from.
//! Listens on loopback only.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use proto::v1::product_service_server::ProductServiceServer;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

#[path = "shared/canned.rs"]
mod canned;
#[path = "shared/pages.rs"]
mod pages;

/// Serve Brigade's product messages from memory with a plain tonic server.
#[derive(Debug, Parser)]
#[command(name = "bare-grpc")]
struct Args {
    /// The running Brigade catalog to copy the messages from, e.g. http://127.0.0.1:9081.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The loopback port to listen on (0 picks a free one; the chosen URL is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// TCP_NODELAY on accepted connections. tonic's `Server::serve` sets it (its
    /// default); `--tcp-nodelay false` shows what leaving Nagle on costs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tcp_nodelay: bool,
}

/// The same allocator as `brigade`, so the comparison is of the request path only.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // The same runtime as `brigade` (multi-threaded, one worker per CPU it may run on), so
    // the comparison is of the request path only.
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bare-grpc: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let from = args.from.trim_end_matches('/');
    let canned = canned::fetch(from).await?;

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    let addr = listener.local_addr()?;
    // `serve_with_incoming` ignores the builder's TCP options, so set on the listener
    // what `Server::serve(addr)` would (TCP_NODELAY on, no keepalive).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(args.tcp_nodelay));
    println!("bare-grpc serving http://{addr}");
    Server::builder()
        .add_service(ProductServiceServer::new(canned))
        .serve_with_incoming(incoming)
        .await
        .context("serving")?;
    Ok(())
}
