//! Error budgets of a running system: `/slo`, `/metrics` and `brigade slo` agree, a
//! client's mistake spends nothing, and a service missing its latency objective on every
//! request burns its budget fast enough to page.

use crate::helpers::{
    SERVICES, brigade, get_json, metrics_text, on_free_ports, start, stop_cleanly,
};

#[tokio::test]
async fn a_service_missing_its_objective_pages_and_the_others_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = brigade(&data);
    // Catalog promises every request within a nanosecond: each one it serves is slow.
    cmd.arg("up")
        .arg("--no-seed")
        .env("BRIGADE_SLO__SERVICES__CATALOG__LATENCY_THRESHOLD", "1ns")
        // One address asking 120 times at once: past the anonymous limit (20/s).
        .env("BRIGADE_GATEWAY__LIMITS__ANONYMOUS__PER_SECOND", "100000")
        .env("BRIGADE_GATEWAY__LIMITS__ANONYMOUS__BURST", "100000");
    let mut running = start(on_free_ports(&mut cmd)).await;
    let gateway = &running.urls["gateway"];
    let client = reqwest::Client::new();
    // Enough for an alert to count (one unit of a 99 % budget: 100 requests).
    for _ in 0..120 {
        // A product that does not exist: 404, the client's mistake, through the
        // gateway to catalog.
        let r = client
            .get(format!("{gateway}/v1/products/999999"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    let catalog = get_json(&client, &format!("{}/slo", running.urls["catalog"])).await;
    // 404s spend no availability; every one of them missed the latency objective.
    assert_eq!(catalog["availability"]["bad"], 0, "{catalog}");
    assert_eq!(catalog["availability"]["budget_remaining"], 1.0);
    assert_eq!(catalog["latency"]["events"], 120, "{catalog}");
    assert_eq!(catalog["latency"]["bad"], 120);
    for burn in catalog["latency"]["burn"].as_array().unwrap() {
        // All bad against a 1 % budget: 100× the sustainable rate, on every window.
        let rate = burn["rate"].as_f64().unwrap();
        assert!((rate - 100.0).abs() < 1e-6, "{burn}");
    }
    assert_eq!(catalog["latency"]["page"], true);
    assert_eq!(catalog["latency"]["ticket"], true);
    assert_eq!(catalog["availability"]["page"], false);

    // The same in /metrics.
    let metrics = metrics_text(&client, &running.urls["catalog"]).await;
    let alert = |slo: &str, severity: &str| {
        telemetry::metrics::series_value(
            &metrics,
            "brigade_slo_alert",
            &[("service", "catalog"), ("slo", slo), ("severity", severity)],
        )
    };
    assert_eq!(alert("latency", "page"), 1.0, "{metrics}");
    assert_eq!(alert("availability", "page"), 0.0);

    // `brigade slo` asks every service at the addresses its configuration names.
    let mut slo = brigade(&data);
    slo.arg("slo").env("BRIGADE_LOG__FILTER", "warn");
    for service in SERVICES {
        let port = running.urls[service].rsplit(':').next().unwrap().to_owned();
        let key = service.to_uppercase().replace('-', "_");
        slo.env(format!("BRIGADE_SERVICES__{key}__PORT"), port);
    }
    let table = slo.output().await.unwrap();
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).unwrap();
    let row = |service: &str, slo: &str| {
        table
            .lines()
            .find(|l| l.starts_with(service) && l.split_whitespace().nth(1) == Some(slo))
            .unwrap_or_else(|| panic!("no {service} {slo} row in\n{table}"))
            .to_owned()
    };
    assert!(row("catalog", "latency").ends_with("PAGE"), "{table}");
    assert!(row("catalog", "availability").ends_with('-'), "{table}");
    assert!(row("gateway", "latency").ends_with('-'), "{table}");
    for service in SERVICES {
        row(service, "availability");
    }

    let json = slo.arg("--json").output().await.unwrap();
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(reports.len(), SERVICES.len());
    let catalog = reports.iter().find(|r| r["service"] == "catalog").unwrap();
    assert_eq!(catalog["latency"]["page"], true);
    assert_eq!(catalog["objectives"]["latency_threshold"], 1e-9);

    stop_cleanly(&mut running).await;

    // With nothing running, it says so and fails.
    let down = slo.output().await.unwrap();
    assert!(!down.status.success());
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(said.contains("no service answered"), "{said}");
}
