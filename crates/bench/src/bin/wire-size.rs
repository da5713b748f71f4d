//! `wire-size`: JSON vs protobuf on Brigade's own data (issue 4, the seed's "REST vs gRPC"
//! table). For product 1 and for a page of 50 products it prints the bytes of
//!
//! * the REST body, exactly as Brigade's REST face serializes it (`ProductView`: id, name,
//!   price, stock, created_at, updated_at; a page is `{"items": [...], "next_cursor": ...}`),
//! * the same JSON with only the four fields the proto carries (to tell the format's cost
//!   from the content's: `ProductResponse` has no timestamps),
//! * the protobuf `ProductResponse`; for the page, the 50 messages as `ListProducts`
//!   streams them (each behind its 5-byte gRPC frame header) and, for comparison, one
//!   message holding them as a `repeated` field (`BatchGetProductsResponse`),
//!
//! and the CPU time of encoding and of decoding each (serde_json `to_vec`/`from_slice`
//! vs prost `encode_to_vec`/`decode`), per operation. The time is the thread's own CPU
//! time (`/proc/thread-self/schedstat`, nanoseconds) over batches of many iterations; the
//! median batch is reported, so a batch that lost the CPU to another process does not
//! count.
//!
//! The data: by default a fresh catalog seeded in a temporary directory by the same code
//! as `brigade seed` (its first 51 products are the same whatever the count); no server
//! is needed. With `--from URL` it is read from a running Brigade catalog instead, and
//! the program checks that its JSON is byte for byte Brigade's REST body and its
//! messages are Brigade's gRPC messages.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use catalog::domain::Product;
use clap::Parser;
use prost::Message;
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::{BatchGetProductsResponse, ListProductsRequest, ProductRequest, ProductResponse};
use serde::{Deserialize, Serialize};

/// Bytes and encode/decode CPU time of JSON vs protobuf for one product and a page of 50.
#[derive(Debug, Parser)]
#[command(name = "wire-size")]
struct Args {
    /// Read the products from this running Brigade catalog (REST and gRPC on one port,
    /// e.g. http://127.0.0.1:9081) and check the encodings against its answers.
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// Batches per measurement; the median batch is reported.
    #[arg(long, default_value_t = 21)]
    batches: u32,
    /// Target CPU time of one batch, in milliseconds.
    #[arg(long, default_value_t = 20)]
    batch_ms: u64,
}

const PAGE: usize = 50;

/// Brigade's REST `ProductView`, field for field and in the same order (serde writes
/// fields in declaration order), so the bytes are the REST body's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProductJson {
    id: i64,
    name: String,
    price: f64,
    stock: i64,
    created_at: String,
    updated_at: String,
}

/// Brigade's REST `Page<ProductView>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PageJson<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// The same JSON shape limited to the proto's four fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProductJson4 {
    id: i64,
    name: String,
    price: f64,
    stock: i64,
}

impl From<&ProductJson> for ProductJson4 {
    fn from(p: &ProductJson) -> Self {
        ProductJson4 {
            id: p.id,
            name: p.name.clone(),
            price: p.price,
            stock: p.stock,
        }
    }
}

/// As catalog's gRPC face builds it (`catalog::grpc::product_message`).
fn message(p: &ProductJson) -> anyhow::Result<ProductResponse> {
    Ok(ProductResponse {
        id: i32::try_from(p.id).context("id exceeds int32")?,
        name: p.name.clone(),
        price: p.price,
        stock: i32::try_from(p.stock).context("stock exceeds int32")?,
    })
}

/// As catalog's REST face builds it (`ProductView::from`).
fn view(p: &Product) -> ProductJson {
    ProductJson {
        id: p.id.0,
        name: p.name.as_str().to_owned(),
        price: p.price.to_decimal(),
        stock: p.stock.units(),
        created_at: server::rest::rfc3339(p.created_at),
        updated_at: server::rest::rfc3339(p.updated_at),
    }
}

/// Product 1 and the first page, from a fresh seeded catalog in a temporary directory.
async fn seeded() -> anyhow::Result<(ProductJson, PageJson<ProductJson>)> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let url = settings::DatabaseUrl::sqlite_file(&dir.path().join("catalog.db"));
    let db = storage::Database::open(
        &url,
        &settings::PoolSettings::default(),
        catalog::ALL_MIGRATIONS,
    )
    .await
    .context("opening a temporary catalog")?;
    let store = catalog::CatalogStore::new(db.clone());
    // One more than a page, so the page links to the next one as it does on real data.
    catalog::seed::seed(&store, PAGE + 1, 0, 0)
        .await
        .context("seeding")?;
    let one = store
        .product(catalog::domain::ProductId(1))
        .await
        .context("reading product 1")?
        .context("the seed has no product 1")?;
    let rows = store
        .products(None, PAGE as u32 + 1)
        .await
        .context("reading the first page")?;
    db.close().await;
    let page = server::rest::Page::from_rows(rows, PAGE as u32, |p| p.id.0, |p| view(&p));
    Ok((
        view(&one),
        PageJson {
            items: page.items,
            next_cursor: page.next_cursor,
        },
    ))
}

