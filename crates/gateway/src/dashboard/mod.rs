//! The live dashboard (`/dashboard`): the system's topology with golden metrics per
//! service and per caller→callee edge over the last minute (requests/s, success rate,
//! p50/p95/p99, retries beside first attempts, breaker states), queues and streams
//! (depth, dead letters, consumer lag), outbox backlogs, orders by state and their
//! accept→paid latency, and each service's error budget — after Linkerd viz and the .NET
//! Aspire dashboard, served from the binary (no CDN).
//!
//! The data is the services' own metrics: this process's recorder for the services it
//! runs, each other service's `/metrics` over HTTP (a service that does not answer is
//! shown down). A collector folds them into a [`collect::Reading`] every
//! `gateway.dashboard.interval` while anyone watches, keeps a minute of readings, and
//! publishes one JSON snapshot (`/dashboard/stream`, server-sent events; one shot at
//! `/dashboard/snapshot`). Bounded on both sides: a minute of readings here, the latest
//! snapshot per viewer (a slow viewer skips snapshots, never queues them).
//!
//! Open in development; in production it needs an API key with every scope (a secret
//! key): it shows no keys, secrets or data, but it does show the system's shape and load.
//!
//! One action: `POST /dashboard/queues/{queue}/redrive` moves a queue's dead letters
//! back onto it, through the service that consumes the queue (`Gateway::
//! redrive_dead_letters`, orders' `OperationsService`), under the request's
//! `Idempotency-Key`. The same admission as watching, and from a browser only from this
//! page (its `Origin` and `Sec-Fetch-Site`): another site open in the same browser
//! cannot press the button.

pub mod collect;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use problem::Problem;
use settings::{Profile, ServiceName, Settings};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::Gateway;
use crate::edge::Edge;
use crate::keys::Scope;
use collect::{Presence, Reading};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// A service the gateway does not run itself, and where it listens.
#[derive(Debug, Clone)]
struct Target {
    service: ServiceName,
    addr: SocketAddr,
}

/// The collector's output and who may read it.
pub struct Dashboard {
    snapshots: watch::Sender<Arc<str>>,
    open: bool,
    edge: Edge,
    /// The use cases the dashboard's one action goes through.
    gateway: Arc<Gateway>,
    closing: CancellationToken,
    interval: Duration,
    stream_lifetime: Duration,
}

impl Dashboard {
    /// 401/403 unless the dashboard is open or the caller's key has every scope.
    fn admit(&self, headers: &HeaderMap) -> Result<(), Problem> {
        if self.open {
            return Ok(());
        }
        match self.edge.caller(headers)? {
            crate::keys::Caller::Anonymous => Err(Problem::new(problem::Kind::Unauthenticated)
                .with_detail(
                    "the dashboard needs an API key with every scope (a secret key) in production: send it as `Authorization: Bearer <key>`",
                )),
            caller if Scope::ALL.iter().all(|s| caller.require(*s).is_ok()) => Ok(()),
            _ => Err(Problem::new(problem::Kind::Forbidden)
                .with_detail("the dashboard needs an API key with every scope (a secret key)")),
        }
    }
}

