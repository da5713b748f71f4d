//! Prometheus metrics. One recorder per process (the `metrics` facade is global); every
//! series carries a `service` label, so the five services of `brigade up` stay apart.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ErrorKindLabel;

pub const REQUESTS_TOTAL: &str = "brigade_requests_total";
pub const ERRORS_TOTAL: &str = "brigade_errors_total";
pub const REQUEST_DURATION: &str = "brigade_request_duration_seconds";

/// Latency buckets from 1 ms to 10 s: internal calls live at the low end, the seed's
/// database and SaaS timeouts at the high end.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

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
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

/// Renders the series of one service (and any process-wide series without a `service`
/// label). `brigade up` runs five services in one process and one recorder; each
/// service's `/metrics` still shows only its own series, as it would alone.
pub fn render_for(service: &str) -> String {
    let own = format!("service=\"{service}\"");
    let mut out = String::new();
    for line in render().lines() {
        let keep = line.starts_with('#')
            || line.is_empty()
            || !line.contains("service=\"")
            || line.contains(&own);
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
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

/// Which protocol a request speaks, from its content type.
pub fn protocol_of(req: &Request) -> &'static str {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/grpc-web") {
        "grpc-web"
    } else if ct.starts_with("application/grpc") {
        "grpc"
    } else {
        "http"
    }
}

/// Counts and times every request. Routes are the matched templates
/// (`/v1/products/{id}`), never raw paths, so cardinality stays bounded.
pub async fn record(State(service): State<&'static str>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let protocol = protocol_of(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();

    let response = next.run(req).await;

    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS_TOTAL,
        "service" => service, "protocol" => protocol, "route" => route.clone(),
        "method" => method, "status" => status)
    .increment(1);
    metrics::histogram!(REQUEST_DURATION,
        "service" => service, "protocol" => protocol, "route" => route.clone())
    .record(start.elapsed().as_secs_f64());
    if let Some(ErrorKindLabel(kind)) = response.extensions().get::<ErrorKindLabel>() {
        metrics::counter!(ERRORS_TOTAL,
            "service" => service, "protocol" => protocol, "route" => route, "kind" => *kind)
        .increment(1);
    }
    response
}
