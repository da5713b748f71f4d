//! `/v1/charges` and `/v1/charges/{id}`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use idempotency::IdempotentJson;
use problem::{FieldError, Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::{Path, Query};
use utoipa::ToSchema;

use super::AppState;
use crate::app::{KeyedWrite, PaymentsError};
use crate::domain::{Charge, ChargeId, NewCharge, OrderRef, Outcome};

/// Always `charge`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChargeObject {
    Charge,
}

/// Always `list`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    List,
}

/// `failed`: declined; no money moved.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChargeStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    #[schema(
        example = "ch_3f9d1c0e8b7a4f2e9c6d5b4a3e2f1d0c",
        pattern = r"^ch_[0-9a-f]{32}$"
    )]
    pub id: String,
    pub object: ChargeObject,
    /// Minor units (cents).
    #[schema(example = 1999)]
    pub amount: i64,
    #[schema(example = "usd")]
    pub currency: String,
    #[schema(example = "order-42")]
    pub order_id: String,
    /// As given at creation; `null` when none was.
    #[schema(required = true)]
    pub description: Option<String>,
    pub status: ChargeStatus,
    /// Cents refunded so far.
    pub amount_refunded: i64,
    /// Whether all of it has been refunded.
    pub refunded: bool,
    /// Why it failed (`card_declined`); `null` when it succeeded.
    #[schema(required = true)]
    pub failure_code: Option<String>,
    /// Why it failed, for the customer; `null` when it succeeded.
    #[schema(required = true)]
    pub failure_message: Option<String>,
    /// Unix seconds.
    #[schema(example = 1767225600)]
    pub created: i64,
}

impl From<&Charge> for ChargeView {
    fn from(c: &Charge) -> Self {
        let (status, failure_code, failure_message) = match &c.outcome {
            Outcome::Succeeded => (ChargeStatus::Succeeded, None, None),
            Outcome::Failed(decline) => (
                ChargeStatus::Failed,
                Some(decline.failure_code.clone()),
                Some(decline.failure_message.clone()),
            ),
        };
        ChargeView {
            id: c.id.as_str().to_owned(),
            object: ChargeObject::Charge,
            amount: c.amount.cents(),
            currency: c.currency.as_str().to_owned(),
            order_id: c.order_id.as_str().to_owned(),
            description: c.description.as_ref().map(|d| d.as_str().to_owned()),
            status,
            amount_refunded: c.amount_refunded,
            refunded: c.refunded(),
            failure_code,
            failure_message,
            created: c.created_at.div_euclid(1000),
        }
    }
}

/// The ledger of one order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeList {
    pub object: ListObject,
    /// Oldest first.
    pub data: Vec<ChargeView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCharge {
    /// Minor units (cents), 1–99999999.
    #[schema(minimum = 1, maximum = 99999999, example = 1999)]
    #[serde(deserialize_with = "server::extract::integer")]
    pub amount: i64,
    /// Three lowercase letters (ISO 4217).
    #[schema(pattern = r"^[a-z]{3}$", example = "usd")]
    pub currency: String,
    /// The caller's order this pays for; the ledger is searched by it.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[\x21-\x7E]{1,64}$",
        example = "order-42"
    )]
    pub order_id: String,
    /// 1–500 characters, one line (no control characters), not blank; surrounding spaces
    /// are trimmed.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChargesQuery {
    /// Required: the order whose charges to list.
    #[param(
        required = true,
        min_length = 1,
        max_length = 64,
        pattern = r"^[\x21-\x7E]{1,64}$"
    )]
    pub order_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChargePath {
    /// The charge's id (`ch_...`).
    pub id: String,
}

/// The ledger of one order: every charge made for it, declined ones included.
#[utoipa::path(
    get, path = "/v1/charges", tag = "charges",
    params(ChargesQuery),
    responses(
        (status = 200, description = "Every charge of the order, oldest first (an empty list for an order never charged).", body = ChargeList),
        (status = 400, description = "`order_id` is missing or malformed.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ChargesQuery>,
) -> Result<Response, Problem> {
    let raw = query
        .order_id
        .ok_or_else(|| bad_query("order_id", "is required"))?;
    let order_id = OrderRef::parse(&raw).map_err(|r| bad_query("order_id", r))?;
    let charges = state.payments.charges_of_order(&order_id).await?;
    let body = ChargeList {
        object: ListObject::List,
        data: charges.iter().map(ChargeView::from).collect(),
    };
    Ok(axum::Json(body).into_response())
}

/// Get one charge.
#[utoipa::path(
    get, path = "/v1/charges/{id}", tag = "charges",
    params(ChargePath),
    responses(
        (status = 200, description = "The charge.", body = ChargeView),
        (status = 404, description = "No such charge.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(path): Path<ChargePath>,
) -> Result<Response, Problem> {
    let id = ChargeId::parse(&path.id).map_err(|_| PaymentsError::ChargeNotFound(path.id))?;
    let charge = state.payments.charge_by_id(&id).await?;
    Ok(axum::Json(ChargeView::from(&charge)).into_response())
}

/// Charge an order.
///
/// Waits, fails or declines as the sandbox's behaviour says (see the introduction).
#[utoipa::path(
    post, path = "/v1/charges", tag = "charges",
    params(("Idempotency-Key" = String, Header, description = "Required: makes the charge safe to retry (1–255 visible ASCII characters). A retry with the same key and body gets the first answer, a decline included.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    request_body(content = CreateCharge, content_type = "application/json"),
    responses(
        (status = 200, description = "The charge succeeded.", body = ChargeView),
        (status = 402, description = "Declined (`payment-declined`): the failed charge is in the ledger; `charge` names it, `failure_code` and `decline_code` say why. A retry with the same key gets this answer again.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still being processed.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or the Idempotency-Key was used for a different request.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "A simulated outage (`error_rate`) or the database is unavailable: nothing was recorded; retry with the same key.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    request: IdempotentJson<CreateCharge>,
) -> Result<Response, Problem> {
    let body = &request.body;
    let new = NewCharge::parse(
        body.amount,
        &body.currency,
        &body.order_id,
        body.description.as_deref(),
    )
    .map_err(Problem::validation)?;
    let write = KeyedWrite::of(&request);
    Ok(state.payments.charge(write, new, succeeded).await)
}

fn succeeded(charge: &Charge) -> Result<Response, Problem> {
    Ok(axum::Json(ChargeView::from(charge)).into_response())
}

/// A 400 naming a query parameter, as `server::rest::PageQuery` answers a bad cursor.
pub(super) fn bad_query(field: &str, reason: impl Into<String>) -> Problem {
    let reason = reason.into();
    Problem::invalid_request(format!("the query parameter {field} {reason}"))
        .with_errors(vec![FieldError::new(field, reason)])
}