async fn get_body(client: &reqwest::Client, url: &str) -> anyhow::Result<bytes::Bytes> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status() == reqwest::StatusCode::OK,
        "GET {url} answered {}",
        response.status()
    );
    response
        .bytes()
        .await
        .with_context(|| format!("reading GET {url}"))
}

/// Product 1 and the first page from a running catalog, checked against both its faces.
async fn fetched(from: &str) -> anyhow::Result<(ProductJson, PageJson<ProductJson>)> {
    let client = reqwest::Client::new();
    let one_body = get_body(&client, &format!("{from}/v1/products/1")).await?;
    let page_body = get_body(&client, &format!("{from}/v1/products?limit={PAGE}")).await?;
    let one: ProductJson = serde_json::from_slice(&one_body).context("parsing product 1")?;
    let page: PageJson<ProductJson> =
        serde_json::from_slice(&page_body).context("parsing the page")?;
    ensure!(
        serde_json::to_vec(&one)? == one_body,
        "our JSON for product 1 differs from Brigade's REST body"
    );
    ensure!(
        serde_json::to_vec(&page)? == page_body,
        "our JSON for the page differs from Brigade's REST body"
    );
    ensure!(
        page.items.len() == PAGE,
        "the REST page has {} items",
        page.items.len()
    );

    let channel = tonic::transport::Channel::from_shared(from.to_owned())
        .with_context(|| format!("{from} is not a URL"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {from}"))?;
    let mut grpc = ProductServiceClient::new(channel);
    let one_message = grpc
        .get_product(ProductRequest { product_id: 1 })
        .await
        .context("GetProduct(1)")?
        .into_inner();
    ensure!(
        one_message == message(&one)?,
        "GetProduct(1) differs from the REST body's fields"
    );
    let mut stream = grpc
        .list_products(ListProductsRequest {
            page_size: PAGE as i32,
            page_token: String::new(),
        })
        .await
        .context("ListProducts")?
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(m) = stream.message().await.context("reading ListProducts")? {
        streamed.push(m);
    }
    let expected = page
        .items
        .iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        streamed == expected,
        "ListProducts(page_size {PAGE}) differs from the REST page"
    );
    Ok((one, page))
}

/// The calling thread's CPU time so far, from the scheduler's own accounting.
fn thread_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    let nanos: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("unexpected /proc/thread-self/schedstat")?;
    Ok(Duration::from_nanos(nanos))
}

struct Bench {
    batches: u32,
    batch: Duration,
}

impl Bench {
    /// CPU nanoseconds per call of `f`: the median over batches.
    fn ns_per_op(&self, mut f: impl FnMut()) -> anyhow::Result<f64> {
        // Calibrate: iterations for one batch (this also warms caches and the allocator).
        let mut iterations: u64 = 1;
        loop {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            let took = start.elapsed();
            if took >= self.batch / 4 {
                let scale = self.batch.as_secs_f64() / took.as_secs_f64();
                iterations = ((iterations as f64 * scale) as u64).max(1);
                break;
            }
            iterations *= 2;
        }
        let mut per_op = Vec::with_capacity(self.batches as usize);
        for _ in 0..self.batches {
            let before = thread_cpu()?;
            for _ in 0..iterations {
                f();
            }
            let cpu = thread_cpu()? - before;
            per_op.push(cpu.as_nanos() as f64 / iterations as f64);
        }
        per_op.sort_by(f64::total_cmp);
        Ok(per_op[per_op.len() / 2])
    }
}

/// One row of the table.
struct Row {
    payload: &'static str,
    format: &'static str,
    bytes: usize,
    encode: f64,
    decode: f64,
}

fn json_row<T>(
    bench: &Bench,
    payload: &'static str,
    format: &'static str,
    value: &T,
) -> anyhow::Result<Row>
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq,
{
    let bytes = serde_json::to_vec(value)?;
    let back: T = serde_json::from_slice(&bytes)?;
    ensure!(
        back == *value,
        "{payload} {format}: JSON does not round-trip"
    );
    let encode = bench.ns_per_op(|| {
        black_box(serde_json::to_vec(black_box(value)).ok());
    })?;
    let decode = bench.ns_per_op(|| {
        black_box(serde_json::from_slice::<T>(black_box(&bytes)).ok());
    })?;
    Ok(Row {
        payload,
        format,
        bytes: bytes.len(),
        encode,
        decode,
    })
}

fn proto_row<M>(
    bench: &Bench,
    payload: &'static str,
    format: &'static str,
    value: &M,
) -> anyhow::Result<Row>
where
    M: Message + Default + PartialEq,
{
    let bytes = value.encode_to_vec();
    ensure!(
        M::decode(&bytes[..])? == *value,
        "{payload} {format}: protobuf does not round-trip"
    );
    let encode = bench.ns_per_op(|| {
        black_box(black_box(value).encode_to_vec());
    })?;
    let decode = bench.ns_per_op(|| {
        black_box(M::decode(black_box(&bytes[..])).ok());
    })?;
    Ok(Row {
        payload,
        format,
        bytes: bytes.len(),
        encode,
        decode,
    })
}

