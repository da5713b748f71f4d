//! The same keys, store and semantics for GraphQL mutations: the key is the mutation's
//! `idempotencyKey` argument, the fingerprint covers the mutation's field and its other
//! arguments, and the stored "body" is the answer as JSON. A replayed problem comes back
//! as the problem it was.

use std::future::Future;
use std::marker::PhantomData;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use problem::{FieldError, Problem};
use serde::Serialize;
use serde::de::DeserializeOwned;
use storage::WriteTx;
use storage::rusqlite::Connection;

use crate::key::{ClientScope, Fingerprint, IdempotencyKey};
use crate::keyed::{Boxed, Keyed};
use crate::record::Idempotency;

/// A mutation's write. `T` is what it answers (kept as JSON for replays).
pub struct GraphqlWrite<T> {
    /// The client's scope, the key and the fingerprint; `None` without a key (the write
    /// simply runs once, as for a gRPC call without one).
    identity: Option<(String, IdempotencyKey, Fingerprint)>,
    answer: PhantomData<fn() -> T>,
}

impl<T> GraphqlWrite<T> {
    /// The write of mutation `field` (e.g. `Mutation.createProduct`) with `arguments`
    /// (every argument but the key), by the client whose [`ClientScope`] the edge set in
    /// the HTTP request's `extensions` (anonymous without one). A malformed key is a
    /// problem, as in REST's header.
    pub fn new(
        extensions: Option<&http::Extensions>,
        field: &str,
        arguments: &impl Serialize,
        key: Option<&str>,
    ) -> Result<Self, Problem> {
        let identity = match key {
            None => None,
            Some(raw) => {
                // Refused naming the argument the client wrote, not REST's header.
                let key = IdempotencyKey::parse(raw).map_err(|header| {
                    let errors: Vec<FieldError> = header
                        .errors()
                        .iter()
                        .map(|e| FieldError::new("idempotencyKey", e.reason.clone()))
                        .collect();
                    let reason = errors
                        .first()
                        .map_or_else(|| "is malformed".to_owned(), |e| e.reason.clone());
                    Problem::invalid_request(format!("the idempotencyKey argument {reason}"))
                        .with_errors(errors)
                })?;
                let body = serde_json::to_vec(arguments).map_err(Problem::internal)?;
                let path = format!("graphql:{field}");
                let scope = extensions
                    .and_then(|e| e.get::<ClientScope>())
                    .map_or(ClientScope::ANONYMOUS, |s| s.0.as_str());
                let fingerprint = Fingerprint::of(&http::Method::POST, &path, &body);
                Some((scope.to_owned(), key, fingerprint))
            }
        };
        Ok(Self {
            identity,
            answer: PhantomData,
        })
    }

    fn keyed(&self) -> Result<&(String, IdempotencyKey, Fingerprint), Problem> {
        self.identity.as_ref().ok_or_else(|| {
            Problem::internal(std::io::Error::other(
                "a local write for a GraphQL mutation without an idempotencyKey",
            ))
        })
    }
}

impl<T> Keyed for GraphqlWrite<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Answer = T;
    type Output = Result<T, Problem>;

    fn run_after<'a, C, F, Fut>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: F,
    ) -> Boxed<'a, Self::Output>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        F: FnOnce(WriteTx) -> Fut + Send + 'a,
        Fut: Future<Output = (WriteTx, Result<T, Problem>)> + Send + 'a,
    {
        Box::pin(async move {
            let Some((scope, key, fingerprint)) = &self.identity else {
                return idempotency.run_unkeyed(call_out, work).await;
            };
            let response = idempotency
                .run_after(scope, key, fingerprint, call_out, |tx| async move {
                    let (tx, result) = work(tx).await;
                    (tx, result.and_then(|answer| stored_json(&answer)))
                })
                .await;
            decode(response).await
        })
    }

    fn run_after_local<'a, C, W>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: W,
    ) -> Boxed<'a, Self::Output>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        W: FnOnce(&Connection) -> Result<T, Problem> + Send + 'static,
    {
        Box::pin(async move {
            let (scope, key, fingerprint) = self.keyed()?;
            let response = idempotency
                .run_after_local(scope, key, fingerprint, call_out, move |conn| {
                    work(conn).and_then(|answer| stored_json(&answer))
                })
                .await;
            decode(response).await
        })
    }

    fn run_claimed<'a, W>(
        &'a self,
        idempotency: &'a Idempotency,
        work: W,
    ) -> Boxed<'a, Self::Output>
    where
        W: Future<Output = Result<T, Problem>> + Send + 'a,
    {
        Box::pin(async move {
            let Some((scope, key, fingerprint)) = &self.identity else {
                return work.await;
            };
            let response = idempotency
                .run_claimed(scope, key, fingerprint, async move {
                    work.await.and_then(|answer| stored_json(&answer))
                })
                .await;
            decode(response).await
        })
    }

    fn writes_locally(&self, idempotency: &Idempotency) -> bool {
        idempotency.writes_locally() && self.identity.is_some()
    }

    fn run_local<'a, W>(&'a self, idempotency: &'a Idempotency, work: W) -> Boxed<'a, Self::Output>
    where
        W: FnOnce(&Connection) -> Result<T, Problem> + Send + 'static,
    {
        Box::pin(async move {
            let (scope, key, fingerprint) = self.keyed()?;
            let response = idempotency
                .run_local(scope, key, fingerprint, move |conn| {
                    work(conn).and_then(|answer| stored_json(&answer))
                })
                .await;
            decode(response).await
        })
    }
}

/// An answer as the key's record keeps it.
fn stored_json<T: Serialize>(answer: &T) -> Result<Response, Problem> {
    let body = serde_json::to_vec(answer).map_err(Problem::internal)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// A stored (or just stored) answer back into the answer or its problem.
async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Problem> {
    let bytes = crate::grpc::stored_answer(response).await?;
    serde_json::from_slice(&bytes).map_err(Problem::internal)
}
