//! Prometheus metrics. One recorder per process (the `metrics` facade is global); every
//! series carries a `service` label, so the five services of `brigade up` stay apart.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use axum::response::Response;
use http::Method;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ErrorKindLabel;

pub const REQUESTS_TOTAL: &str = "brigade_requests_total";
pub const ERRORS_TOTAL: &str = "brigade_errors_total";
pub const REQUEST_DURATION: &str = "brigade_request_duration_seconds";

/// Latency buckets from 1 ms to 5 min: internal calls live at the low end, the seed's
/// database and SaaS timeouts in the middle, and its async jobs (30 s – 5 min) — an
/// order's accept→paid behind a backlog, a handler near its timeout — at the high end.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// A recorder like the process's, of a test's own: installed on the test's thread with
/// `metrics::set_default_local_recorder`, it sees only what that thread records (a
/// current-thread runtime runs the whole test there: its servers, clients and tasks), so
/// tests running in parallel in one binary cannot change each other's series. Read it
/// with its `handle().render()`.
pub fn isolated_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    let builder = PrometheusBuilder::new();
    match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS) {
        Ok(builder) => builder.build_recorder(),
        Err(_) => PrometheusBuilder::new().build_recorder(),
    }
}

/// The process's Prometheus recorder, installed on first use. `None` only if something
/// else installed a global recorder first (an embedding program).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .as_ref()
}

/// Renders the exposition text (empty when no recorder is ours).
pub fn render() -> String {
    let mut out = handle().map(PrometheusHandle::render).unwrap_or_default();
    // Every service's error budget, computed now.
    out.push_str(&crate::slo::render(None));
    out
}

/// Renders the series of one service (and any process-wide series without a `service`
/// label). `brigade up` runs five services in one process and one recorder; each
/// service's `/metrics` still shows only its own series, as it would alone.
pub fn render_for(service: &str) -> String {
    let own = format!("service=\"{service}\"");
    let mut out = String::new();
    let all = handle().map(PrometheusHandle::render).unwrap_or_default();
    for line in all.lines() {
        let keep = line.starts_with('#')
            || line.is_empty()
            || !line.contains("service=\"")
            || line.contains(&own);
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    // Its error budget, computed now from the running totals.
    out.push_str(&crate::slo::render(Some(service)));
    out
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Requests served, by service, protocol, route, method and status."
    );
    metrics::describe_counter!(
        ERRORS_TOTAL,
        "Requests that ended in a problem, by service, protocol, route and error kind."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Request latency, by service, protocol and route."
    );
}

/// Histograms buffer samples until drained; drain them regularly even when nobody
/// scrapes, so memory stays flat.
fn spawn_upkeep(handle: PrometheusHandle) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// Which protocol a request speaks, from its `Content-Type`.
pub fn protocol_from(content_type: Option<&http::HeaderValue>) -> &'static str {
    let ct = content_type.map(|v| v.as_bytes()).unwrap_or_default();
    if ct.starts_with(b"application/grpc-web") {
        "grpc-web"
    } else if ct.starts_with(b"application/grpc") {
        "grpc"
    } else {
        "http"
    }
}

/// The `method` label: the standard methods by name, anything else as `OTHER`, so a
/// client inventing methods cannot grow the series without bound.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// The label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Counts and times requests: [`REQUESTS_TOTAL`], [`REQUEST_DURATION`] and, for answers
/// that are problems, [`ERRORS_TOTAL`]. Routes are the matched templates
/// (`/v1/products/{id}`), never raw paths, so cardinality stays bounded.
///
/// The server's stack keeps one per route and method, and this caches the labelled
/// handles it has resolved: resolving them through the global recorder hashes and
/// allocates every label on every request, which measured ≈4% of a cached product read.
/// A handful of entries (protocol × status) per route, so a scan beats a map.
#[derive(Debug)]
pub struct RequestMetrics {
    service: &'static str,
    seen: RwLock<Vec<Seen>>,
    /// The service's error budget ([`crate::slo`]), which every judged request feeds.
    slo: Arc<crate::slo::Tracker>,
}

#[derive(Debug)]
struct Seen {
    route: Box<str>,
    protocol: &'static str,
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
    /// Whether the route's requests count toward the service's objectives (probes,
    /// metrics and documents do not).
    judged: bool,
}

/// What one served request is counted under.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub route: &'a str,
    pub protocol: &'static str,
    pub method: &'static str,
    pub status: http::StatusCode,
    pub elapsed: Duration,
    /// The problem kind the response carries, if it is one ([`ErrorKindLabel`]).
    pub error: Option<&'static str>,
    /// Whether the request failed on the service's side (a 5xx, or gRPC's equivalent):
    /// what spends its availability budget.
    pub server_fault: bool,
    /// The deadline the caller set, if it set one.
    pub client_deadline: Option<Duration>,
}