/// Messages behind gRPC's length-prefixed frame headers (1 flag byte, 4 length bytes), as
/// tonic writes them into one buffer (its default is 8 KiB) for a server stream.
fn encode_stream(messages: &[ProductResponse]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 * 1024);
    for m in messages {
        let len = m.encoded_len();
        buf.push(0);
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        // Infallible: a Vec grows as needed.
        let _ = m.encode(&mut buf);
    }
    buf
}

fn decode_stream(mut buf: &[u8]) -> anyhow::Result<Vec<ProductResponse>> {
    let mut messages = Vec::new();
    while !buf.is_empty() {
        ensure!(buf.len() >= 5 && buf[0] == 0, "bad frame header");
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        ensure!(buf.len() >= 5 + len, "truncated frame");
        messages.push(ProductResponse::decode(&buf[5..5 + len])?);
        buf = &buf[5 + len..];
    }
    Ok(messages)
}

fn stream_row(bench: &Bench, messages: &[ProductResponse]) -> anyhow::Result<Row> {
    let bytes = encode_stream(messages);
    ensure!(
        decode_stream(&bytes)? == messages,
        "the framed stream does not round-trip"
    );
    let encode = bench.ns_per_op(|| {
        black_box(encode_stream(black_box(messages)));
    })?;
    let decode = bench.ns_per_op(|| {
        black_box(decode_stream(black_box(&bytes)).ok());
    })?;
    Ok(Row {
        payload: "page of 50",
        format: "protobuf, streamed: 50 × (5-byte frame + ProductResponse)",
        bytes: bytes.len(),
        encode,
        decode,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wire-size: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.batches == 0 || args.batch_ms == 0 {
        bail!("--batches and --batch-ms must be positive");
    }
    // Load the data on a runtime, then measure on this thread alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (one, page, source) = match &args.from {
        Some(from) => {
            let from = from.trim_end_matches('/');
            let (one, page) = runtime.block_on(fetched(from))?;
            (
                one,
                page,
                format!("read from {from} (REST and gRPC bodies checked)"),
            )
        }
        None => {
            let (one, page) = runtime.block_on(seeded())?;
            (
                one,
                page,
                "a fresh catalog seeded like `brigade seed`".to_owned(),
            )
        }
    };
    drop(runtime);

    let bench = Bench {
        batches: args.batches,
        batch: Duration::from_millis(args.batch_ms),
    };
    let one4 = ProductJson4::from(&one);
    let page4 = PageJson {
        items: page.items.iter().map(ProductJson4::from).collect(),
        next_cursor: page.next_cursor.clone(),
    };
    let one_message = message(&one)?;
    let page_messages = page
        .items
        .iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    let repeated = BatchGetProductsResponse {
        products: page_messages.clone(),
        missing_ids: Vec::new(),
    };

    let rows = vec![
        json_row(&bench, "product 1", "JSON, REST body (6 fields)", &one)?,
        json_row(&bench, "product 1", "JSON, the proto's 4 fields", &one4)?,
        proto_row(
            &bench,
            "product 1",
            "protobuf ProductResponse",
            &one_message,
        )?,
        json_row(
            &bench,
            "page of 50",
            "JSON, REST body (6 fields + next_cursor)",
            &page,
        )?,
        json_row(
            &bench,
            "page of 50",
            "JSON, the proto's 4 fields + next_cursor",
            &page4,
        )?,
        stream_row(&bench, &page_messages)?,
        proto_row(
            &bench,
            "page of 50",
            "protobuf, one message: repeated ProductResponse",
            &repeated,
        )?,
    ];

    println!("JSON vs protobuf on Brigade's data: {source}");
    println!(
        "CPU time: this thread's, median of {} batches of ~{} ms each.",
        args.batches, args.batch_ms
    );
    println!();
    println!(
        "| payload | encoding | bytes | encode ns | decode ns | encode+decode ns | bytes vs protobuf | CPU vs protobuf |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    // The protobuf row each payload is compared with: the message itself for one product
    // (its gRPC frame adds 5 bytes), the stream for the page (what ListProducts sends).
    let reference = |payload: &str| {
        rows.iter()
            .find(|r| r.payload == payload && r.format.starts_with("protobuf"))
    };
    for row in &rows {
        let total = row.encode + row.decode;
        let (bytes_vs, cpu_vs) = match reference(row.payload) {
            Some(r) => (
                format!("{:.2}×", row.bytes as f64 / r.bytes as f64),
                format!("{:.2}×", total / (r.encode + r.decode)),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} |",
            row.payload, row.format, row.bytes, row.encode, row.decode, total, bytes_vs, cpu_vs
        );
    }
    println!();
    println!(
        "On the wire a unary gRPC answer is the message plus its 5-byte frame header ({} bytes for product 1); \
         HTTP headers (and HTTP/2 frame headers) come on top for both faces.",
        one_message.encoded_len() + 5
    );
    Ok(())
}
