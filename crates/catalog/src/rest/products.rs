//! `/v1/products` and `/v1/products/{id}`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idempotency::IdempotentJson;
use problem::{Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::{Json, Path, Query};
use server::rest::{IfNoneMatch, Page, PageQuery, rfc3339};
use utoipa::ToSchema;

use super::AppState;
use crate::domain::{NewProduct, Product, ProductId, ProductPatch};

/// A product as the API shows it. `price` is a decimal amount with at most two places.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "Laptop")]
    pub name: String,
    #[schema(example = 999.99)]
    pub price: f64,
    #[schema(example = 50)]
    pub stock: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        ProductView::from(&p)
    }
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            id: p.id.0,
            name: p.name.as_str().to_owned(),
            price: p.price.to_decimal(),
            stock: p.stock.units(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// The JSON object of [`ProductView`], written straight from the product: lists write 50
/// or more per request (see `server::rest::json`). A test holds the bytes equal.
pub fn write_product(out: &mut Vec<u8>, p: &Product) {
    use server::rest::json;
    out.extend_from_slice(b"{\"id\":");
    json::int(out, p.id.0);
    out.extend_from_slice(b",\"name\":");
    json::string(out, p.name.as_str());
    out.extend_from_slice(b",\"price\":");
    json::float(out, p.price.to_decimal());
    out.extend_from_slice(b",\"stock\":");
    json::int(out, p.stock.units());
    out.extend_from_slice(b",\"created_at\":");
    json::rfc3339(out, p.created_at);
    out.extend_from_slice(b",\"updated_at\":");
    json::rfc3339(out, p.updated_at);
    out.push(b'}');
}

/// A product's entity tag: its version, which every change bumps.
pub fn etag(product: &Product) -> String {
    format!("\"v{}\"", product.version)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// 1–200 characters, not blank, no control characters; surrounding spaces are trimmed.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        example = "Laptop"
    )]
    pub name: String,
    /// At most two decimal places, 0 to 100000000.
    #[schema(minimum = 0, maximum = 100000000, multiple_of = 0.01, example = 999.99)]
    pub price: f64,
    #[schema(minimum = 0, maximum = 2147483647, example = 50)]
    #[serde(deserialize_with = "server::extract::integer")]
    pub stock: i64,
}

/// Only the fields present change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(minimum = 0, maximum = 100000000, multiple_of = 0.01)]
    pub price: Option<f64>,
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(default, deserialize_with = "server::extract::optional_integer")]
    pub stock: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProductPath {
    /// The product's id.
    pub id: i64,
}

/// List products in id order.
#[utoipa::path(
    get, path = "/v1/products", tag = "products",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of products.", body = Page<ProductView>,
            headers(("ETag" = String, description = "Entity tag of this page"))),
        (status = 304, description = "The page has not changed since the `If-None-Match` tag."),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
    Query(query): Query<PageQuery>,
) -> Result<Response, Problem> {
    let page = query.parse()?;
    let rows = state
        .catalog
        .products(page.after.map(ProductId), page.limit + 1)
        .await?;
    let (body, tag) = state.rendered.page(rows, page.limit)?;
    Ok(server::rest::rendered_with_etag(&if_none_match, tag, body))
}

/// Get one product.
#[utoipa::path(
    get, path = "/v1/products/{id}", tag = "products",
    params(ProductPath),
    responses(
        (status = 200, description = "The product.", body = ProductView,
            headers(("ETag" = String, description = "The product's version; send it in If-Match to update"))),
        (status = 304, description = "The product has not changed since the `If-None-Match` tag."),
        (status = 404, description = "No such product.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
    Path(path): Path<ProductPath>,
) -> Result<Response, Problem> {
    let product = state.catalog.product(ProductId(path.id)).await?;
    let (body, tag) = state.rendered.of(&product)?;
    Ok(server::rest::rendered_with_etag(&if_none_match, tag, body))
}

/// Create a product.
#[utoipa::path(
    post, path = "/v1/products", tag = "products",
    params(("Idempotency-Key" = String, Header, description = "Makes the create safe to retry: 1–255 visible ASCII characters, unique per intended create.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    request_body(content = CreateProduct, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `Location` names the new product.", body = ProductView,
            headers(("Location" = String, description = "/v1/products/{id}"), ("ETag" = String))),
        (status = 409, description = "A request with this Idempotency-Key is still in flight.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or the Idempotency-Key was used for a different request.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    request: IdempotentJson<CreateProduct>,
) -> Result<Response, Problem> {
    let body = &request.body;
    // Validation first: a request that fails it has no effect and is not remembered, so
    // the client may fix it and retry with the same key (Stripe's behaviour).
    let new = NewProduct::parse(&body.name, body.price, body.stock).map_err(Problem::validation)?;
    Ok(state.catalog.create_product(&request, new, created).await)
}

fn created(product: Product) -> Result<Response, Problem> {
    let location = HeaderValue::from_str(&format!("/v1/products/{}", product.id.0))
        .map_err(Problem::internal)?;
    let tag = HeaderValue::from_str(&etag(&product)).map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::ETAG, tag)],
        axum::Json(ProductView::from(product)),
    )
        .into_response())
}

/// Change some fields of a product.
#[utoipa::path(
    patch, path = "/v1/products/{id}", tag = "products",
    params(
        ProductPath,
        ("If-Match" = Option<String>, Header, description = "Update only if the product's ETag still matches."),
    ),
    request_body(content = UpdateProduct, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated product.", body = ProductView, headers(("ETag" = String))),
        (status = 404, description = "No such product.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "The product changed since the If-Match tag was read.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ProductPath>,
    Json(body): Json<UpdateProduct>,
) -> Result<Response, Problem> {
    let patch = ProductPatch::parse(body.name.as_deref(), body.price, body.stock)
        .map_err(Problem::validation)?;
    let updated = state
        .catalog
        .update_product(ProductId(path.id), &patch, |current| {
            server::rest::if_match(&headers, &etag(current))
        })
        .await?;
    let tag = HeaderValue::from_str(&etag(&updated)).map_err(Problem::internal)?;
    Ok((
        [(header::ETAG, tag)],
        axum::Json(ProductView::from(updated)),
    )
        .into_response())
}

/// Delete a product and its reviews.
#[utoipa::path(
    delete, path = "/v1/products/{id}", tag = "products",
    params(ProductPath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such product.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(path): Path<ProductPath>,
) -> Result<StatusCode, Problem> {
    state.catalog.delete_product(ProductId(path.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::{ProductName, Stock};
    use money::Money;

    #[test]
    fn a_written_product_is_its_serde_view() {
        let names = ["Laptop", "a \"quoted\" \\ name", "Ünïcödé ☃ 名前", "x"];
        let mut rng = fastrand::Rng::with_seed(12);
        for i in 0..2_000 {
            let product = Product {
                id: ProductId(rng.i64(1..i64::MAX)),
                name: ProductName::parse(names[i % names.len()]).unwrap(),
                price: Money::from_minor(rng.i64(0..10_000_000_000)).unwrap(),
                stock: Stock::parse(rng.i64(0..=i64::from(i32::MAX))).unwrap(),
                version: rng.i64(1..100),
                created_at: rng.i64(0..253_402_300_799_999),
                updated_at: rng.i64(0..253_402_300_799_999),
            };
            let mut written = Vec::new();
            write_product(&mut written, &product);
            let by_serde = serde_json::to_vec(&ProductView::from(&product)).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }
}
