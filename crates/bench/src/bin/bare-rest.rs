//! `bare-rest`: the baseline of `bench/rest.sh`. A plain axum server, no middleware, that
//! serves from memory the exact bytes a running Brigade catalog returns for
//! `GET /v1/products/1`, `GET /v1/products?limit=50` and, with `--crawl`, every later page
//! of products (following `next_cursor`) and the first page of reviews of products
//! `1..=--reviews-of`: all fetched once at start-up, each with the same `Content-Type` and
//! `ETag`. A page is found by its exact query string. Listens on loopback only.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use clap::Parser;

/// Serve Brigade's product bodies from memory, with no middleware.
#[derive(Debug, Parser)]
#[command(name = "bare-rest")]
struct Args {
    /// The running Brigade catalog to copy the bodies from, e.g. http://127.0.0.1:9081.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The loopback port to listen on (0 picks a free one; the chosen URL is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Copy every page of products, not only the first.
    #[arg(long)]
    crawl: bool,
    /// Copy `/v1/products/{id}/reviews?limit=50` of products 1 to this.
    #[arg(long, default_value_t = 0)]
    reviews_of: i64,
    /// Write the paths copied (`products.paths`, `reviews.paths`, one a line) into this
    /// directory, for a load generator to spread its requests over.
    #[arg(long, value_name = "DIR")]
    write_paths: Option<std::path::PathBuf>,
}

/// One response copied from Brigade: its body bytes and the headers that describe them.
#[derive(Clone)]
struct Canned {
    content_type: HeaderValue,
    etag: Option<HeaderValue>,
    body: Bytes,
}

impl IntoResponse for Canned {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::OK, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type);
        if let Some(etag) = self.etag {
            headers.insert(header::ETAG, etag);
        }
        response
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<Canned> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if response.status() != reqwest::StatusCode::OK {
        bail!("GET {url} answered {}", response.status());
    }
    let headers = response.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .with_context(|| format!("GET {url} has no Content-Type"))?;
    let etag = headers.get(header::ETAG).cloned();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("reading the body of GET {url}"))?;
    Ok(Canned {
        content_type,
        etag,
        body,
    })
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
            eprintln!("bare-rest: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let from = args.from.trim_end_matches('/');
    let client = reqwest::Client::new();
    let one = fetch(&client, &format!("{from}/v1/products/1")).await?;

    // Pages of products by query string, following `next_cursor` with --crawl.
    let mut pages = HashMap::new();
    let mut product_paths = Vec::new();
    let mut query = "limit=50".to_owned();
    loop {
        let path = format!("/v1/products?{query}");
        let page = fetch(&client, &format!("{from}{path}")).await?;
        let next = serde_json::from_slice::<serde_json::Value>(&page.body)
            .with_context(|| format!("GET {path} is not JSON"))?["next_cursor"]
            .as_str()
            .map(str::to_owned);
        product_paths.push(path);
        pages.insert(query, page);
        match next {
            Some(cursor) if args.crawl => query = format!("limit=50&cursor={cursor}"),
            _ => break,
        }
    }
    let mut reviews = HashMap::new();
    let mut review_paths = Vec::new();
    for id in 1..=args.reviews_of {
        let path = format!("/v1/products/{id}/reviews?limit=50");
        reviews.insert(id, fetch(&client, &format!("{from}{path}")).await?);
        review_paths.push(path);
    }
    if let Some(dir) = &args.write_paths {
        for (name, paths) in [("products", &product_paths), ("reviews", &review_paths)] {
            let file = dir.join(format!("{name}.paths"));
            std::fs::write(&file, paths.join("\n") + "\n")
                .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    let pages = Arc::new(pages);
    let reviews = Arc::new(reviews);

    let app = Router::new()
        .route(
            "/v1/products/{id}",
            get(move |Path(id): Path<i64>| {
                let one = one.clone();
                async move {
                    if id == 1 {
                        one.into_response()
                    } else {
                        StatusCode::NOT_FOUND.into_response()
                    }
                }
            }),
        )
        .route(
            "/v1/products",
            get(move |RawQuery(query): RawQuery| {
                let page = query.and_then(|q| pages.get(&q).cloned());
                async move {
                    page.map_or(
                        StatusCode::NOT_FOUND.into_response(),
                        IntoResponse::into_response,
                    )
                }
            }),
        )
        .route(
            "/v1/products/{id}/reviews",
            get(move |Path(id): Path<i64>, RawQuery(query): RawQuery| {
                let page = (query.as_deref() == Some("limit=50"))
                    .then(|| reviews.get(&id).cloned())
                    .flatten();
                async move {
                    page.map_or(
                        StatusCode::NOT_FOUND.into_response(),
                        IntoResponse::into_response,
                    )
                }
            }),
        );

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    let addr = listener.local_addr()?;
    println!("bare-rest serving http://{addr}");
    // TCP_NODELAY, as Brigade sets it (and tonic, for bare-grpc, by default). axum 0.8's
    // `serve` leaves Nagle on, which on HTTP/2 (h2load's REST rows) coalesced a
    // connection's responses into fewer segments: the comparison measured the socket
    // option, not the request path (BENCHMARKS.md, REST over HTTP/2).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            eprintln!("bare-rest: TCP_NODELAY: {err}");
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}
