use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SERVICES: [&str; 6] = [
    "gateway",
    "catalog",
    "accounts",
    "orders",
    "billing",
    "payments-sandbox",
];

/// `brigade` with a clean configuration environment: only what the test sets.
pub fn brigade(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brigade"));
    for (key, _) in std::env::vars() {
        if key.starts_with("BRIGADE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("BRIGADE_DATA_DIR", data_dir)
        .env("BRIGADE_LOG__FORMAT", "json")
        .env("BRIGADE_SHUTDOWN_GRACE", "5s")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Every service on a free port.
pub fn on_free_ports(cmd: &mut Command) -> &mut Command {
    for s in SERVICES {
        let key = s.to_uppercase().replace('-', "_");
        cmd.env(format!("BRIGADE_SERVICES__{key}__PORT"), "0");
    }
    cmd
}

/// A started `brigade` process and the URL of each service it printed. Its stdout and
/// stderr are read to the end for as long as it runs (a pipe nobody reads fills up and
/// blocks the process at its next log line); what it wrote is kept in `output`.
pub struct Running {
    pub child: Child,
    pub urls: HashMap<String, String>,
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Reads `from` to its end into `into`, line by line.
fn drain(
    from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut kept = into
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.push_str(&line);
            kept.push('\n');
        }
    });
}

/// Starts the command and reads its table of services from stdout.
pub async fn start(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn brigade");
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        drain(stderr, output.clone());
    }
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut urls = HashMap::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.starts_with("Press Ctrl-C") {
                break;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 2 && cols[1].starts_with("http://") {
                urls.insert(cols[0].to_owned(), cols[1].to_owned());
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .is_err()
    {
        let _ = child.kill().await;
        let said = output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        panic!("brigade did not print its table within 60 s; it wrote:\n{said}");
    }
    // The rest of stdout, read to the end as stderr is.
    drain(lines.into_inner(), output.clone());
    Running {
        child,
        urls,
        output,
    }
}

/// Sends SIGTERM, as a process manager would.
pub fn terminate(child: &Child) {
    let pid = child.id().expect("child still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Sends SIGTERM and requires a clean exit (status 0) within 20 s.
pub async fn stop_cleanly(running: &mut Running) {
    terminate(&running.child);
    let status = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("brigade stopped within 20 s of SIGTERM")
        .unwrap();
    let said = running
        .output
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(status.success(), "{status:?}; it wrote:\n{said}");
}

/// A secret API key made with `brigade keys create` in `data`'s gateway database (before
/// the system starts, so the gateway has it from its first request).
pub async fn api_key(data: &Path) -> String {
    let made = brigade(data)
        .args(["keys", "create", "--name", "test"])
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let stdout = String::from_utf8(made.stdout).unwrap();
    let key = stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(key.starts_with("bgd_sk_"), "{stdout}");
    key
}

/// An internal identity token from `brigade internal-token`, for calling a service
/// directly (a system started without its gateway).
pub async fn internal_token(data: &Path) -> String {
    let made = brigade(data).arg("internal-token").output().await.unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    String::from_utf8(made.stdout).unwrap().trim().to_owned()
}

/// A client sending `name: value` on every request (an API key through the gateway,
/// or an internal token straight to a service).
pub fn client_with(name: &'static str, value: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(name, value.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client of the gateway with `key`.
pub fn bearer(key: &str) -> reqwest::Client {
    client_with("authorization", &format!("Bearer {key}"))
}

/// Creates a product at `base` (the gateway, or catalog with a token) under the
/// idempotency key `key`; its id.
pub async fn create_product(client: &reqwest::Client, base: &str, key: &str, name: &str) -> i64 {
    let created: serde_json::Value = client
        .post(format!("{base}/v1/products"))
        .header("idempotency-key", key)
        .json(&serde_json::json!({"name": name, "price": 49.5, "stock": 7}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_i64().unwrap()
}

/// `brigade events tail catalog-events` as group `test-tail` from the earliest event,
/// one event, run as `cmd` (a `brigade` on the right data and broker): the line it
/// printed, within 60 s.
pub async fn tail_one(mut cmd: Command) -> serde_json::Value {
    let tail = cmd
        .args(["events", "tail", "catalog-events", "--group", "test-tail"])
        .args(["--from", "earliest", "--count", "1"])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), tail)
        .await
        .expect("events tail printed an event within 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_slice(output.stdout.split(|b| *b == b'\n').next().unwrap())
        .unwrap_or_else(|e| panic!("events tail printed no JSON line ({e}): {stderr}"))
}

/// GET `url` with `client`: its JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// `base`'s `/metrics`, as text.
pub async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    let url = format!("{base}/metrics");
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The value of series `name` with `labels` in `base`'s `/metrics`.
pub async fn metric(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let text = metrics_text(client, base).await;
    telemetry::metrics::series_value(&text, name, labels)
}

/// Order `id` through the gateway at `gateway`, once it is PAID (within `within`).
pub async fn until_paid(
    client: &reqwest::Client,
    gateway: &str,
    id: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let order = get_json(client, &format!("{gateway}/v1/orders/{id}")).await;
        if order["status"] == "PAID" {
            return order;
        }
        assert!(tokio::time::Instant::now() < deadline, "not PAID: {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
