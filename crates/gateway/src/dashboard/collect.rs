//! What the dashboard shows, from the services' own metrics: each reading folds the
//! Prometheus text of every service into running totals and current gauges; a snapshot
//! is the difference between the newest reading and the one a window (a minute) before
//! it, so rates and percentiles are "over the last minute", as Linkerd viz shows them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use telemetry::exposition::Sample;

/// A cumulative histogram: `(upper bound, count at or below it)`, sorted by bound.
#[derive(Debug, Default, Clone)]
pub struct Histogram(Vec<(f64, f64)>);

impl Histogram {
    fn add(&mut self, le: f64, count: f64) {
        match self.0.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => {
                let at = self.0.partition_point(|(b, _)| *b < le);
                self.0.insert(at, (le, count));
            }
        }
    }

    fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram(
            self.0
                .iter()
                .map(|&(le, c)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(b, _)| *b == le)
                        .map_or(0.0, |(_, c)| *c);
                    (le, increase(c, before))
                })
                .collect(),
        )
    }

    fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// Prometheus's `histogram_quantile`: linear within the bucket the rank falls in;
    /// the highest finite bound when it falls in `+Inf`. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, c) in &self.0 {
            if c >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let within = c - lower.1;
                let share = if within > 0.0 {
                    (rank - lower.1) / within
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, c);
        }
        Some(lower.0)
    }
}

/// A service's requests (those its objectives judge).
#[derive(Debug, Default, Clone)]
struct Served {
    requests: f64,
    failed: f64,
    duration: Histogram,
    unavailable: f64,
    timeouts: f64,
}

/// Calls from one service to another through its `Downstream`.
#[derive(Debug, Default, Clone)]
struct Calls {
    ok: f64,
    refused: f64,
    failed: f64,
    retries: f64,
    duration: Histogram,
}

/// A queue's or stream's deliveries to one consumer (group).
#[derive(Debug, Default, Clone)]
struct Deliveries {
    delivered: f64,
    settled_ok: f64,
    settled_other: f64,
    dead_lettered: f64,
}

/// A channel: `queue:order_processing`, `stream:order-events`.
type Channel = String;

