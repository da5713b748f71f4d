//! `/v1/sandbox/behaviour`: how the sandbox behaves, read and set at run time.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use problem::{Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::Json;
use utoipa::ToSchema;

use super::AppState;
use crate::domain::{Behaviour, BehaviourPatch};

#[derive(Debug, Serialize, ToSchema)]
pub struct BehaviourView {
    /// Every charge and refund first waits this long.
    #[schema(maximum = 120000, example = 0)]
    pub latency_ms: u64,
    /// Plus a uniform extra wait of 0 to this.
    #[schema(maximum = 120000, example = 0)]
    pub latency_jitter_ms: u64,
    /// The share of charges declined (402, the failed charge recorded).
    #[schema(minimum = 0, maximum = 1, example = 0.0)]
    pub decline_rate: f64,
    /// The share of charges and refunds that fail with 503 after their wait, recording
    /// nothing.
    #[schema(minimum = 0, maximum = 1, example = 0.0)]
    pub error_rate: f64,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<Behaviour> for BehaviourView {
    fn from(b: Behaviour) -> Self {
        BehaviourView {
            latency_ms: millis(b.latency),
            latency_jitter_ms: millis(b.latency_jitter),
            decline_rate: b.decline_rate.get(),
            error_rate: b.error_rate.get(),
        }
    }
}

/// Only the fields present change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBehaviour {
    #[schema(minimum = 0, maximum = 120000, example = 1500)]
    #[serde(default, deserialize_with = "server::extract::optional_integer")]
    pub latency_ms: Option<i64>,
    #[schema(minimum = 0, maximum = 120000, example = 500)]
    #[serde(default, deserialize_with = "server::extract::optional_integer")]
    pub latency_jitter_ms: Option<i64>,
    #[schema(minimum = 0, maximum = 1, example = 0.1)]
    pub decline_rate: Option<f64>,
    #[schema(minimum = 0, maximum = 1, example = 0.05)]
    pub error_rate: Option<f64>,
}

/// The behaviour in force.
#[utoipa::path(
    get, path = "/v1/sandbox/behaviour", tag = "sandbox",
    responses((status = 200, description = "The behaviour in force.", body = BehaviourView))
)]
pub async fn get(State(state): State<AppState>) -> Response {
    axum::Json(BehaviourView::from(state.payments.behaviour())).into_response()
}

/// Change the behaviour.
///
/// For this process, until it restarts; calls already waiting keep the behaviour they
/// arrived under.
#[utoipa::path(
    put, path = "/v1/sandbox/behaviour", tag = "sandbox",
    request_body(content = UpdateBehaviour, content_type = "application/json"),
    responses(
        (status = 200, description = "The behaviour now in force.", body = BehaviourView),
        (status = 422, description = "A field is out of range; `errors` names every one.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Json(body): Json<UpdateBehaviour>,
) -> Result<Response, Problem> {
    let patch = BehaviourPatch::parse(
        body.latency_ms,
        body.latency_jitter_ms,
        body.decline_rate,
        body.error_rate,
    )
    .map_err(Problem::validation)?;
    let behaviour = state.payments.set_behaviour(patch);
    Ok(axum::Json(BehaviourView::from(behaviour)).into_response())
}