/// The routes, and the collector to run beside the server until `stop`.
pub fn router(
    settings: &Settings,
    edge: Edge,
    gateway: Arc<Gateway>,
) -> Option<(Router, impl FnOnce(CancellationToken) -> CollectorTask)> {
    let config = &settings.gateway.dashboard;
    if !config.enabled {
        return None;
    }
    let (snapshots, _) = watch::channel(Arc::<str>::from("{}"));
    let dashboard = Arc::new(Dashboard {
        snapshots,
        open: config
            .open
            .unwrap_or(settings.profile == Profile::Development),
        edge,
        gateway,
        closing: CancellationToken::new(),
        interval: config.interval,
        stream_lifetime: config.stream_lifetime,
    });
    let targets: Vec<Target> = ServiceName::ALL
        .into_iter()
        .filter(|s| *s != ServiceName::Gateway)
        .map(|service| {
            let mut addr = settings.services.get(service).addr();
            if addr.ip().is_unspecified() {
                // The loopback of the same family: a service on `::` is not on 127.0.0.1.
                addr.set_ip(match addr.ip() {
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            Target { service, addr }
        })
        .collect();
    let (interval, window) = (config.interval, config.window);
    let router = Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/style.css", get(style))
        .route("/dashboard/stream", get(stream))
        .route("/dashboard/snapshot", get(snapshot))
        .route("/dashboard/queues/{queue}/redrive", post(redrive))
        .with_state(Arc::clone(&dashboard));
    let run = move |stop: CancellationToken| -> CollectorTask {
        Box::pin(collector(dashboard, targets, interval, window, stop))
    };
    Some((router, run))
}

pub type CollectorTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Static files: the page names nothing outside this origin.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// Server-sent events: `event: snapshot` with the JSON snapshot, each time there is a
/// new one (the first at once); comments keep the connection alive. Ends when the
/// gateway shuts down.
async fn stream(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Err(problem) = dashboard.admit(&headers) {
        return problem.into_response();
    }
    let mut updates = dashboard.snapshots.subscribe();
    updates.mark_changed();
    let watcher = Arc::clone(&dashboard);
    let events = futures::stream::unfold(updates, move |mut updates| {
        let (dashboard, headers) = (Arc::clone(&watcher), headers.clone());
        async move {
            loop {
                updates.changed().await.ok()?;
                // A key revoked while its stream is open stops it at the next snapshot.
                dashboard.admit(&headers).ok()?;
                let data = Arc::clone(&updates.borrow_and_update());
                // The channel's first value is a placeholder, not a snapshot.
                if data.len() > 2 {
                    let event = Event::default().event("snapshot").data(&*data);
                    return Some((Ok::<_, Infallible>(event), updates));
                }
            }
        }
    })
    .take_until({
        // At shutdown, or at the end of the stream's lifetime (the page reconnects).
        let (closing, lifetime) = (dashboard.closing.clone(), dashboard.stream_lifetime);
        async move {
            tokio::select! {
                () = closing.cancelled() => {}
                () = tokio::time::sleep(lifetime) => {}
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Proxies must not buffer it.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One fresh snapshot as JSON (for scripts and the tests; a board polls `/metrics`).
async fn snapshot(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Err(problem) = dashboard.admit(&headers) {
        return problem.into_response();
    }
    // One made after this request came in (the collector reads every interval while
    // anyone, this request included, watches), never one kept from before.
    let mut updates = dashboard.snapshots.subscribe();
    updates.borrow_and_update();
    let ready = async {
        loop {
            updates.changed().await.ok()?;
            let current = Arc::clone(&updates.borrow_and_update());
            if serde_json::from_str::<serde_json::Value>(&current)
                .ok()
                .and_then(|v| v["window_seconds"].as_f64())
                .is_some_and(|s| s > 0.0)
            {
                return Some(current);
            }
        }
    };
    // Two readings' time at most, and never past shutdown.
    let patience = (dashboard.interval * 2 + Duration::from_secs(2)).max(Duration::from_secs(5));
    let ready = async {
        tokio::select! {
            json = ready => json,
            () = dashboard.closing.cancelled() => None,
        }
    };
    match tokio::time::timeout(patience, ready).await {
        Ok(Some(json)) => (
            [(header::CONTENT_TYPE, "application/json")],
            json.to_string(),
        )
            .into_response(),
        _ => Problem::unavailable("the dashboard has no snapshot yet").into_response(),
    }
}

/// `?limit=`: how many dead letters at most (the owner's default without one).
#[derive(Debug, serde::Deserialize)]
struct RedriveQuery {
    #[serde(default)]
    limit: u32,
}

/// `POST /dashboard/queues/{queue}/redrive?limit=n` with an `Idempotency-Key`: the
/// queue's dead letters back onto it, by its consumer. 200 `{queue, owner, moved}`.
async fn redrive(
    State(dashboard): State<Arc<Dashboard>>,
    server::extract::Path(queue): server::extract::Path<String>,
    server::extract::Query(query): server::extract::Query<RedriveQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        dashboard.admit(&headers)?;
        from_this_page(&headers, &uri, dashboard.open)?;
        let key = headers
            .get("idempotency-key")
            .and_then(|k| k.to_str().ok())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Problem::invalid_request(
                    "a redrive is a write: send an Idempotency-Key header (a fresh one per redrive; the same one to repeat it safely)",
                )
            })?;
        let caller = dashboard.edge.caller(&headers)?;
        let work = dashboard
            .gateway
            .redrive_dead_letters(&queue, query.limit, key);
        Edge::acting_for(&caller, work).await
    };
    match answer.await {
        Ok(done) => axum::Json(serde_json::json!({
            "queue": done.queue,
            "owner": done.owner.as_str(),
            "moved": done.moved,
        }))
        .into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// A browser names the page a request comes from: a write from another site's page is
/// refused, whatever CORS let through. `Sec-Fetch-Site` (every current browser sends it,
/// and no page can forge it) decides when present; else `Origin` must name the host the
/// request was sent to. A request from a terminal or a script names no page and is let
/// be. An open dashboard (no key needed) also refuses a browser that reached it by a
/// name that is not `localhost`: a site whose name was rebound to this address would
/// otherwise be this page's own origin.
fn from_this_page(headers: &HeaderMap, uri: &Uri, open: bool) -> Result<(), Problem> {
    let refused = |why: &str| {
        Problem::new(problem::Kind::Forbidden).with_detail(format!(
            "the dashboard's actions are taken from the dashboard's own page only ({why})"
        ))
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(http::uri::Authority::as_str));
    let site = headers.get("sec-fetch-site");
    let origin = headers.get(header::ORIGIN);
    match site {
        Some(site) if !matches!(site.as_bytes(), b"same-origin" | b"none") => {
            return Err(refused("this request came from another site"));
        }
        Some(_) => {}
        None => {
            if let Some(origin) = origin {
                let named = origin
                    .to_str()
                    .ok()
                    .and_then(|o| o.split_once("://"))
                    .map(|(_, authority)| authority);
                if named.is_none() || named != host {
                    return Err(refused("its Origin is not this host"));
                }
            }
        }
    }
    let from_a_browser = site.is_some() || origin.is_some();
    if open && from_a_browser && !host.is_some_and(local_or_literal) {
        return Err(refused(
            "an open dashboard acts only when reached as localhost or by IP address; close it with gateway.dashboard.open = false and use a key",
        ));
    }
    Ok(())
}

/// `localhost`, a name under `.localhost`, or an IP address (with or without a port):
/// names no one else's DNS can point here.
fn local_or_literal(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// How often the collector reads while nobody watches.
const IDLE_EVERY: Duration = Duration::from_secs(10);

/// Reads every `interval` while anyone watches (every [`IDLE_EVERY`] otherwise) and
/// publishes the snapshot over `window`.
async fn collector(
    dashboard: Arc<Dashboard>,
    targets: Vec<Target>,
    interval: Duration,
    window: Duration,
    stop: CancellationToken,
) {
    // A slow `/metrics` is not a service down: two seconds at least, whatever the
    // interval (the tick waits for the reading).
    let client = match reqwest::Client::builder()
        .timeout(interval.max(Duration::from_secs(2)))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(%err, "the dashboard cannot make an HTTP client; it shows this process only");
            reqwest::Client::new()
        }
    };
    // However this task ends (stopped, or a panic in a reading), open streams end too.
    let _closing = dashboard.closing.clone().drop_guard();
    let mut readings: VecDeque<(Instant, Reading)> = VecDeque::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Nobody watching: a reading every IDLE_EVERY only, so that whoever opens the
        // dashboard sees the last minute at once, at next to no cost meanwhile.
        let watched = dashboard.snapshots.receiver_count() > 0;
        if !watched
            && readings
                .back()
                .is_some_and(|(at, _)| at.elapsed() < IDLE_EVERY)
        {
            continue;
        }
        let (mut reading, presence) = read(&client, &targets).await;
        if let Some((_, previous)) = readings.back() {
            for p in presence.iter().filter(|p| !p.up) {
                reading.carry(previous, p.service);
            }
        }
        let now = Instant::now();
        readings.push_back((now, reading));
        while readings
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= window)
        {
            readings.pop_front();
        }
        let (Some((first_at, first)), Some((_, last))) = (readings.front(), readings.back()) else {
            continue;
        };
        let seconds = now.duration_since(*first_at).as_secs_f64();
        let json = collect::snapshot(last, first, seconds, &presence, storage::now_millis());
        dashboard
            .snapshots
            .send_replace(Arc::from(json.to_string()));
    }
}

/// This process's series, plus each service it does not run, scraped.
async fn read(client: &reqwest::Client, targets: &[Target]) -> (Reading, Vec<Presence>) {
    let mut reading = Reading::default();
    reading.add(&telemetry::metrics::render());
    let mut presence = vec![Presence {
        service: ServiceName::Gateway.as_str(),
        up: true,
        error: None,
    }];
    let remote = targets
        .iter()
        // A service this process runs has its tracker here, from before it serves (its
        // series are in `render` above): never scraped too, which would count it twice.
        .filter(|t| !telemetry::slo::tracks(t.service.as_str()))
        .map(|t| async move {
            let answer = async {
                client
                    .get(format!("http://{}/metrics", t.addr))
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await
            }
            .await;
            (t, answer)
        });
    let scraped = futures::future::join_all(remote).await;
    for t in targets {
        let answer = scraped.iter().find(|(s, _)| s.service == t.service);
        let (up, error) = match answer {
            None => (true, None),
            Some((_, Ok(text))) => {
                reading.add(text);
                (true, None)
            }
            Some((_, Err(err))) => (
                false,
                Some(if err.is_connect() {
                    format!("not reachable at {}", t.addr)
                } else if err.is_timeout() {
                    format!("no answer from {} in time", t.addr)
                } else {
                    format!(
                        "{} answered {}",
                        t.addr,
                        err.status()
                            .map_or_else(|| "badly".to_owned(), |s| s.to_string())
                    )
                }),
            ),
        };
        presence.push(Presence {
            service: t.service.as_str(),
            up,
            error,
        });
    }
    (reading, presence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    /// Who may press the dashboard's buttons: its own page and terminals; not another
    /// site's page, by what the browser says or by its Origin; and, while the dashboard
    /// is open, not a browser that reached it by a rebindable name.
    #[test]
    fn only_the_dashboards_own_page_acts() {
        let uri = Uri::from_static("/dashboard/queues/q/redrive");
        let h2 = Uri::from_static("http://[::1]:8080/dashboard/queues/q/redrive");
        type Case<'a> = (&'a [(&'static str, &'static str)], &'a Uri, bool, bool);
        let cases: [Case; 14] = [
            // A terminal: no page named.
            (&[("host", "devbox:8080")], &uri, true, true),
            (&[], &uri, true, true),
            // The page itself.
            (
                &[
                    ("host", "localhost:8080"),
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "http://localhost:8080"),
                ],
                &uri,
                true,
                true,
            ),
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                ],
                &uri,
                true,
                true,
            ),
            (&[("sec-fetch-site", "same-origin")], &h2, true, true),
            (
                &[("host", "[::1]:8080"), ("origin", "http://[::1]:8080")],
                &uri,
                true,
                true,
            ),
            // Behind a proxy that rewrote Host: the browser's word decides.
            (
                &[
                    ("host", "upstream:8080"),
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "https://brigade.example"),
                ],
                &uri,
                false,
                true,
            ),
            // Another site's page.
            (
                &[("host", "localhost:8080"), ("sec-fetch-site", "cross-site")],
                &uri,
                true,
                false,
            ),
            (
                &[("host", "localhost:8080"), ("sec-fetch-site", "same-site")],
                &uri,
                true,
                false,
            ),
            (
                &[
                    ("host", "localhost:8080"),
                    ("origin", "http://evil.example"),
                ],
                &uri,
                true,
                false,
            ),
            (
                &[("host", "localhost:8080"), ("origin", "null")],
                &uri,
                true,
                false,
            ),
            (
                &[
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8081"),
                ],
                &uri,
                true,
                false,
            ),
            // Open, reached by a name DNS could rebind: refused; with a key, fine.
            (
                &[
                    ("host", "rebound.example:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
                &uri,
                true,
                false,
            ),
            (
                &[
                    ("host", "rebound.example:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
                &uri,
                false,
                true,
            ),
        ];
        for (pairs, uri, open, allowed) in cases {
            let answer = from_this_page(&headers(pairs), uri, open);
            assert_eq!(answer.is_ok(), allowed, "{pairs:?} open={open}: {answer:?}");
        }
    }
}