impl RequestMetrics {
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            seen: RwLock::new(Vec::new()),
            slo: crate::slo::tracker(service),
        }
    }

    pub fn record(&self, served: Served<'_>) {
        let status = served.status.as_u16();
        let matches = |s: &Seen| {
            s.status == status
                && s.protocol == served.protocol
                && s.method == served.method
                && *s.route == *served.route
        };
        let hit = {
            let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
            seen.iter().find(|s| matches(s)).map(|s| {
                s.requests.increment(1);
                s.duration.record(served.elapsed.as_secs_f64());
                s.judged
            })
        };
        let judged = match hit {
            Some(judged) => judged,
            None => {
                let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
                let entry = match seen.iter().position(matches) {
                    Some(i) => &seen[i],
                    None => {
                        seen.push(self.resolve(&served));
                        &seen[seen.len() - 1]
                    }
                };
                entry.requests.increment(1);
                entry.duration.record(served.elapsed.as_secs_f64());
                entry.judged
            }
        };
        // A request that timed out under a deadline its caller set shorter than the
        // latency objective is the caller's choice, not the service's failure: unjudged
        // (else any client could spend the budget with `grpc-timeout: 1m`).
        let callers_own_timeout = served.error == Some("timeout")
            && served
                .client_deadline
                .is_some_and(|d| d < self.slo.latency_threshold());
        if judged && !callers_own_timeout {
            self.slo.observe(served.server_fault, served.elapsed);
        }
        if let Some(kind) = served.error {
            // Rare enough to resolve each time.
            metrics::counter!(ERRORS_TOTAL,
                "service" => self.service, "protocol" => served.protocol,
                "route" => served.route.to_owned(), "kind" => kind)
            .increment(1);
        }
    }

    fn resolve(&self, served: &Served<'_>) -> Seen {
        let route = served.route.to_owned();
        Seen {
            requests: metrics::counter!(REQUESTS_TOTAL,
                "service" => self.service, "protocol" => served.protocol,
                "route" => route.clone(), "method" => served.method,
                "status" => served.status.as_u16().to_string()),
            duration: metrics::histogram!(REQUEST_DURATION,
                "service" => self.service, "protocol" => served.protocol,
                "route" => route.clone()),
            judged: judged(&route),
            route: route.into_boxed_str(),
            protocol: served.protocol,
            method: served.method,
            status: served.status.as_u16(),
        }
    }
}

/// Whether requests to `route` count toward the service's objectives: not the probes,
/// metrics, budgets and documents a machine or a person reads about the service.
pub fn judged(route: &str) -> bool {
    !(matches!(
        route,
        "/healthz" | "/readyz" | "/metrics" | "/slo" | "/openapi.json" | UNMATCHED
    ) || route.starts_with("/docs")
        || route.starts_with("/dashboard")
        || route.starts_with("/grpc.health.v1.Health/")
        || route.starts_with("/grpc.reflection."))
}

/// The error kinds that are the service's own failure (5xx): what spends availability.
pub fn is_server_fault(status: http::StatusCode, error: Option<&str>) -> bool {
    status.is_server_error() || matches!(error, Some("internal" | "unavailable" | "timeout"))
}

/// The error kind a response carries, for [`Served::error`].
pub fn error_kind(response: &Response) -> Option<&'static str> {
    response
        .extensions()
        .get::<ErrorKindLabel>()
        .map(|ErrorKindLabel(kind)| *kind)
}

/// The sum of the samples of `name` in Prometheus exposition text whose labels include
/// every one of `labels` (`name`'s own series only: `name_bucket` and friends are not
/// `name`). What tests, and tools reading `/metrics`, ask of a series.
pub fn series_value(rendered: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    rendered
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A caller's own too-short deadline is not the service's failure; a deadline the
    /// service missed with time to spare is; probes and unmatched paths are not judged.
    #[test]
    fn only_the_services_own_failures_and_routes_are_judged() {
        let recorder = isolated_recorder();
        metrics::with_local_recorder(&recorder, || {
            let m = RequestMetrics::new("judged-test");
            let served = |route, error, client_deadline: Option<Duration>| Served {
                route,
                protocol: "grpc",
                method: "POST",
                status: http::StatusCode::OK,
                elapsed: Duration::from_millis(2),
                error,
                server_fault: error.is_some(),
                client_deadline,
            };
            m.record(served(
                "/x.Y/Z",
                Some("timeout"),
                Some(Duration::from_millis(1)),
            ));
            m.record(served("/healthz", None, None));
            m.record(served(UNMATCHED, None, None));
            let r = crate::slo::report("judged-test").unwrap();
            assert_eq!(r.requests_total, 0, "{r:?}");
            m.record(served(
                "/x.Y/Z",
                Some("timeout"),
                Some(Duration::from_secs(10)),
            ));
            m.record(served("/x.Y/Z", None, None));
            let r = crate::slo::report("judged-test").unwrap();
            assert_eq!((r.requests_total, r.failed_total), (2, 1));
        });
    }

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        // Methods are case-sensitive: `get` is not GET.
        for invented in ["FOO", "BREW", "get"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "OTHER", "{invented}");
        }
    }
}