/// Every service's metrics at one moment.
#[derive(Debug, Default, Clone)]
pub struct Reading {
    served: BTreeMap<String, Served>,
    calls: BTreeMap<(String, String), Calls>,
    published: BTreeMap<(String, Channel), (f64, f64)>,
    delivered: BTreeMap<(Channel, String, Option<String>), Deliveries>,
    accept_to_paid: Histogram,
    // Gauges: their value now.
    breakers: BTreeMap<(String, String), f64>,
    depth: BTreeMap<(String, String), f64>,
    lag: BTreeMap<(String, String), f64>,
    outbox: BTreeMap<String, f64>,
    orders: BTreeMap<String, f64>,
    budgets: BTreeMap<(String, String), Budget>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Budget {
    objective: f64,
    remaining: f64,
    burn: BTreeMap<String, f64>,
    page: bool,
    ticket: bool,
}

/// The name the topology gives what a `Downstream` calls.
fn node_of(downstream: &str) -> String {
    match downstream {
        "payments" => "payments-sandbox".to_owned(),
        other => other.to_owned(),
    }
}

fn channel_of(s: &Sample<'_>) -> Option<Channel> {
    s.label("queue")
        .map(|q| format!("queue:{q}"))
        .or_else(|| s.label("stream").map(|st| format!("stream:{st}")))
}

impl Reading {
    /// A service that did not answer this reading keeps the figures it had in
    /// `previous`: its rates read zero over the gap instead of negative, and the reading
    /// after it does not count its whole lifetime as new.
    pub fn carry(&mut self, previous: &Reading, service: &str) {
        fn keep<K: Ord + Clone, V: Clone>(
            into: &mut BTreeMap<K, V>,
            from: &BTreeMap<K, V>,
            owned: impl Fn(&K) -> bool,
        ) {
            for (k, v) in from.iter().filter(|(k, _)| owned(k)) {
                into.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        keep(&mut self.served, &previous.served, |k| k == service);
        keep(&mut self.calls, &previous.calls, |(from, _)| {
            from == service
        });
        keep(&mut self.published, &previous.published, |(from, _)| {
            from == service
        });
        keep(&mut self.delivered, &previous.delivered, |(_, to, _)| {
            to == service
        });
        keep(&mut self.breakers, &previous.breakers, |(from, _)| {
            from == service
        });
        keep(&mut self.outbox, &previous.outbox, |k| k == service);
        keep(&mut self.budgets, &previous.budgets, |(s, _)| s == service);
    }

    /// Folds one service's (or one process's) exposition text in.
    pub fn add(&mut self, text: &str) {
        for s in telemetry::exposition::parse(text) {
            self.add_sample(&s);
        }
    }

    fn add_sample(&mut self, s: &Sample<'_>) {
        let service = || s.label("service").unwrap_or_default().to_owned();
        match s.name {
            "brigade_slo_requests_total" => {
                let served = self.served.entry(service()).or_default();
                match s.label("outcome") {
                    Some("all") => served.requests += s.value,
                    Some("failed") => served.failed += s.value,
                    _ => {}
                }
            }
            "brigade_request_duration_seconds_bucket" => {
                let judged = s.label("route").is_some_and(telemetry::metrics::judged);
                if let (true, Some(le)) = (judged, s.label("le").and_then(parse_le)) {
                    let served = self.served.entry(service()).or_default();
                    served.duration.add(le, s.value);
                }
            }
            "brigade_errors_total" => {
                let served = self.served.entry(service()).or_default();
                match s.label("kind") {
                    Some("unavailable") => served.unavailable += s.value,
                    Some("timeout") => served.timeouts += s.value,
                    _ => {}
                }
            }
            "brigade_downstream_calls_total" | "brigade_retries_total" => {
                let Some(to) = s.label("downstream") else {
                    return;
                };
                let calls = self.calls.entry((service(), node_of(to))).or_default();
                if s.name == "brigade_retries_total" {
                    calls.retries += s.value;
                } else {
                    match s.label("outcome") {
                        Some("ok") => calls.ok += s.value,
                        Some("refused") => calls.refused += s.value,
                        _ => calls.failed += s.value,
                    }
                }
            }
            "brigade_downstream_call_duration_seconds_bucket" => {
                if let (Some(to), Some(le)) =
                    (s.label("downstream"), s.label("le").and_then(parse_le))
                {
                    let calls = self.calls.entry((service(), node_of(to))).or_default();
                    calls.duration.add(le, s.value);
                }
            }
            "brigade_breaker_state" => {
                if let Some(to) = s.label("breaker") {
                    self.breakers.insert((service(), node_of(to)), s.value);
                }
            }
            "brigade_messaging_published_total" | "brigade_messaging_publish_failures_total" => {
                if let Some(channel) = channel_of(s) {
                    let entry = self.published.entry((service(), channel)).or_default();
                    if s.name == "brigade_messaging_published_total" {
                        entry.0 += s.value;
                    } else {
                        entry.1 += s.value;
                    }
                }
            }
            "brigade_messaging_delivered_total"
            | "brigade_messaging_settled_total"
            | "brigade_messaging_dead_lettered_total" => {
                let Some(channel) = channel_of(s) else {
                    return;
                };
                let group = s.label("group").map(str::to_owned);
                let d = self
                    .delivered
                    .entry((channel, service(), group))
                    .or_default();
                match s.name {
                    "brigade_messaging_delivered_total" => d.delivered += s.value,
                    "brigade_messaging_dead_lettered_total" => d.dead_lettered += s.value,
                    _ => match s.label("outcome") {
                        Some("ack" | "commit") => d.settled_ok += s.value,
                        _ => d.settled_other += s.value,
                    },
                }
            }
            "brigade_messaging_queue_depth" => {
                if let (Some(q), Some(state)) = (s.label("queue"), s.label("state")) {
                    self.depth.insert((q.to_owned(), state.to_owned()), s.value);
                }
            }
            "brigade_messaging_consumer_lag" => {
                if let (Some(st), Some(g)) = (s.label("stream"), s.label("group")) {
                    self.lag.insert((st.to_owned(), g.to_owned()), s.value);
                }
            }
            "brigade_outbox_backlog" => {
                *self.outbox.entry(service()).or_default() += s.value;
            }
            "brigade_orders_by_status" => {
                if let Some(status) = s.label("status") {
                    self.orders.insert(status.to_owned(), s.value);
                }
            }
            "brigade_orders_accept_to_paid_seconds_bucket" => {
                if let Some(le) = s.label("le").and_then(parse_le) {
                    self.accept_to_paid.add(le, s.value);
                }
            }
            "brigade_slo_error_budget_remaining"
            | "brigade_slo_objective"
            | "brigade_slo_burn_rate"
            | "brigade_slo_alert" => {
                let Some(slo) = s.label("slo") else {
                    return;
                };
                let b = self.budgets.entry((service(), slo.to_owned())).or_default();
                match s.name {
                    "brigade_slo_error_budget_remaining" => b.remaining = s.value,
                    "brigade_slo_objective" => b.objective = s.value,
                    "brigade_slo_burn_rate" => {
                        if let Some(w) = s.label("window") {
                            b.burn.insert(w.to_owned(), s.value);
                        }
                    }
                    _ => match s.label("severity") {
                        Some("page") => b.page = s.value > 0.0,
                        Some("ticket") => b.ticket = s.value > 0.0,
                        _ => {}
                    },
                }
            }
            _ => {}
        }
    }
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        v => v.parse().ok(),
    }
}

/// How much a counter grew from `before` to `now`; a counter that went down was reset
/// (its process restarted) and counts from zero, as Prometheus's `increase` reads it.
fn increase(now: f64, before: f64) -> f64 {
    if now < before { now } else { now - before }
}

/// Per second (0 when the window is empty).
fn per_second(delta: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { delta / seconds } else { 0.0 }
}

fn ratio(good: f64, all: f64) -> Option<f64> {
    (all > 0.0).then(|| good / all)
}

fn millis(seconds: Option<f64>) -> Option<f64> {
    seconds.map(|s| (s * 1e6).round() / 1e3)
}

fn breaker_name(value: f64) -> &'static str {
    match value as u8 {
        0 => "closed",
        1 => "open",
        2 => "half_open",
        3 => "forced_open",
        _ => "disabled",
    }
}

/// How a service is reached, for the topology's edge labels.
fn protocol(from: &str, to: &str) -> &'static str {
    match (from, to) {
        // REST and gRPC forwarded, and GraphQL's gRPC calls, share one Downstream.
        ("gateway", _) => "rest+grpc",
        (_, "payments-sandbox") => "rest",
        (_, "broker") => "publish",
        _ => "grpc",
    }
}

