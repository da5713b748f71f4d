//! `/v1/products/{id}/reviews`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idempotency::IdempotentJson;
use problem::{Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::{Path, Query};
use server::rest::{IfNoneMatch, Page, PageQuery, json_with_etag, rfc3339, written_json_with_etag};
use utoipa::ToSchema;

use super::AppState;
use super::products::ProductPath;
use crate::domain::{NewReview, ProductId, Review, ReviewId};

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    pub id: i64,
    pub product_id: i64,
    /// A user of the accounts service.
    pub user_id: i64,
    #[schema(minimum = 1, maximum = 5)]
    pub rating: u8,
    pub comment: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<Review> for ReviewView {
    fn from(r: Review) -> Self {
        ReviewView {
            id: r.id.0,
            product_id: r.product_id.0,
            user_id: r.user_id.0,
            rating: r.rating.stars(),
            comment: r.comment.map(|c| c.as_str().to_owned()),
            created_at: rfc3339(r.created_at),
        }
    }
}

/// The JSON object of [`ReviewView`], written straight from the review for lists (see
/// `server::rest::json`). A test holds the bytes equal.
pub fn write_review(out: &mut Vec<u8>, r: &Review) {
    use server::rest::json;
    out.extend_from_slice(b"{\"id\":");
    json::int(out, r.id.0);
    out.extend_from_slice(b",\"product_id\":");
    json::int(out, r.product_id.0);
    out.extend_from_slice(b",\"user_id\":");
    json::int(out, r.user_id.0);
    out.extend_from_slice(b",\"rating\":");
    json::int(out, i64::from(r.rating.stars()));
    out.extend_from_slice(b",\"comment\":");
    json::opt_string(out, r.comment.as_ref().map(|c| c.as_str()));
    out.extend_from_slice(b",\"created_at\":");
    json::rfc3339(out, r.created_at);
    out.push(b'}');
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReview {
    #[schema(minimum = 1, example = 1)]
    #[serde(deserialize_with = "server::extract::integer")]
    pub user_id: i64,
    #[schema(minimum = 1, maximum = 5, example = 5)]
    #[serde(deserialize_with = "server::extract::integer")]
    pub rating: i64,
    /// At most 2,000 characters; blank means no comment.
    #[schema(max_length = 2000, example = "Fast and light.")]
    pub comment: Option<String>,
}

/// List a product's reviews, oldest first.
#[utoipa::path(
    get, path = "/v1/products/{id}/reviews", tag = "reviews",
    params(ProductPath, PageQuery),
    responses(
        (status = 200, description = "One page of reviews.", body = Page<ReviewView>, headers(("ETag" = String))),
        (status = 304, description = "The page has not changed since the `If-None-Match` tag."),
        (status = 404, description = "No such product.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
    Path(path): Path<ProductPath>,
    Query(query): Query<PageQuery>,
) -> Result<Response, Problem> {
    let page = query.parse()?;
    let rows = state
        .catalog
        .reviews(ProductId(path.id), page.after.map(ReviewId), page.limit + 1)
        .await?;
    let body = server::rest::json::page(rows, page.limit, |r| r.id.0, write_review);
    Ok(written_json_with_etag(&if_none_match, body))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReviewPath {
    /// The product's id.
    pub id: i64,
    /// The review's id.
    pub review_id: i64,
}

/// Get one review.
#[utoipa::path(
    get, path = "/v1/products/{id}/reviews/{review_id}", tag = "reviews",
    params(ReviewPath),
    responses(
        (status = 200, description = "The review.", body = ReviewView, headers(("ETag" = String))),
        (status = 304, description = "The review has not changed since the `If-None-Match` tag."),
        (status = 404, description = "No such product or review.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
    Path(path): Path<ReviewPath>,
) -> Result<Response, Problem> {
    let review = state
        .catalog
        .review(ProductId(path.id), ReviewId(path.review_id))
        .await?;
    Ok(json_with_etag(
        &if_none_match,
        None,
        &ReviewView::from(review),
    ))
}

/// Review a product.
#[utoipa::path(
    post, path = "/v1/products/{id}/reviews", tag = "reviews",
    params(
        ProductPath,
        ("Idempotency-Key" = String, Header, description = "Makes the create safe to retry: 1–255 visible ASCII characters.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$"),
    ),
    request_body(content = CreateReview, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `Location` names the new review.", body = ReviewView, headers(("Location" = String, description = "/v1/products/{id}/reviews/{review_id}"))),
        (status = 404, description = "No such product.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still in flight.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or the Idempotency-Key was used for a different request.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Path(path): Path<ProductPath>,
    request: IdempotentJson<CreateReview>,
) -> Result<Response, Problem> {
    let body = &request.body;
    let new = NewReview::parse(
        ProductId(path.id),
        body.user_id,
        body.rating,
        body.comment.as_deref(),
    )
    .map_err(Problem::validation)?;
    Ok(state.catalog.create_review(&request, new, created).await)
}

fn created(review: Review) -> Result<Response, Problem> {
    let location = HeaderValue::from_str(&format!(
        "/v1/products/{}/reviews/{}",
        review.product_id.0, review.id.0
    ))
    .map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(ReviewView::from(review)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::domain::{Comment, Rating, UserId};

    #[test]
    fn a_written_review_is_its_serde_view() {
        let comments = [
            None,
            Some("Great \"value\"\nfor the price \\ ☃"),
            Some("ok"),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..2_000 {
            let review = Review {
                id: ReviewId(rng.i64(1..i64::MAX)),
                product_id: ProductId(rng.i64(1..i64::MAX)),
                user_id: UserId(rng.i64(1..i64::MAX)),
                rating: Rating::parse(rng.i64(1..=5)).unwrap(),
                comment: comments[i % comments.len()].and_then(|c| Comment::parse(c).unwrap()),
                created_at: rng.i64(0..253_402_300_799_999),
            };
            let mut written = Vec::new();
            write_review(&mut written, &review);
            let by_serde = serde_json::to_vec(&ReviewView::from(review)).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }
}
