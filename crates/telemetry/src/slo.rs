//! Error budgets: the tutorial's rule 3 ("Your SLO defines how many errors are
//! acceptable ... track them as carefully as you track success rate"), done the way the
//! Google SRE workbook's chapter "Alerting on SLOs" does it.
//!
//! Each service has two service-level objectives over a window (30 days by default):
//! - **availability**: the share of requests that do not fail on the service's side (a
//!   5xx; a client's 4xx is the client's mistake and spends nothing);
//! - **latency**: the share of those that answer within a threshold.
//!
//! The budget is what the objective allows to go wrong (99.9 % → 0.1 % of requests);
//! *remaining* is the part of it not yet spent over the window. The *burn rate* over a
//! shorter window is how fast it is being spent: 1 spends the budget exactly over the
//! window, 14.4 spends 2 % of a 30-day budget in an hour. The workbook's multi-window
//! alerts: **page** when both the 1 h and 5 min burn rates exceed 14.4, **ticket** when
//! both the 6 h and 30 min rates exceed 6.
//!
//! A request costs the hot path two relaxed atomic adds ([`Tracker::observe`]). A task
//! per service ([`keep`]) samples the running totals every 10 s (for windows up to 6 h)
//! and every hour (for the budget's window), so memory is bounded whatever the traffic:
//! ~2,200 + 720 samples per service at the defaults. A window is measured from the
//! sample nearest before its start; a process younger than a window measures from its
//! start (what it knows), and says how much of the budget's window it covers.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// What a service promises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objectives {
    /// The share of requests that must not fail on the service's side (0.999).
    pub availability: f64,
    /// The share of successful requests that must answer within `latency_threshold` (0.99).
    pub latency: f64,
    #[serde(with = "seconds")]
    pub latency_threshold: Duration,
    /// The window the budget is counted over (30 days).
    #[serde(with = "seconds")]
    pub window: Duration,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            availability: 0.999,
            latency: 0.99,
            latency_threshold: Duration::from_millis(250),
            window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The burn-rate windows and the workbook's alert pairs over them.
pub const BURN_WINDOWS: [(&str, Duration); 4] = [
    ("5m", Duration::from_secs(5 * 60)),
    ("30m", Duration::from_secs(30 * 60)),
    ("1h", Duration::from_secs(3600)),
    ("6h", Duration::from_secs(6 * 3600)),
];
/// Page: 2 % of a 30-day budget in an hour (1 h and 5 min both above it).
pub const PAGE_BURN: f64 = 14.4;
/// Ticket: 5 % of a 30-day budget in 6 hours (6 h and 30 min both above it).
pub const TICKET_BURN: f64 = 6.0;

const FINE_STEP: Duration = Duration::from_secs(10);
const COARSE_STEP: Duration = Duration::from_secs(3600);
/// The longest burn window; fine samples older than it (and one step) are dropped.
const FINE_SPAN: Duration = Duration::from_secs(6 * 3600 + 10);

/// The running totals at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    total: u64,
    failed: u64,
    slow: u64,
}

#[derive(Debug)]
struct History {
    /// When tracking began, with everything at zero.
    started: Sample,
    fine: VecDeque<Sample>,
    coarse: VecDeque<Sample>,
}

/// One service's objectives and the counts it is judged by.
#[derive(Debug)]
pub struct Tracker {
    service: &'static str,
    total: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    /// The latency threshold in nanoseconds, read on every request.
    threshold_nanos: AtomicU64,
    objectives: RwLock<Objectives>,
    history: Mutex<History>,
}