/// Whether a service answered its scrape, and why not.
#[derive(Debug, Clone)]
pub struct Presence {
    pub service: &'static str,
    pub up: bool,
    pub error: Option<String>,
}

/// The dashboard's view: `now` against `then`, `seconds` apart.
pub fn snapshot(
    now: &Reading,
    then: &Reading,
    seconds: f64,
    presence: &[Presence],
    at_millis: i64,
) -> Value {
    let empty = Served::default();
    let mut nodes = Vec::new();
    for p in presence {
        let cur = now.served.get(p.service).unwrap_or(&empty);
        let old = then.served.get(p.service).unwrap_or(&empty);
        let requests = increase(cur.requests, old.requests);
        let failed = increase(cur.failed, old.failed).min(requests);
        let duration = cur.duration.since(&old.duration);
        let slo: BTreeMap<&str, &Budget> = now
            .budgets
            .iter()
            .filter(|((s, _), _)| s == p.service)
            .map(|((_, slo), b)| (slo.as_str(), b))
            .collect();
        nodes.push(json!({
            "id": p.service,
            "kind": "service",
            "up": p.up,
            "error": p.error,
            "requests_per_second": per_second(requests, seconds),
            "success_rate": ratio(requests - failed, requests),
            "p50_ms": millis(duration.quantile(0.5)),
            "p95_ms": millis(duration.quantile(0.95)),
            "p99_ms": millis(duration.quantile(0.99)),
            "unavailable_per_second": per_second(increase(cur.unavailable, old.unavailable), seconds),
            "deadlines_exceeded_per_second": per_second(increase(cur.timeouts, old.timeouts), seconds),
            "outbox_backlog": now.outbox.get(p.service),
            "slo": slo,
        }));
    }

    let mut edges = Vec::new();
    let zero = Calls::default();
    for ((from, to), cur) in &now.calls {
        if to == "broker" {
            // Publishing is shown per channel below; its breaker goes with it.
            continue;
        }
        let old = then.calls.get(&(from.clone(), to.clone())).unwrap_or(&zero);
        let first = increase(
            cur.ok + cur.refused + cur.failed,
            old.ok + old.refused + old.failed,
        );
        let good = increase(cur.ok + cur.refused, old.ok + old.refused).min(first);
        let duration = cur.duration.since(&old.duration);
        edges.push(json!({
            "from": from,
            "to": to,
            "protocol": protocol(from, to),
            "requests_per_second": per_second(first, seconds),
            "success_rate": ratio(good, first),
            "p50_ms": millis(duration.quantile(0.5)),
            "p95_ms": millis(duration.quantile(0.95)),
            "p99_ms": millis(duration.quantile(0.99)),
            "retries_per_second": per_second(increase(cur.retries, old.retries), seconds),
            "breaker": now.breakers.get(&(from.clone(), to.clone())).map(|v| breaker_name(*v)),
        }));
    }
    let mut channels: BTreeMap<&str, Value> = BTreeMap::new();
    for ((from, channel), &(sent, failed)) in &now.published {
        let (was_sent, was_failed) = then
            .published
            .get(&(from.clone(), channel.clone()))
            .copied()
            .unwrap_or_default();
        let sent_now = increase(sent, was_sent);
        let attempts = sent_now + increase(failed, was_failed);
        channels.entry(channel).or_insert(Value::Null);
        edges.push(json!({
            "from": from,
            "to": channel,
            "protocol": if channel.starts_with("queue:") { "queue" } else { "stream" },
            "requests_per_second": per_second(sent_now, seconds),
            "success_rate": ratio(sent_now, attempts),
            "breaker": now.breakers.get(&(from.clone(), "broker".to_owned())).map(|v| breaker_name(*v)),
        }));
    }
    let none = Deliveries::default();
    for ((channel, to, group), cur) in &now.delivered {
        let old = then
            .delivered
            .get(&(channel.clone(), to.clone(), group.clone()))
            .unwrap_or(&none);
        let settled = increase(
            cur.settled_ok + cur.settled_other,
            old.settled_ok + old.settled_other,
        );
        channels.entry(channel).or_insert(Value::Null);
        edges.push(json!({
            "from": channel,
            "to": to,
            "group": group,
            "protocol": if channel.starts_with("queue:") { "queue" } else { "stream" },
            "requests_per_second": per_second(increase(cur.delivered, old.delivered), seconds),
            "success_rate": ratio(increase(cur.settled_ok, old.settled_ok).min(settled), settled),
            "dead_lettered_per_second": per_second(increase(cur.dead_lettered, old.dead_lettered), seconds),
            "lag": group.as_ref().and_then(|g| {
                let stream = channel.strip_prefix("stream:")?;
                now.lag.get(&(stream.to_owned(), g.clone()))
            }),
        }));
    }
    for (channel, _) in channels {
        let (kind, name) = channel.split_once(':').unwrap_or(("queue", channel));
        let mut node = json!({ "id": channel, "kind": kind, "name": name, "up": true });
        if kind == "queue" {
            let depth: BTreeMap<&str, f64> = now
                .depth
                .iter()
                .filter(|((q, _), _)| q == name)
                .map(|((_, state), v)| (state.as_str(), *v))
                .collect();
            node["depth"] = json!(depth);
            node["dead_letters"] = json!(depth.get("dead").copied().unwrap_or(0.0));
            // The command works wherever the broker is reachable; the action, through
            // the queue's consumer, for the queues one of ours consumes.
            node["redrive"] = json!({ "command": format!("brigade dlq redrive {name}") });
            if crate::app::QUEUE_OWNERS.iter().any(|(q, _)| *q == name) {
                node["redrive"]["action"] = json!(format!("/dashboard/queues/{name}/redrive"));
            }
        } else {
            let lag: BTreeMap<&str, f64> = now
                .lag
                .iter()
                .filter(|((s, _), _)| s == name)
                .map(|((_, g), v)| (g.as_str(), *v))
                .collect();
            node["lag"] = json!(lag);
        }
        nodes.push(node);
    }
    let paid = now.accept_to_paid.since(&then.accept_to_paid);
    json!({
        "at": at_millis,
        "window_seconds": seconds,
        "nodes": nodes,
        "edges": edges,
        "orders": {
            "by_status": now.orders,
            "accept_to_paid": {
                "paid_per_second": per_second(paid.count(), seconds),
                "p50_ms": millis(paid.quantile(0.5)),
                "p99_ms": millis(paid.quantile(0.99)),
                "all_time_p50_ms": millis(now.accept_to_paid.quantile(0.5)),
                "all_time_p99_ms": millis(now.accept_to_paid.quantile(0.99)),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket_as_prometheus_does() {
        let mut h = Histogram::default();
        for (le, c) in [
            (0.1, 50.0),
            (0.2, 90.0),
            (0.5, 100.0),
            (f64::INFINITY, 100.0),
        ] {
            h.add(le, c);
        }
        assert_eq!(h.quantile(0.5), Some(0.1));
        // 90th of 100 sits at the top of (0.1, 0.2]; the 70th halfway up it.
        assert!((h.quantile(0.7).unwrap() - 0.15).abs() < 1e-9);
        assert!((h.quantile(0.95).unwrap() - 0.35).abs() < 1e-9);
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut over = Histogram::default();
        over.add(1.0, 0.0);
        over.add(f64::INFINITY, 4.0);
        assert_eq!(
            over.quantile(0.99),
            Some(1.0),
            "+Inf reads as the last bound"
        );
    }

    /// A restarted service's counters start again from zero: counted from zero, never
    /// negative; a service that missed a reading keeps its figures.
    #[test]
    fn a_reset_counts_from_zero_and_a_missed_reading_carries_the_last() {
        let text = |n: u64| {
            format!("brigade_slo_requests_total{{service=\"orders\",outcome=\"all\"}} {n}\n")
        };
        let presence = [Presence {
            service: "orders",
            up: true,
            error: None,
        }];
        let (mut then, mut now) = (Reading::default(), Reading::default());
        then.add(&text(1000));
        now.add(&text(30));
        let snap = snapshot(&now, &then, 10.0, &presence, 0);
        assert_eq!(snap["nodes"][0]["requests_per_second"], 3.0);
        // Down in the newest reading: its last figures carried, a rate of zero.
        let mut missed = Reading::default();
        missed.carry(&then, "orders");
        let snap = snapshot(&missed, &then, 10.0, &presence, 0);
        assert_eq!(snap["nodes"][0]["requests_per_second"], 0.0);
    }

    #[test]
    fn a_window_shows_rates_success_and_latency_of_services_and_edges() {
        let text = |requests: u64,
                    failed: u64,
                    slow_bucket: u64,
                    calls_ok: u64,
                    calls_err: u64,
                    retries: u64| {
            format!(
                "brigade_slo_requests_total{{service=\"orders\",outcome=\"all\"}} {requests}\n\
                 brigade_slo_requests_total{{service=\"orders\",outcome=\"failed\"}} {failed}\n\
                 brigade_request_duration_seconds_bucket{{service=\"orders\",protocol=\"http\",route=\"/v1/orders\",le=\"0.01\"}} {}\n\
                 brigade_request_duration_seconds_bucket{{service=\"orders\",protocol=\"http\",route=\"/v1/orders\",le=\"+Inf\"}} {requests}\n\
                 brigade_request_duration_seconds_bucket{{service=\"orders\",protocol=\"http\",route=\"/metrics\",le=\"0.01\"}} 999\n\
                 brigade_downstream_calls_total{{service=\"orders\",downstream=\"catalog\",outcome=\"ok\"}} {calls_ok}\n\
                 brigade_downstream_calls_total{{service=\"orders\",downstream=\"catalog\",outcome=\"error\"}} {calls_err}\n\
                 brigade_retries_total{{service=\"orders\",downstream=\"catalog\"}} {retries}\n\
                 brigade_breaker_state{{service=\"orders\",breaker=\"catalog\"}} 1\n\
                 brigade_messaging_published_total{{service=\"orders\",backend=\"embedded\",queue=\"order_processing\"}} {requests}\n\
                 brigade_messaging_delivered_total{{service=\"orders\",backend=\"embedded\",queue=\"order_processing\"}} {requests}\n\
                 brigade_messaging_queue_depth{{service=\"orders\",backend=\"embedded\",queue=\"order_processing\",state=\"dead\"}} 2\n",
                requests - slow_bucket
            )
        };
        let mut then = Reading::default();
        then.add(&text(100, 1, 0, 50, 0, 0));
        let mut now = Reading::default();
        now.add(&text(700, 31, 60, 350, 100, 40));
        let presence = [Presence {
            service: "orders",
            up: true,
            error: None,
        }];
        let snap = snapshot(&now, &then, 60.0, &presence, 0);
        let orders = &snap["nodes"][0];
        assert_eq!(orders["requests_per_second"], 10.0);
        assert_eq!(orders["success_rate"], 570.0 / 600.0);
        // 540 of 600 within 10 ms: the median inside that bucket, the p99 past it.
        assert!(orders["p50_ms"].as_f64().unwrap() <= 10.0, "{orders}");
        assert_eq!(orders["p99_ms"], 10.0, "{orders}");
        let edge = snap["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["to"] == "catalog")
            .unwrap();
        assert_eq!(edge["requests_per_second"], 400.0 / 60.0);
        assert_eq!(edge["success_rate"], 0.75);
        assert_eq!(edge["retries_per_second"], 40.0 / 60.0);
        assert_eq!(edge["breaker"], "open");
        assert_eq!(edge["protocol"], "grpc");
        let queue = snap["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "queue:order_processing")
            .unwrap();
        assert_eq!(queue["dead_letters"], 2.0);
        assert_eq!(
            queue["redrive"]["command"],
            "brigade dlq redrive order_processing"
        );
        assert_eq!(
            queue["redrive"]["action"],
            "/dashboard/queues/order_processing/redrive"
        );
    }
}
