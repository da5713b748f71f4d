//! `/healthz` (the process is alive), `/readyz` (it can do useful work: database
//! reachable, migrations applied) and `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use problem::Problem;
use storage::Database;

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(db): State<Database>) -> Result<impl IntoResponse, Problem> {
    match db.ping().await {
        Ok(()) => Ok(Json(serde_json::json!({
            "status": "ready",
            "checks": { "database": "ok", "migrations": "applied" },
        }))),
        Err(err) => Err(Problem::unavailable("the database is not ready").with_source(err)),
    }
}

pub async fn metrics(State(service): State<&'static str>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::metrics::render_for(service),
    )
}

/// The service's error budget ([`telemetry::slo`]): objectives, budget remaining, burn
/// rates and alerts, as JSON (`brigade slo` reads it from every service).
pub async fn slo(State(service): State<&'static str>) -> Result<impl IntoResponse, Problem> {
    telemetry::slo::report(service)
        .map(Json)
        .ok_or_else(|| Problem::not_found("this service keeps no error budget"))
}

/// Keeps the standard `grpc.health.v1.Health` service in step with `/readyz`, for the
/// whole server ("") and each of `names`: SERVING
/// while the database answers and migrations are applied, NOT_SERVING otherwise and once
/// shutdown begins (so balancers stop sending work before the port closes).
pub async fn report_grpc_readiness(
    db: Database,
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tonic_health::ServingStatus;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        report_readiness(&db, &reporter, &names).await;
    }
    for name in std::iter::once("").chain(names.iter().copied()) {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// One readiness check, reported for every name; `run_until_stopped` calls it once
/// before the port serves, so no caller ever finds a service unregistered.
pub async fn report_readiness(
    db: &Database,
    reporter: &tonic_health::server::HealthReporter,
    names: &[&'static str],
) {
    use tonic_health::ServingStatus;
    let status = match db.ping().await {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    };
    // The named services first and "" last, so a caller that saw "" SERVING finds
    // every service SERVING too.
    for name in names.iter().copied().chain(std::iter::once("")) {
        reporter.set_service_status(name, status).await;
    }
}
