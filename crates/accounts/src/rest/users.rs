//! `/v1/users` and `/v1/users/{id}`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idempotency::IdempotentJson;
use problem::{Problem, ProblemBody};
use serde::{Deserialize, Serialize};
use server::extract::{Path, Query};
use server::rest::{IfNoneMatch, Page, PageQuery, json_with_etag, rfc3339};
use utoipa::ToSchema;

use super::AppState;
use crate::domain::{NewUser, User, UserId};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "Jane Doe")]
    pub name: String,
    #[schema(example = "jane@example.com")]
    pub email: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id.0,
            name: u.name.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1–100 characters, not blank, no control characters; surrounding spaces are trimmed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        example = "Jane Doe"
    )]
    pub name: String,
    /// A plausible address (`local@domain.tld`, an ASCII domain); unique across users.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\u0000-\u001F\u007F-\u009F]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$",
        example = "jane@example.com"
    )]
    pub email: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user's id.
    pub id: i64,
}

/// List users in id order.
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of users.", body = Page<UserView>, headers(("ETag" = String))),
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
        .accounts
        .users(page.after.map(UserId), page.limit + 1)
        .await?;
    let body = Page::from_rows(rows, page.limit, |u| u.id.0, UserView::from);
    Ok(json_with_etag(&if_none_match, None, &body))
}

/// Get one user.
#[utoipa::path(
    get, path = "/v1/users/{id}", tag = "users",
    params(UserPath),
    responses(
        (status = 200, description = "The user.", body = UserView, headers(("ETag" = String))),
        (status = 304, description = "The user has not changed since the `If-None-Match` tag."),
        (status = 404, description = "No such user.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
    Path(path): Path<UserPath>,
) -> Result<Response, Problem> {
    let user = state.accounts.user(UserId(path.id)).await?;
    Ok(json_with_etag(&if_none_match, None, &UserView::from(user)))
}

/// Create a user.
#[utoipa::path(
    post, path = "/v1/users", tag = "users",
    params(("Idempotency-Key" = String, Header, description = "Makes the create safe to retry: 1–255 visible ASCII characters.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$")),
    request_body(content = CreateUser, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `Location` names the new user.", body = UserView, headers(("Location" = String, description = "/v1/users/{id}"))),
        (status = 409, description = "The email is taken, or a request with this Idempotency-Key is still in flight.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or the Idempotency-Key was used for a different request.", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    request: IdempotentJson<CreateUser>,
) -> Result<Response, Problem> {
    let new =
        NewUser::parse(&request.body.name, &request.body.email).map_err(Problem::validation)?;
    Ok(state.accounts.create_user(&request, new, created).await)
}

fn created(user: User) -> Result<Response, Problem> {
    let location =
        HeaderValue::from_str(&format!("/v1/users/{}", user.id.0)).map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(UserView::from(user)),
    )
        .into_response())
}
