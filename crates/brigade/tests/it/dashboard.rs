//! The live dashboard of a running system: its page and assets come from the binary and
//! name nothing off this origin; its stream and snapshot show every service, the edges
//! between them and their traffic; a service that is down is shown down and comes back;
//! in production only a secret key may watch; nothing secret is in what it shows.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    SERVICES, api_key, bearer, brigade, create_product, metric, on_free_ports, start, stop_cleanly,
};

/// The snapshot at `base`, once `until` holds of it (the collector reads every second),
/// within 30 s.
async fn snapshot_until(
    client: &reqwest::Client,
    base: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .get(format!("{base}/dashboard/snapshot"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let snap: Value = r.json().await.unwrap();
        if until(&snap) {
            return snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the snapshot never came to hold: {snap:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn node<'a>(snap: &'a Value, id: &str) -> &'a Value {
    snap["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {snap:#}"))
}

fn edge<'a>(snap: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    snap["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
}

#[tokio::test]
async fn the_dashboard_shows_every_service_and_its_traffic_live() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = api_key(&data).await;
    let mut running = start(on_free_ports(brigade(&data).args(["up", "--no-seed"]))).await;
    let gateway = running.urls["gateway"].clone();
    let client = reqwest::Client::new();

    // The page and its assets: from the binary, nothing from elsewhere.
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let r = client.get(format!("{gateway}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'")
        );
        let body = r.text().await.unwrap();
        for outside in ["src=\"http", "href=\"http", "url(http", "import("] {
            assert!(!body.contains(outside), "{path} reaches outside: {outside}");
        }
    }

    // Traffic: a product made and read through the gateway.
    let product = create_product(&bearer(&key), &gateway, "dash-1", "Lamp").await;
    for _ in 0..20 {
        let r = client
            .get(format!("{gateway}/v1/products/{product}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let snap = snapshot_until(&client, &gateway, |s| {
        edge(s, "gateway", "catalog")
            .is_some_and(|e| e["requests_per_second"].as_f64().unwrap_or(0.0) > 0.0)
    })
    .await;
    for service in SERVICES {
        let n = node(&snap, service);
        assert_eq!(n["kind"], "service");
        assert_eq!(n["up"], true, "{n}");
        assert!(
            n["slo"]["availability"]["objective"].as_f64().unwrap() > 0.99,
            "{n}"
        );
    }
    let catalog = node(&snap, "catalog");
    assert!(
        catalog["requests_per_second"].as_f64().unwrap() > 0.0,
        "{catalog}"
    );
    assert_eq!(catalog["success_rate"], 1.0);
    assert!(catalog["p99_ms"].as_f64().is_some(), "{catalog}");
    let forwarded = edge(&snap, "gateway", "catalog").unwrap();
    assert_eq!(forwarded["success_rate"], 1.0, "{forwarded}");
    assert_eq!(forwarded["breaker"], "closed");
    // The product's event went through catalog's outbox onto its stream.
    let published = snapshot_until(&client, &gateway, |s| {
        edge(s, "catalog", "stream:catalog-events").is_some()
    })
    .await;
    assert_eq!(node(&published, "stream:catalog-events")["kind"], "stream");
    // The work queue is shown with its dead letters and how to redrive them.
    let queue = node(&published, "queue:order_processing");
    assert_eq!(queue["dead_letters"], 0.0);
    assert_eq!(
        queue["redrive"]["command"],
        "brigade dlq redrive order_processing"
    );
    assert_eq!(
        queue["redrive"]["action"],
        "/dashboard/queues/order_processing/redrive"
    );
    // Nothing secret in it.
    let text = published.to_string();
    assert!(!text.contains(&key));
    assert!(!text.contains("bgd_sk_"));

    // The stream: a snapshot at once, then another as the collector reads again.
    let r = client
        .get(format!("{gateway}/dashboard/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut r = r;
    let mut seen = String::new();
    let events = async {
        while seen.matches("event: snapshot").count() < 2 {
            let chunk = r.chunk().await.unwrap().expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("two snapshots within 10 s");
    let first = seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let first: Value = serde_json::from_str(first).unwrap();
    assert!(first["nodes"].as_array().unwrap().len() >= SERVICES.len());

    // Shutdown ends the open stream rather than waiting on it (the grace is 5 s here).
    let stopping = std::time::Instant::now();
    stop_cleanly(&mut running).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "an open dashboard stream held shutdown for {:?}",
        stopping.elapsed()
    );
    drop(r);
}

/// `brigade_messaging_redriven_total` of `order_processing` on `base`'s `/metrics`.
async fn redriven(client: &reqwest::Client, base: &str) -> f64 {
    let queue = [("queue", "order_processing")];
    metric(client, base, "brigade_messaging_redriven_total", &queue).await
}

/// The dashboard's one action: a queue's dead letters go back onto it through orders,
/// the queue's consumer, under an `Idempotency-Key` (a repeat moves nothing more) — and
/// only from the dashboard's own page, never from another site's.
#[tokio::test]
async fn the_dashboard_redrives_dead_letters_through_the_queues_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut running = start(on_free_ports(brigade(&data).args(["up", "--no-seed"]))).await;
    let (gateway, orders) = (
        running.urls["gateway"].clone(),
        running.urls["orders"].clone(),
    );
    let client = reqwest::Client::new();
    // The system's own embedded store (another handle on its file).
    let broker = messaging::embedded::open(
        &data.join("messaging.db"),
        &settings::MessagingSettings::default(),
    )
    .await
    .unwrap();
    // A message orders can never handle: dead-lettered, with its reason.
    let garbage = messaging::Envelope::new("ProcessOrder", serde_json::json!({"order": 1}));
    broker
        .queues
        .publish("order_processing", &garbage)
        .await
        .unwrap();
    let dead_again = || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stats = broker.queues.stats("order_processing").await.unwrap();
            if stats.dead == 1 && stats.ready == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never dead-lettered: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    dead_again().await;
    let shown = snapshot_until(&client, &gateway, |s| {
        node(s, "queue:order_processing")["dead_letters"] == 1.0
    })
    .await;
    let action = node(&shown, "queue:order_processing")["redrive"]["action"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{gateway}{action}");
    let origin = gateway.trim_end_matches('/').to_owned();

    // Refused, and nothing moved: no key; another site's page (by its Origin, or by
    // what the browser says of it); a queue nobody consumes; a limit past the most.
    let refusals = [
        (client.post(&url), 400, "Idempotency-Key"),
        (
            client
                .post(&url)
                .header("idempotency-key", "r0")
                .header("origin", "https://elsewhere.example"),
            403,
            "own page",
        ),
        (
            client
                .post(&url)
                .header("idempotency-key", "r0")
                .header("origin", &origin)
                .header("sec-fetch-site", "cross-site"),
            403,
            "own page",
        ),
        (
            client
                .post(format!("{gateway}/dashboard/queues/nobodys/redrive"))
                .header("idempotency-key", "r0"),
            404,
            "nobodys",
        ),
        (
            client
                .post(format!("{url}?limit=1001"))
                .header("idempotency-key", "r0"),
            422,
            "limit",
        ),
    ];
    for (request, status, says) in refusals {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{status}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{status}: {body}");
    }
    assert_eq!(redriven(&client, &orders).await, 0.0);
    assert_eq!(
        broker.queues.stats("order_processing").await.unwrap().dead,
        1
    );

    // From the page: moved by orders.
    let press = || {
        client
            .post(&url)
            .header("idempotency-key", "redrive-1")
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
    };
    let r = press().send().await.unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(
        done,
        serde_json::json!({"queue": "order_processing", "owner": "orders", "moved": 1})
    );
    assert_eq!(redriven(&client, &orders).await, 1.0);
    // It fails again (it never parses) and is dead again; the same key again answers
    // the same and moves nothing.
    dead_again().await;
    let r = press().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), done);
    assert_eq!(redriven(&client, &orders).await, 1.0);
    assert_eq!(
        broker.queues.stats("order_processing").await.unwrap().dead,
        1
    );
    // A new key is a new redrive.
    let r = client
        .post(&url)
        .header("idempotency-key", "redrive-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["moved"], 1);
    assert_eq!(redriven(&client, &orders).await, 2.0);
    stop_cleanly(&mut running).await;
}

/// A free port on loopback, for a service started later at a port fixed in advance.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_service_that_is_down_is_shown_down_and_in_production_only_a_secret_key_watches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = api_key(&data).await;
    let restricted = {
        let made = brigade(&data)
            .args(["keys", "create", "--name", "ro", "--scopes", "orders:read"])
            .output()
            .await
            .unwrap();
        let out = String::from_utf8(made.stdout).unwrap();
        out.lines().last().unwrap().trim().to_owned()
    };
    let catalog_port = free_port().to_string();
    let ports = |cmd: &mut tokio::process::Command| {
        on_free_ports(cmd)
            .env("BRIGADE_SERVICES__CATALOG__PORT", &catalog_port)
            .env("BRIGADE_PROFILE", "production");
    };
    // The gateway alone: every other service is away.
    let mut cmd = brigade(&data);
    cmd.args(["serve", "gateway"]);
    ports(&mut cmd);
    let mut gateway_process = start(&mut cmd).await;
    let gateway = gateway_process.urls["gateway"].clone();

    let anonymous = reqwest::Client::new();
    let r = anonymous
        .get(format!("{gateway}/dashboard/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = bearer(&restricted)
        .get(format!("{gateway}/dashboard/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Its action likewise; with the secret key it reaches for orders, which is not
    // running here: a 503 problem, not a hang.
    let redrive = format!("{gateway}/dashboard/queues/order_processing/redrive");
    for (client, status) in [
        (&anonymous, 401),
        (&bearer(&restricted), 403),
        (&bearer(&secret), 503),
    ] {
        let r = client
            .post(&redrive)
            .header("idempotency-key", "k")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // The page itself holds no data: it asks for a key.
    let page = anonymous
        .get(format!("{gateway}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    let admin = bearer(&secret);
    let snap = snapshot_until(&admin, &gateway, |s| node(s, "catalog")["up"] == false).await;
    let catalog = node(&snap, "catalog");
    assert!(
        catalog["error"].as_str().unwrap().contains(&catalog_port),
        "{catalog}"
    );
    assert_eq!(node(&snap, "gateway")["up"], true);

    // Catalog comes up at its address: shown up within seconds.
    let mut cmd = brigade(&data);
    cmd.args(["serve", "catalog"]);
    ports(&mut cmd);
    let mut catalog_process = start(&mut cmd).await;
    assert!(
        catalog_process.urls["catalog"].ends_with(&catalog_port),
        "{:?}",
        catalog_process.urls
    );
    let snap = snapshot_until(&admin, &gateway, |s| node(s, "catalog")["up"] == true).await;
    assert_eq!(node(&snap, "accounts")["up"], false);

    // A stream open with a key that is then revoked ends (keys reload every 2 s).
    // A client without a timeout: the stream must be ended by the gateway.
    let mut stream = reqwest::Client::new()
        .get(format!("{gateway}/dashboard/stream"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().expect("a first snapshot");
    assert!(String::from_utf8_lossy(&first).contains("event: snapshot"));
    let listed = brigade(&data)
        .args(["keys", "list"])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let id = listed
        .lines()
        .find(|l| l.contains("all scopes"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let revoked = brigade(&data)
        .args(["keys", "revoke", &id])
        .output()
        .await
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    let ended = async { while stream.chunk().await.unwrap().is_some() {} };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the revoked key's stream ended within 10 s");

    stop_cleanly(&mut catalog_process).await;
    stop_cleanly(&mut gateway_process).await;
}

/// Every series the shipped Grafana board queries is one the code writes: a renamed
/// metric breaks this test, not a user's board.
#[test]
fn the_grafana_boards_series_are_the_ones_the_code_writes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("dashboards/grafana/brigade.json")).unwrap(),
    )
    .unwrap();
    let mut source = String::new();
    let mut dirs = vec![root.join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with("tests") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                source.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let written = |name: &str| {
        source.match_indices(name).any(|(at, _)| {
            !source[at + name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let panels = board["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut names = std::collections::BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        assert_eq!(panel["datasource"]["type"], "prometheus");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("brigade_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name.trim_end_matches("_bucket").to_owned());
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");
    for name in &names {
        assert!(
            written(name),
            "the board queries {name}, which no code writes"
        );
    }
}
