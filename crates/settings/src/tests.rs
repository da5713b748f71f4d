use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::*;

fn layered(toml: &str) -> Result<Settings, ConfigError> {
    Settings::from_figment(
        Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml)),
    )
}

#[test]
fn defaults_are_the_documented_ports_and_sqlite_files() {
    let s = layered("").unwrap();
    let ports: Vec<u16> = ServiceName::ALL
        .iter()
        .map(|n| s.services.get(*n).port)
        .collect();
    assert_eq!(ports, [8080, 8081, 8082, 8083, 8084, 8085]);
    let url = s.database_url(ServiceName::Catalog);
    assert!(url.expose().starts_with("sqlite://"));
    assert!(url.expose().contains("catalog.db"));
}

#[test]
fn a_file_overrides_defaults() {
    let s = layered(
        r#"
        data_dir = "/tmp/b"
        shutdown_grace = "3s"
        [services.catalog]
        port = 0
        database_url = "postgres://app:hunter2@127.0.0.1/catalog"
        "#,
    )
    .unwrap();
    assert_eq!(s.shutdown_grace, Duration::from_secs(3));
    assert_eq!(s.services.catalog.port, 0);
    assert!(s.database_url(ServiceName::Catalog).is_postgres());
    // Unmentioned services keep their defaults.
    assert_eq!(s.services.accounts.port, 8082);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = layered("[services.catalog]\nprot = 1\nport = 2").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("prot"), "{msg}");
    let err = layered("colour = \"blue\"").unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn malformed_values_name_their_key() {
    let err = layered("[services.catalog]\nport = \"eighty\"").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("port"), "{msg}");
    let err = layered("shutdown_grace = \"soon\"").unwrap_err();
    assert!(err.to_string().contains("shutdown_grace"), "{err}");
    let err = layered("[services.orders]\nport = 1\ndatabase_url = \"mysql://x\"").unwrap_err();
    assert!(err.to_string().contains("database_url"), "{err}");
}

#[test]
fn semantic_checks_name_their_key() {
    let err = layered("[services.orders]\nport = 8081").unwrap_err();
    assert!(err.to_string().contains("services.orders.port"), "{err}");
    let err = layered("[log]\nfilter = \"info,[[\"").unwrap_err();
    assert!(err.to_string().contains("log.filter"), "{err}");
    let err = layered("[database]\nmax_connections = 0").unwrap_err();
    assert!(
        err.to_string().contains("database.max_connections"),
        "{err}"
    );
    // Several services may all ask for port 0.
    layered("[services.orders]\nport = 0\n[services.billing]\nport = 0").unwrap();
}

#[test]
fn passwords_never_print() {
    let url = DatabaseUrl::parse("postgres://app:hunter2@db.internal:5432/catalog").unwrap();
    assert!(!format!("{url}").contains("hunter2"));
    assert!(!format!("{url:?}").contains("hunter2"));
    assert_eq!(
        url.expose(),
        "postgres://app:hunter2@db.internal:5432/catalog"
    );
    let s = layered(
        "[services.catalog]\nport = 1\ndatabase_url = \"postgres://a:pw-hunter3@h/d\"\n\
         [identity]\ninternal_secret = \"the-internal-key-no-log-may-ever-show\"",
    )
    .unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("pw-hunter3"), "{shown}");
    assert!(!shown.contains("no-log-may-ever-show"), "{shown}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let err =
        Settings::figment(Some(std::path::Path::new("/nonexistent/brigade.toml"))).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/brigade.toml"));
}

#[test]
fn slo_objectives_are_shared_with_per_service_overrides() {
    let s = layered(
        r#"
        [slo]
        availability = 99.5
        [slo.services.payments_sandbox]
        latency_threshold = "5s"
        window = "7d"
        "#,
    )
    .unwrap();
    let catalog = s.slo.objectives(ServiceName::Catalog);
    assert_eq!(catalog.availability, 0.995);
    assert_eq!(catalog.latency, 0.99);
    assert_eq!(catalog.latency_threshold, Duration::from_millis(250));
    assert_eq!(catalog.window, Duration::from_secs(30 * 24 * 3600));
    let sandbox = s.slo.objectives(ServiceName::PaymentsSandbox);
    assert_eq!(sandbox.availability, 0.995);
    assert_eq!(sandbox.latency_threshold, Duration::from_secs(5));
    assert_eq!(sandbox.window, Duration::from_secs(7 * 24 * 3600));
    // The default, written as percent, reads as the fraction it means.
    assert_eq!(
        Settings::default()
            .slo
            .objectives(ServiceName::Gateway)
            .availability,
        0.999
    );
}

#[test]
fn slo_objectives_that_leave_no_budget_or_name_no_service_are_refused() {
    let err = layered("[slo]\navailability = 100").unwrap_err();
    assert!(err.to_string().contains("slo.availability"), "{err}");
    let err = layered("[slo.services.orders]\nlatency = 0").unwrap_err();
    assert!(
        err.to_string().contains("slo.services.orders.latency"),
        "{err}"
    );
    let err = layered("[slo.services.orders]\nwindow = \"5m\"").unwrap_err();
    assert!(
        err.to_string().contains("slo.services.orders.window"),
        "{err}"
    );
    let err = layered("[slo]\nlatency_threshold = \"0s\"").unwrap_err();
    assert!(err.to_string().contains("slo.latency_threshold"), "{err}");
    let err = layered("[slo.services.shop]\nlatency = 99").unwrap_err();
    assert!(err.to_string().contains("shop"), "{err}");
}