impl Tracker {
    pub fn new(service: &'static str, objectives: Objectives) -> Self {
        Tracker {
            service,
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            threshold_nanos: AtomicU64::new(nanos(objectives.latency_threshold)),
            objectives: RwLock::new(objectives),
            history: Mutex::new(History {
                started: Sample {
                    at: Instant::now(),
                    total: 0,
                    failed: 0,
                    slow: 0,
                },
                fine: VecDeque::new(),
                coarse: VecDeque::new(),
            }),
        }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn objectives(&self) -> Objectives {
        *self
            .objectives
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// New objectives; the counts so far stay (a request is judged slow against the
    /// threshold in force when it was served).
    pub fn set_objectives(&self, objectives: Objectives) {
        self.threshold_nanos
            .store(nanos(objectives.latency_threshold), Ordering::Relaxed);
        *self
            .objectives
            .write()
            .unwrap_or_else(PoisonError::into_inner) = objectives;
    }

    /// The latency objective's threshold now.
    pub fn latency_threshold(&self) -> Duration {
        Duration::from_nanos(self.threshold_nanos.load(Ordering::Relaxed))
    }

    /// One request served: `failed` when it failed on the service's side (5xx).
    pub fn observe(&self, failed: bool, elapsed: Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        } else if nanos(elapsed) > self.threshold_nanos.load(Ordering::Relaxed) {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn now(&self) -> Sample {
        // `failed` and `slow` are read before `total`: a request counted between the
        // reads makes the bad share a hair lower, never above 1.
        let failed = self.failed.load(Ordering::Relaxed);
        let slow = self.slow.load(Ordering::Relaxed);
        Sample {
            at: Instant::now(),
            total: self.total.load(Ordering::Relaxed),
            failed,
            slow,
        }
    }

    /// Records the running totals (every 10 s from [`keep`]).
    pub fn sample(&self) {
        let now = self.now();
        let window = self.objectives().window;
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let last_fine = history.fine.back().map_or(history.started.at, |s| s.at);
        // Half a step: a tick that wakes a little late after one that woke later still
        // takes its sample (comparing with the whole step would skip it, leaving 20 s gaps).
        if history.fine.is_empty() || now.at.duration_since(last_fine) >= FINE_STEP / 2 {
            history.fine.push_back(now);
        }
        // Keep one sample at or before each window's start, so the window is whole.
        while history
            .fine
            .get(1)
            .is_some_and(|s| now.at.duration_since(s.at) >= FINE_SPAN)
        {
            history.fine.pop_front();
        }
        let last_coarse = history.coarse.back().map_or(history.started.at, |s| s.at);
        if now.at.duration_since(last_coarse) >= COARSE_STEP - FINE_STEP / 2 {
            history.coarse.push_back(now);
        }
        while history
            .coarse
            .get(1)
            .is_some_and(|s| now.at.duration_since(s.at) >= window)
        {
            history.coarse.pop_front();
        }
    }

    /// The budget and burn rates now.
    pub fn report(&self) -> Report {
        let now = self.now();
        let objectives = self.objectives();
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        // The latest sample at or before `now - window`, or the oldest known.
        let since = |window: Duration| -> Sample {
            let start = now.at.checked_sub(window);
            let candidates = std::iter::once(&history.started)
                .chain(history.coarse.iter())
                .chain(history.fine.iter());
            let mut best = history.started;
            if let Some(start) = start {
                for s in candidates {
                    if s.at <= start && s.at >= best.at {
                        best = *s;
                    }
                }
            }
            best
        };
        let budget_from = since(objectives.window);
        let covered = now.at.duration_since(budget_from.at).min(objectives.window);
        let burns: Vec<(&'static str, Duration, Sample)> = BURN_WINDOWS
            .iter()
            .map(|&(name, window)| (name, window, since(window)))
            .collect();
        drop(history);

        let sli = |objective: f64, events: fn(&Sample) -> u64, bad: fn(&Sample) -> u64| {
            let allowed = 1.0 - objective;
            let (window_events, window_bad) = delta(&now, &budget_from, events, bad);
            let burn: Vec<Burn> = burns
                .iter()
                .map(|(name, window, from)| {
                    let (e, b) = delta(&now, from, events, bad);
                    Burn {
                        window: name,
                        seconds: window.as_secs(),
                        rate: ratio(b, e) / allowed,
                    }
                })
                .collect();
            // A burn rate over a handful of requests is noise: an alert needs at least
            // as many events in its long window as it takes to spend one unit of the
            // budget at the objective (1,000 at 99.9 %, 100 at 99 %).
            let enough = (1.0 / allowed).ceil().min(1e9) as u64;
            let rate = |name: &str| {
                burn.iter()
                    .zip(burns.iter())
                    .find(|(b, _)| b.window == name)
                    .filter(|(_, (_, _, from))| delta(&now, from, events, bad).0 >= enough)
                    .map_or(0.0, |(b, _)| b.rate)
            };
            Sli {
                objective,
                events: window_events,
                bad: window_bad,
                good_ratio: 1.0 - ratio(window_bad, window_events),
                budget_remaining: 1.0 - ratio(window_bad, window_events) / allowed,
                page: rate("1h") > PAGE_BURN && rate("5m") > PAGE_BURN,
                ticket: rate("6h") > TICKET_BURN && rate("30m") > TICKET_BURN,
                burn,
            }
        };
        Report {
            service: self.service,
            objectives,
            covered_seconds: covered.as_secs(),
            requests_total: now.total,
            failed_total: now.failed,
            slow_total: now.slow,
            availability: sli(objectives.availability, |s| s.total, |s| s.failed),
            latency: sli(
                objectives.latency,
                // Relaxed loads may see a failure before its request: never below zero.
                |s| s.total.saturating_sub(s.failed),
                |s| s.slow,
            ),
        }
    }
}

fn delta(
    now: &Sample,
    from: &Sample,
    events: fn(&Sample) -> u64,
    bad: fn(&Sample) -> u64,
) -> (u64, u64) {
    (
        events(now).saturating_sub(events(from)),
        bad(now).saturating_sub(bad(from)),
    )
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One service's budget and burn, as `/slo` answers and `brigade slo` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub service: &'static str,
    pub objectives: Objectives,
    /// How much of the budget's window the figures cover (the process's age, at most
    /// the window).
    pub covered_seconds: u64,
    /// Judged requests since the process started, those that failed on the service's
    /// side, and the successful ones slower than the threshold (Prometheus counters, for
    /// a board's own windows).
    pub requests_total: u64,
    pub failed_total: u64,
    pub slow_total: u64,
    pub availability: Sli,
    pub latency: Sli,
}

/// One objective's standing.
#[derive(Debug, Clone, Serialize)]
pub struct Sli {
    pub objective: f64,
    /// Requests judged over the budget's window (for latency: the successful ones).
    pub events: u64,
    /// Those that missed the objective.
    pub bad: u64,
    pub good_ratio: f64,
    /// 1 = untouched, 0 = spent, below 0 = overspent.
    pub budget_remaining: f64,
    pub burn: Vec<Burn>,
    /// The workbook's fast-burn alert (1 h and 5 min above 14.4).
    pub page: bool,
    /// The slow-burn alert (6 h and 30 min above 6).
    pub ticket: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Burn {
    pub window: &'static str,
    pub seconds: u64,
    pub rate: f64,
}

mod seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

static TRACKERS: OnceLock<RwLock<Vec<Arc<Tracker>>>> = OnceLock::new();

fn trackers() -> &'static RwLock<Vec<Arc<Tracker>>> {
    TRACKERS.get_or_init(|| RwLock::new(Vec::new()))
}

/// The process's tracker for `service` (made with the default objectives on first use).
pub fn tracker(service: &'static str) -> Arc<Tracker> {
    if let Some(t) = trackers()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|t| t.service == service)
    {
        return Arc::clone(t);
    }
    let mut all = trackers().write().unwrap_or_else(PoisonError::into_inner);
    if let Some(t) = all.iter().find(|t| t.service == service) {
        return Arc::clone(t);
    }
    let t = Arc::new(Tracker::new(service, Objectives::default()));
    all.push(Arc::clone(&t));
    t
}

/// Sets `service`'s objectives (from its configuration, when it starts).
pub fn configure(service: &'static str, objectives: Objectives) {
    tracker(service).set_objectives(objectives);
}

/// Samples `service`'s totals every 10 s until `stop` (a service runs it beside its
/// server).
pub async fn keep(service: &'static str, stop: impl Future<Output = ()>) {
    let tracker = tracker(service);
    let mut tick = tokio::time::interval(FINE_STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => tracker.sample(),
            () = &mut stop => return,
        }
    }
}

/// Whether `service` has a tracker in this process (it serves here).
pub fn tracks(service: &str) -> bool {
    trackers()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|t| t.service == service)
}

/// `service`'s report, if it has a tracker in this process.
pub fn report(service: &str) -> Option<Report> {
    let t = trackers()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|t| t.service == service)
        .cloned()?;
    Some(t.report())
}

