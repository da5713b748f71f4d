//! `/v1/refunds`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use idempotency::IdempotentJson;
use problem::{Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::Query;
use utoipa::ToSchema;

use super::AppState;
use super::charges::{ListObject, bad_query};
use crate::app::KeyedWrite;
use crate::domain::{ChargeId, NewRefund, Refund};

/// Always `refund`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefundObject {
    Refund,
}

/// Refunds in the sandbox always succeed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefundStatus {
    Succeeded,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    #[schema(
        example = "re_0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
        pattern = r"^re_[0-9a-f]{32}$"
    )]
    pub id: String,
    pub object: RefundObject,
    /// The refunded charge.
    #[schema(
        example = "ch_3f9d1c0e8b7a4f2e9c6d5b4a3e2f1d0c",
        pattern = r"^ch_[0-9a-f]{32}$"
    )]
    pub charge: String,
    /// Minor units (cents).
    #[schema(example = 500)]
    pub amount: i64,
    pub status: RefundStatus,
    /// Unix seconds.
    #[schema(example = 1767225600)]
    pub created: i64,
}

impl From<&Refund> for RefundView {
    fn from(r: &Refund) -> Self {
        RefundView {
            id: r.id.as_str().to_owned(),
            object: RefundObject::Refund,
            charge: r.charge.as_str().to_owned(),
            amount: r.amount.cents(),
            status: RefundStatus::Succeeded,
            created: r.created_at.div_euclid(1000),
        }
    }
}

/// The refunds of one charge.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundList {
    pub object: ListObject,
    /// Oldest first.
    pub data: Vec<RefundView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// The charge to refund (`ch_...`).
    #[schema(
        pattern = r"^ch_[0-9a-f]{32}$",
        example = "ch_3f9d1c0e8b7a4f2e9c6d5b4a3e2f1d0c"
    )]
    pub charge: String,
    /// Minor units (cents), 1–99999999; at most what is left to refund. Absent: all that
    /// is left.
    #[schema(minimum = 1, maximum = 99999999, example = 500)]
    #[serde(default, deserialize_with = "server::extract::optional_integer")]
    pub amount: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefundsQuery {
    /// Required: the charge whose refunds to list (`ch_...`).
    #[param(required = true, pattern = r"^ch_[0-9a-f]{32}$")]
    pub charge: Option<String>,
}

/// The refunds of one charge.
#[utoipa::path(
    get, path = "/v1/refunds", tag = "refunds",
    params(RefundsQuery),
    responses(
        (status = 200, description = "Every refund of the charge, oldest first.", body = RefundList),
        (status = 400, description = "`charge` is missing or malformed.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such charge.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<RefundsQuery>,
) -> Result<Response, Problem> {
    let raw = query
        .charge
        .ok_or_else(|| bad_query("charge", "is required"))?;
    let charge = ChargeId::parse(&raw).map_err(|r| bad_query("charge", r))?;
    let refunds = state.payments.refunds_of_charge(&charge).await?;
    let body = RefundList {
        object: ListObject::List,
        data: refunds.iter().map(RefundView::from).collect(),
    };
    Ok(axum::Json(body).into_response())
}

/// Refund (part of) a charge.
///
/// The charge's `amount_refunded` and `refunded` change with it. Waits or fails as the
/// sandbox's behaviour says (see the introduction); refunds are never declined.
#[utoipa::path(
    post, path = "/v1/refunds", tag = "refunds",
    params(("Idempotency-Key" = String, Header, description = "Required: makes the refund safe to retry (1–255 visible ASCII characters). A retry with the same key and body gets the first answer and refunds nothing more.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    request_body(content = CreateRefund, content_type = "application/json"),
    responses(
        (status = 200, description = "Refunded.", body = RefundView),
        (status = 404, description = "No such charge.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still being processed.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields; the Idempotency-Key was used for a different request; or `business-rule-violated`: the charge failed, is fully refunded, or has less left than `amount` (`amount_refundable` says how much).", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "A simulated outage (`error_rate`) or the database is unavailable: nothing was recorded; retry with the same key.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    request: IdempotentJson<CreateRefund>,
) -> Result<Response, Problem> {
    let new =
        NewRefund::parse(&request.body.charge, request.body.amount).map_err(Problem::validation)?;
    let write = KeyedWrite::of(&request);
    Ok(state.payments.refund(write, new, refunded).await)
}

fn refunded(refund: &Refund) -> Result<Response, Problem> {
    Ok(axum::Json(RefundView::from(refund)).into_response())
}
