//! The sandbox's REST face under `/v1`: charges, refunds and the sandbox's behaviour. It
//! translates between JSON and the domain and calls the use cases (`app::Payments`).

mod charges;
mod refunds;
mod sandbox;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Payments;

pub use charges::{ChargeList, ChargeView, CreateCharge};
pub use refunds::{CreateRefund, RefundList, RefundView};
pub use sandbox::{BehaviourView, UpdateBehaviour};

/// What the handlers share. Behind an `Arc`: axum clones the state for every request.
pub type AppState = std::sync::Arc<Shared>;

pub struct Shared {
    /// The use cases the handlers translate to and from.
    pub payments: Payments,
}

const INTRO: &str = "\
A Stripe-shaped sandbox payment provider: charges, refunds and their ledger, for \
exercising a real payment provider's timeouts, declines and outages. Amounts are integer \
minor units (cents); `created` is Unix seconds.

**Behaviour.** `PUT /v1/sandbox/behaviour` sets, for this process and until it restarts, \
how every charge and refund behaves: first it waits `latency_ms` plus a uniform \
0–`latency_jitter_ms`; then, with probability `error_rate`, it answers 503 and records \
nothing (the Idempotency-Key is released, so a retry runs again); else, for a charge, with \
probability `decline_rate` it is declined: the failed charge is recorded and the answer is \
402 `payment-declined` (kept for the key, so a retry gets the same decline). A charge or \
refund runs to its end even if its caller hangs up or times out, as a real provider's \
does: a retry with the same key meanwhile gets 409 `idempotency-key-in-use`, and once it \
has finished, its answer.";

#[derive(OpenApi)]
#[openapi(
    info(title = "Brigade payments sandbox", version = "1.0.0"),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags((name = "charges"), (name = "refunds"), (name = "sandbox"))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(charges::list, charges::create))
        .routes(routes!(charges::get))
        .routes(routes!(refunds::list, refunds::create))
        .routes(routes!(sandbox::get, sandbox::put))
}

/// The OpenAPI document of this face, as served at `/openapi.json` and committed as
/// `openapi/payments-sandbox.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The REST routes plus `/openapi.json` and the `/docs` page.
pub fn router(state: AppState) -> Router {
    let (routes, api) = parts();
    routes.with_state(state).merge(server::rest::docs(api))
}

/// The routes and the document, with the links from a charge to reading it and to its
/// refunds.
fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use axum::http::Method;
    let (routes, mut api) = server::rest::split(api_router(), INTRO);
    server::rest::link(
        &mut api,
        (Method::POST, "/v1/charges"),
        "200",
        "GetCharge",
        (Method::GET, "/v1/charges/{id}"),
        &[("id", "$response.body#/id")],
    );
    server::rest::link(
        &mut api,
        (Method::POST, "/v1/refunds"),
        "200",
        "GetRefundedCharge",
        (Method::GET, "/v1/charges/{id}"),
        &[("id", "$response.body#/charge")],
    );
    (routes, api)
}
