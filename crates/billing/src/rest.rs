//! Billing's REST face under `/v1`: an order's payment, read-only (payments are made by
//! the `order-events` consumer, never by a request), and the analytics projection's
//! revenue per product (`/v1/analytics/products`, read-only too). It translates between JSON and the
//! domain and calls the use cases (`app::Billing`).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use problem::{Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::Path;
use server::rest::{IfNoneMatch, json_with_etag, rfc3339};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::{Analytics, ProductSales};
use crate::app::Billing;
use crate::domain::{OrderId, Payment};

/// What the handlers share.
pub type AppState = std::sync::Arc<Shared>;

pub struct Shared {
    /// The use cases the handlers translate to and from.
    pub billing: Billing,
    /// The analytics projection `/v1/analytics/products` reads.
    pub analytics: Analytics,
}

const INTRO: &str = "Payments: what billing's provider answered to each confirmed order's \
charge (made once per order, under the order id as the provider's idempotency key), and its \
refund after a cancellation. Payments are made by billing's `order-events` consumer; this \
face only reads them. Analytics: orders and revenue per product, as consumer group \
`analytics` projects them from `order-events` (eventually consistent: it follows the stream).";

/// An order's payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    #[schema(example = "ORD-12345")]
    pub order_id: String,
    /// `succeeded` (charged), `declined` (the provider declined the charge: nothing was
    /// taken) or `refunded` (charged, then refunded in full after a cancellation).
    #[schema(example = "succeeded", pattern = "^(succeeded|declined|refunded)$")]
    pub status: String,
    /// The amount charged (or declined), in minor units (cents).
    #[schema(example = 199_998, minimum = 1)]
    pub amount_minor: i64,
    #[schema(example = "usd")]
    pub currency: String,
    /// The provider's charge (for a decline, the failed charge, when it named one).
    #[schema(example = "ch_0192f0c4a3b87c21a4f6d8e9b0c1d2e3")]
    pub charge_id: Option<String>,
    /// The provider's decline code, e.g. `card_declined`.
    pub decline_code: Option<String>,
    pub decline_reason: Option<String>,
    /// The provider's refund.
    pub refund_id: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        PaymentView {
            order_id: p.order_id.as_str().to_owned(),
            status: p.status.as_str().to_owned(),
            amount_minor: p.amount.minor(),
            currency: p.currency.as_str().to_owned(),
            charge_id: p.charge_id,
            decline_code: p.decline_code,
            decline_reason: p.decline_reason,
            refund_id: p.refund_id,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PaymentPath {
    /// The order's id.
    #[param(min_length = 1, max_length = 64, pattern = r"^[\x21-\x7E]{1,64}$")]
    pub order_id: String,
}

/// Get an order's payment.
#[utoipa::path(
    get, path = "/v1/payments/{order_id}", tag = "payments",
    params(PaymentPath),
    responses(
        (status = 200, description = "The order's payment.", body = PaymentView, headers(("ETag" = String))),
        (status = 304, description = "The payment has not changed since the `If-None-Match` tag."),
        (status = 400, description = "The order id is malformed.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "The order has no payment (not confirmed, or not billed yet).", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
    Path(path): Path<PaymentPath>,
) -> Result<Response, Problem> {
    let order = OrderId::parse(&path.order_id)
        .map_err(|e| Problem::invalid_request(format!("invalid path: order_id {e}")))?;
    let payment = state.billing.payment(&order).await?;
    Ok(json_with_etag(
        &if_none_match,
        None,
        &PaymentView::from(payment),
    ))
}

/// One product's paid orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductSalesView {
    #[schema(example = 1)]
    pub product_id: i64,
    /// Paid orders (not refunded) with this product in them.
    #[schema(example = 3, minimum = 1)]
    pub orders_paid: i64,
    /// Units of it in those orders.
    #[schema(example = 4)]
    pub units_paid: i64,
    /// What those units were sold for (their prices when ordered), in minor units (cents).
    #[schema(example = 399_996)]
    pub revenue_minor: i64,
}

impl From<ProductSales> for ProductSalesView {
    fn from(p: ProductSales) -> Self {
        ProductSalesView {
            product_id: p.product_id,
            orders_paid: p.orders_paid,
            units_paid: p.units_paid,
            revenue_minor: p.revenue_minor,
        }
    }
}

/// Every product with a paid order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductSalesList {
    /// By product id.
    pub data: Vec<ProductSalesView>,
}

/// Orders and revenue per product.
#[utoipa::path(
    get, path = "/v1/analytics/products", tag = "analytics",
    responses(
        (status = 200, description = "Every product with a paid (and not refunded) order, by product id. \
Refunded orders are taken away again; orders whose producer gave no lines are not counted.", body = ProductSalesList, headers(("ETag" = String))),
        (status = 304, description = "Nothing has changed since the `If-None-Match` tag."),
        (status = 503, description = "The database is busy.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn products(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    let products = state.analytics.products().await?;
    let list = ProductSalesList {
        data: products.into_iter().map(ProductSalesView::from).collect(),
    };
    Ok(json_with_etag(&if_none_match, None, &list))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Brigade billing", version = "1.0.0"),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags((name = "payments"), (name = "analytics"))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(get))
        .routes(routes!(products))
}

/// The OpenAPI document of this face, as served at `/openapi.json` and committed as
/// `openapi/billing.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    server::rest::split(api_router(), INTRO).1
}

/// The REST routes plus `/openapi.json` and the `/docs` page.
pub fn router(state: AppState) -> Router {
    let (routes, api) = server::rest::split(api_router(), INTRO);
    routes.with_state(state).merge(server::rest::docs(api))
}
