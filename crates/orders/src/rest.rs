//! Orders' REST face under `/v1/orders`: the synchronous accept (202 with the order as
//! its tracking resource), reads, and cancel. It translates JSON ↔ domain and calls
//! `app::Orders`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idempotency::IdempotentJson;
use problem::{FieldError, Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::{Path, Query};
use server::rest::{IfNoneMatch, Page, PageQuery, json_with_etag, rfc3339};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Orders;
use crate::domain::{Order, OrderId, OrderRequest, UserId};

pub type AppState = std::sync::Arc<Orders>;

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    #[schema(example = 1)]
    pub product_id: i64,
    #[schema(example = 2)]
    pub quantity: i64,
    /// The product's price when the order was accepted.
    #[schema(example = 999.99)]
    pub unit_price: f64,
    #[schema(example = 99999)]
    pub unit_price_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionView {
    #[schema(example = "PENDING")]
    pub status: &'static str,
    /// RFC 3339, UTC.
    pub at: String,
    /// Why, when the status does not say it all (a rejection's detail, a cancellation's
    /// reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    /// The order's id, which is also its tracking id.
    #[schema(example = "ord_0192f0c4a3b87c21a4f6d8e9b0c1d2e3")]
    pub id: String,
    pub user_id: i64,
    /// `PENDING`, `CONFIRMED`, `REJECTED`, `PAID` or `CANCELLED`.
    #[schema(example = "PENDING")]
    pub status: &'static str,
    pub items: Vec<OrderItemView>,
    #[schema(example = 1999.98)]
    pub total: f64,
    #[schema(example = 199998)]
    pub total_minor: i64,
    #[schema(example = "usd")]
    pub currency: String,
    /// Every transition, oldest first.
    pub history: Vec<TransitionView>,
    /// The correlation ID of the request that placed it (every hop logs it).
    pub correlation_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

fn decimal(minor: i64) -> f64 {
    money::Money::from_minor(minor).map_or(0.0, money::Money::to_decimal)
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        OrderView {
            id: o.id.to_string(),
            user_id: o.user_id.0,
            status: o.status.as_str(),
            items: o
                .lines
                .iter()
                .map(|l| OrderItemView {
                    product_id: l.product_id.0,
                    quantity: l.quantity,
                    unit_price: decimal(l.unit_price_minor),
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            total: decimal(o.total_minor),
            total_minor: o.total_minor,
            currency: o.currency,
            history: o
                .history
                .into_iter()
                .map(|t| TransitionView {
                    status: t.status.as_str(),
                    at: rfc3339(t.at),
                    reason: (!t.reason.is_empty()).then_some(t.reason),
                })
                .collect(),
            correlation_id: o.correlation_id,
            created_at: rfc3339(o.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderItem {
    #[schema(minimum = 1, example = 1)]
    pub product_id: i64,
    #[schema(minimum = 1, maximum = 1000, example = 2)]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    #[schema(minimum = 1, example = 1)]
    pub user_id: i64,
    /// 1–50 lines, one per product.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<CreateOrderItem>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrderPath {
    /// The order's id (its tracking id).
    #[param(min_length = 1, max_length = 64, pattern = r"^[\x21-\x7E]{1,64}$")]
    pub id: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Whose orders.
    #[param(minimum = 1)]
    pub user_id: i64,
    /// How many items to return, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^1[0-9a-z]{6,18}$")]
    pub cursor: Option<String>,
}

/// An id that is not of an order's form names no order: 404, as for an unknown one.
fn order_id(raw: &str) -> Result<OrderId, Problem> {
    OrderId::parse(raw).map_err(|_| Problem::not_found(format!("no order {raw:?} exists")))
}

/// Accept an order.
///
/// Checks now only what the caller must hear now — the user exists, every product
/// exists, quantities are sane — records the order `PENDING` and answers at once; stock,
/// payment and the rest happen behind it. Follow it at `Location` (or `WatchOrder`).
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = String, Header, description = "Makes the accept safe to retry: 1–255 visible ASCII characters. A retry with the same key and body answers with the same order.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    request_body(content = CreateOrder, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted; `Location` names the order, whose id is the tracking id.", body = OrderView, headers(("Location" = String, description = "/v1/orders/{id}"))),
        (status = 409, description = "A request with this Idempotency-Key is still in flight.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (an unknown user or product included), or the Idempotency-Key was used for a different request.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Accounts or catalog could not be asked; retry with the same key.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(orders): State<AppState>,
    request: IdempotentJson<CreateOrder>,
) -> Result<Response, Problem> {
    let lines: Vec<(i64, i64)> = request
        .body
        .items
        .iter()
        .map(|i| (i.product_id, i.quantity))
        .collect();
    let asked = OrderRequest::parse(request.body.user_id, &lines).map_err(|errors| {
        Problem::validation(
            errors
                .into_iter()
                .map(|(field, why)| FieldError::new(field, why))
                .collect(),
        )
    })?;
    Ok(orders.place(&request, asked, accepted).await)
}

fn accepted(order: Order) -> Result<Response, Problem> {
    let location =
        HeaderValue::from_str(&format!("/v1/orders/{}", order.id)).map_err(Problem::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(OrderView::from(order)),
    )
        .into_response())
}

/// Get one order: its status and the history of its transitions.
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders",
    params(OrderPath),
    responses(
        (status = 200, description = "The order.", body = OrderView, headers(("ETag" = String))),
        (status = 304, description = "The order has not changed since the `If-None-Match` tag."),
        (status = 404, description = "No such order.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(orders): State<AppState>,
    if_none_match: IfNoneMatch,
    Path(path): Path<OrderPath>,
) -> Result<Response, Problem> {
    let order = orders.order(&order_id(&path.id)?).await?;
    Ok(json_with_etag(
        &if_none_match,
        None,
        &OrderView::from(order),
    ))
}

/// List a user's orders, oldest first.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of the user's orders.", body = Page<OrderView>, headers(("ETag" = String))),
        (status = 304, description = "The page has not changed since the `If-None-Match` tag."),
    )
)]
pub async fn list(
    State(orders): State<AppState>,
    if_none_match: IfNoneMatch,
    Query(query): Query<ListQuery>,
) -> Result<Response, Problem> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    if query.user_id < 1 {
        return Err(
            Problem::invalid_request("invalid query parameters").with_errors(vec![
                FieldError::new("user_id", "must be a user id (1 or more)"),
            ]),
        );
    }
    let rows = orders
        .orders_of(UserId(query.user_id), page.after, page.limit + 1)
        .await?;
    let body = Page::from_rows(rows, page.limit, |o| o.seq, OrderView::from);
    Ok(json_with_etag(&if_none_match, None, &body))
}

/// Cancel an order.
///
/// A `PENDING`, `CONFIRMED` or `PAID` order is cancelled: its stock goes back to the
/// catalog and a charge is refunded. Idempotent by nature: cancelling a cancelled order
/// answers with it unchanged, so no `Idempotency-Key` is needed.
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(OrderPath),
    responses(
        (status = 200, description = "The order, cancelled.", body = OrderView),
        (status = 404, description = "No such order.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A rejected order cannot be cancelled.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Catalog could not release the stock; retry.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(orders): State<AppState>,
    Path(path): Path<OrderPath>,
) -> Result<Response, Problem> {
    let order = orders.cancel(&order_id(&path.id)?).await?;
    Ok(axum::Json(OrderView::from(order)).into_response())
}

const INTRO: &str = "Orders: accepted at once (202), processed behind the answer — stock \
    reserved, then paid — and followed at their `Location`.";

#[derive(OpenApi)]
#[openapi(
    info(title = "Brigade orders", version = "1.0.0"),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags((name = "orders"))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list, create))
        .routes(routes!(get))
        .routes(routes!(cancel))
}

/// The OpenAPI document of this face, as served at `/openapi.json` and committed as
/// `openapi/orders.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The REST routes plus `/openapi.json` and the `/docs` page.
pub fn router(state: AppState) -> Router {
    let (routes, api) = parts();
    routes.with_state(state).merge(server::rest::docs(api))
}

fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use axum::http::Method;
    let (routes, mut api) = server::rest::split(api_router(), INTRO);
    server::rest::link(
        &mut api,
        (Method::POST, "/v1/orders"),
        "202",
        "GetOrder",
        (Method::GET, "/v1/orders/{id}"),
        &[("id", "$response.body#/id")],
    );
    server::rest::link(
        &mut api,
        (Method::POST, "/v1/orders"),
        "202",
        "CancelOrder",
        (Method::POST, "/v1/orders/{id}/cancel"),
        &[("id", "$response.body#/id")],
    );
    (routes, api)
}
