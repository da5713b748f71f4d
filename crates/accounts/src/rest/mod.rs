//! Accounts' REST face under `/v1`: users. It translates between JSON and the domain and
//! calls the use cases (`app::Accounts`).

mod users;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Accounts;

/// What the handlers share. Behind an `Arc`: axum clones the state for every request,
/// and the clients inside (connection pools, the accounts channel) are not free to clone.
pub type AppState = std::sync::Arc<Shared>;

pub struct Shared {
    /// The use cases the handlers translate to and from.
    pub accounts: Accounts,
}

const INTRO: &str = "Users.";

#[derive(OpenApi)]
#[openapi(
    info(title = "Brigade accounts", version = "1.0.0"),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags((name = "users"))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get))
}

/// The OpenAPI document of this face, as served at `/openapi.json` and committed as
/// `openapi/accounts.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The REST routes plus `/openapi.json` and the `/docs` page.
pub fn router(state: AppState) -> Router {
    let (routes, api) = parts();
    routes.with_state(state).merge(server::rest::docs(api))
}

/// The routes and the document, with the link from a created user to reading it.
fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use axum::http::Method;
    let (routes, mut api) = server::rest::split(api_router(), INTRO);
    server::rest::link(
        &mut api,
        (Method::POST, "/v1/users"),
        "201",
        "GetUser",
        (Method::GET, "/v1/users/{id}"),
        &[("id", "$response.body#/id")],
    );
    (routes, api)
}
