//! Catalog's REST face under `/v1`: products and their reviews. It translates between
//! JSON and the domain and calls the use cases (`app::Catalog`); the rules live in
//! `domain`, the data in `store`.

mod products;
mod rendered;
mod reviews;

pub use rendered::Rendered;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Catalog;

/// What the handlers share. Behind an `Arc`: axum clones the state for every request,
/// and the clients inside (connection pools, the accounts channel) are not free to clone.
pub type AppState = std::sync::Arc<Shared>;

pub struct Shared {
    /// The use cases the handlers translate to and from.
    pub catalog: Catalog,
    /// `GET /v1/products/{id}`'s bodies, kept while the store's product is unchanged.
    pub rendered: Rendered,
}

const INTRO: &str = "Products and their reviews.";

#[derive(OpenApi)]
#[openapi(
    info(title = "Brigade catalog", version = "1.0.0"),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags((name = "products"), (name = "reviews"))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(products::list, products::create))
        .routes(routes!(products::get, products::update, products::delete))
        .routes(routes!(reviews::list, reviews::create))
        .routes(routes!(reviews::get))
}

/// The OpenAPI document of this face, as served at `/openapi.json` and committed as
/// `openapi/catalog.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The REST routes plus `/openapi.json` and the `/docs` page.
pub fn router(state: AppState) -> Router {
    let (routes, api) = parts();
    routes.with_state(state).merge(server::rest::docs(api))
}

/// The routes and the document, with the links from what a create answers to what can
/// be done with it next.
fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use axum::http::Method;
    use server::rest::link;
    let (routes, mut api) = server::rest::split(api_router(), INTRO);
    let product = "/v1/products/{id}";
    let reviews = "/v1/products/{id}/reviews";
    let by_id = [("id", "$response.body#/id")];
    let created = (Method::POST, "/v1/products");
    link(
        &mut api,
        created.clone(),
        "201",
        "GetProduct",
        (Method::GET, product),
        &by_id,
    );
    link(
        &mut api,
        created.clone(),
        "201",
        "UpdateProduct",
        (Method::PATCH, product),
        &by_id,
    );
    link(
        &mut api,
        created.clone(),
        "201",
        "DeleteProduct",
        (Method::DELETE, product),
        &by_id,
    );
    link(
        &mut api,
        created.clone(),
        "201",
        "ListReviews",
        (Method::GET, reviews),
        &by_id,
    );
    link(
        &mut api,
        created,
        "201",
        "CreateReview",
        (Method::POST, reviews),
        &by_id,
    );
    link(
        &mut api,
        (Method::POST, reviews),
        "201",
        "GetReview",
        (Method::GET, "/v1/products/{id}/reviews/{review_id}"),
        &[
            ("id", "$request.path.id"),
            ("review_id", "$response.body#/id"),
        ],
    );
    (routes, api)
}