/// The Prometheus series of `service`'s budget (every service's when `None`), appended to
/// `/metrics`: objectives, budget remaining, burn rates per window and the two alerts.
pub fn render(service: Option<&str>) -> String {
    let reports: Vec<Report> = trackers()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|t| service.is_none_or(|s| s == t.service))
        .cloned()
        .collect::<Vec<_>>()
        .iter()
        .map(|t| t.report())
        .collect();
    let mut out = String::new();
    if reports.is_empty() {
        return out;
    }
    let family = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
    };
    let each = |out: &mut String, f: &dyn Fn(&mut String, &str, &str, &Sli)| {
        for r in &reports {
            f(out, r.service, "availability", &r.availability);
            f(out, r.service, "latency", &r.latency);
        }
    };
    let _ = writeln!(
        out,
        "# HELP brigade_slo_requests_total Requests judged against the service's objectives; failed: on the service's side; slow: successful but over the latency threshold."
    );
    let _ = writeln!(out, "# TYPE brigade_slo_requests_total counter");
    for r in &reports {
        for (outcome, n) in [
            ("all", r.requests_total),
            ("failed", r.failed_total),
            ("slow", r.slow_total),
        ] {
            let _ = writeln!(
                out,
                "brigade_slo_requests_total{{service=\"{}\",outcome=\"{outcome}\"}} {n}",
                r.service
            );
        }
    }
    // The gauges with one value per service and objective.
    type PerSli = (&'static str, &'static str, fn(&Sli) -> f64);
    let per_sli: [PerSli; 2] = [
        (
            "brigade_slo_objective",
            "The share of requests the objective promises good (availability: not a 5xx; latency: within the threshold).",
            |sli| sli.objective,
        ),
        (
            "brigade_slo_error_budget_remaining",
            "The share of the error budget not yet spent over the SLO window (1 untouched, 0 spent, below 0 overspent).",
            |sli| sli.budget_remaining,
        ),
    ];
    for (name, help, value) in per_sli {
        family(&mut out, name, help);
        each(&mut out, &|out, service, slo, sli| {
            let _ = writeln!(
                out,
                "{name}{{service=\"{service}\",slo=\"{slo}\"}} {}",
                value(sli)
            );
        });
    }
    family(
        &mut out,
        "brigade_slo_burn_rate",
        "How fast the error budget is spent over the window (1 = exactly over the SLO window).",
    );
    each(&mut out, &|out, service, slo, sli| {
        for b in &sli.burn {
            let _ = writeln!(
                out,
                "brigade_slo_burn_rate{{service=\"{service}\",slo=\"{slo}\",window=\"{}\"}} {}",
                b.window, b.rate
            );
        }
    });
    family(
        &mut out,
        "brigade_slo_alert",
        "1 while the SRE workbook's multi-window burn-rate alert fires (page: 1h and 5m above 14.4; ticket: 6h and 30m above 6).",
    );
    each(&mut out, &|out, service, slo, sli| {
        for (severity, on) in [("page", sli.page), ("ticket", sli.ticket)] {
            let _ = writeln!(
                out,
                "brigade_slo_alert{{service=\"{service}\",slo=\"{slo}\",severity=\"{severity}\"}} {}",
                u8::from(on)
            );
        }
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FAST: Duration = Duration::from_millis(10);

    fn serve(t: &Tracker, n: u64, failed: u64) {
        for i in 0..n {
            t.observe(i < failed, FAST);
        }
    }

    fn burn(sli: &Sli, window: &str) -> f64 {
        sli.burn.iter().find(|b| b.window == window).unwrap().rate
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_served_spends_nothing() {
        let t = Tracker::new("svc", Objectives::default());
        let r = t.report();
        assert_eq!(r.availability.budget_remaining, 1.0);
        assert_eq!(burn(&r.availability, "5m"), 0.0);
        assert!(!r.availability.page && !r.availability.ticket);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_and_burn_follow_the_failures_and_the_slow() {
        let t = Tracker::new("svc", Objectives::default());
        // 1 % failed against a 0.1 % budget: burning 10× as fast as allowed.
        serve(&t, 1000, 10);
        // 2 of the 990 that succeeded are slower than 250 ms (0.2 % of a 1 % budget).
        t.observe(false, Duration::from_millis(300));
        t.observe(false, Duration::from_secs(1));
        let r = t.report();
        assert_eq!(r.availability.events, 1002);
        assert_eq!(r.availability.bad, 10);
        let spent = (10.0 / 1002.0) / 0.001;
        assert!((r.availability.budget_remaining - (1.0 - spent)).abs() < 1e-9);
        assert!((burn(&r.availability, "1h") - spent).abs() < 1e-9);
        assert_eq!(r.latency.events, 992);
        assert_eq!(r.latency.bad, 2);
        assert!((burn(&r.latency, "5m") - (2.0 / 992.0) / 0.01).abs() < 1e-9);
        // 10× is under the page (14.4) and only a young process's 6 h: ticket fires.
        assert!(!r.availability.page);
        assert!(r.availability.ticket);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_window_forgets_what_a_long_one_keeps() {
        let t = Tracker::new("svc", Objectives::default());
        // An hour of failures at 2 % (20× the budget), sampled as `keep` would.
        for _ in 0..360 {
            serve(&t, 100, 2);
            tokio::time::advance(FINE_STEP).await;
            t.sample();
        }
        let r = t.report();
        assert!(r.availability.page, "{r:?}");
        assert!((burn(&r.availability, "5m") - 20.0).abs() < 1e-9);
        // Then forty minutes clean: the 5 min and 30 min windows see nothing bad, the
        // 1 h window a third of the hour's failures, and the page stops.
        for _ in 0..240 {
            serve(&t, 100, 0);
            tokio::time::advance(FINE_STEP).await;
            t.sample();
        }
        let r = t.report();
        assert_eq!(burn(&r.availability, "5m"), 0.0);
        assert_eq!(burn(&r.availability, "30m"), 0.0);
        let hour = burn(&r.availability, "1h");
        assert!((hour - 20.0 / 3.0).abs() < 0.1, "{hour}");
        assert!(!r.availability.page);
        // The budget's window keeps all of it: 720 failed of 60,000.
        assert_eq!(r.availability.bad, 720);
        assert_eq!(r.availability.events, 60_000);
        assert_eq!(r.covered_seconds, 6_000);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_over_days() {
        let t = Tracker::new(
            "svc",
            Objectives {
                window: Duration::from_secs(2 * 24 * 3600),
                ..Objectives::default()
            },
        );
        for _ in 0..(3 * 24 * 360) {
            serve(&t, 1, 0);
            tokio::time::advance(FINE_STEP).await;
            t.sample();
        }
        let history = t.history.lock().unwrap();
        assert!(history.fine.len() <= 6 * 360 + 2, "{}", history.fine.len());
        assert!(history.coarse.len() <= 49, "{}", history.coarse.len());
        drop(history);
        // Three days served, a two-day window counted.
        let r = t.report();
        assert_eq!(r.covered_seconds, 2 * 24 * 3600);
        assert!((r.availability.events as i64 - 2 * 24 * 360).abs() <= 360);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_samples_until_stopped() {
        let t = tracker("keep-test");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(keep("keep-test", async move {
            let _ = stopped.await;
        }));
        t.observe(false, FAST);
        for _ in 0..3 {
            tokio::time::advance(FINE_STEP).await;
            tokio::task::yield_now().await;
        }
        let last = t.history.lock().unwrap().fine.back().map(|s| s.total);
        assert_eq!(last, Some(1), "the request was sampled");
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_series_name_every_objective_window_and_alert() {
        let t = tracker("render-test");
        t.observe(true, FAST);
        // One failed request spends the budget a thousandfold, but is too few to page on.
        let alone = render(Some("render-test"));
        assert!(alone.contains(
            "brigade_slo_alert{service=\"render-test\",slo=\"availability\",severity=\"page\"} 0"
        ));
        // A thousand of them are enough (one unit of a 99.9 % budget).
        for _ in 0..999 {
            t.observe(true, FAST);
        }
        let text = render(Some("render-test"));
        for needle in [
            "brigade_slo_objective{service=\"render-test\",slo=\"availability\"} 0.999",
            "brigade_slo_burn_rate{service=\"render-test\",slo=\"latency\",window=\"6h\"} 0",
            "brigade_slo_alert{service=\"render-test\",slo=\"availability\",severity=\"page\"} 1",
            "brigade_slo_requests_total{service=\"render-test\",outcome=\"failed\"} 1000",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert!(!text.contains("service=\"keep-test\""));
        // Every request failed: the budget (0.1 %) spent a thousand times over.
        let remaining = crate::metrics::series_value(
            &text,
            "brigade_slo_error_budget_remaining",
            &[("service", "render-test"), ("slo", "availability")],
        );
        assert!((remaining + 999.0).abs() < 1e-6, "{remaining}");
    }
}
