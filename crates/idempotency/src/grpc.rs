//! The same keys, store and semantics for gRPC writes: the key travels as
//! `idempotency-key` metadata, the fingerprint covers the method path and the encoded
//! request, and the stored "body" is the encoded response message. A replayed problem
//! comes back as the status the table gives its kind.

use std::future::Future;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use problem::{Kind, Problem, ProblemBody};
use prost::Message;
use storage::{StoreError, WriteTx};

use crate::key::{ClientScope, Fingerprint, HEADER, IdempotencyKey, REPLAYED_HEADER};
use crate::record::Idempotency;

/// Content type under which an encoded protobuf response is stored.
const PROTOBUF: &str = "application/x-protobuf";

/// The largest stored response read back (a stored message or problem is far smaller).
const MAX_STORED: usize = 4 * 1024 * 1024;

impl Idempotency {
    /// Runs one gRPC write. With an `idempotency-key` in `request`'s metadata it follows
    /// the REST protocol (claim, write, store the answer with the write, or replay /
    /// refuse; a replay carries `idempotent-replayed: true` metadata, like REST's header);
    /// without one the write simply runs in its own transaction, as the seed's clients
    /// expect. `work` hands the transaction back with its result.
    pub async fn execute_grpc<Req, Resp, F, Fut>(
        &self,
        method_path: &str,
        request: &tonic::Request<Req>,
        work: F,
    ) -> Result<tonic::Response<Resp>, tonic::Status>
    where
        Req: Message,
        Resp: Message + Default,
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<Resp, Problem>)>,
    {
        self.execute_grpc_after(method_path, request, std::future::ready(Ok(())), work)
            .await
    }

    /// [`execute_grpc`](Idempotency::execute_grpc) for a write that must first ask another
    /// service: as REST's [`execute_after`](Idempotency::execute_after), the key's replay
    /// and conflict decisions come before `call_out`.
    pub async fn execute_grpc_after<Req, Resp, C, F, Fut>(
        &self,
        method_path: &str,
        request: &tonic::Request<Req>,
        call_out: C,
        work: F,
    ) -> Result<tonic::Response<Resp>, tonic::Status>
    where
        Req: Message,
        Resp: Message + Default,
        C: Future<Output = Result<(), Problem>>,
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<Resp, Problem>)>,
    {
        let Some((scope, key, fingerprint)) = identity(method_path, request)? else {
            let message = self.run_unkeyed(call_out, work).await?;
            return Ok(tonic::Response::new(message));
        };
        let response = self
            .run_after(&scope, &key, &fingerprint, call_out, |tx| async move {
                let (tx, result) = work(tx).await;
                (tx, result.map(|message| stored_message(&message)))
            })
            .await;
        answer_of(response).await
    }
}

impl Idempotency {
    /// A write without a key: `call_out`, then `work` in its own transaction, committed
    /// if it succeeds. Nothing is kept, so a retry writes again (what a client that sends
    /// no key asked for).
    pub(crate) async fn run_unkeyed<A, C, F, Fut>(&self, call_out: C, work: F) -> Result<A, Problem>
    where
        C: Future<Output = Result<(), Problem>>,
        F: FnOnce(WriteTx) -> Fut,
        Fut: Future<Output = (WriteTx, Result<A, Problem>)>,
    {
        call_out.await?;
        let tx = self
            .database()
            .begin_write()
            .await
            .map_err(StoreError::from)
            .map_err(Problem::from)?;
        let (tx, result) = work(tx).await;
        let answer = result?;
        tx.commit()
            .await
            .map_err(StoreError::from)
            .map_err(Problem::from)?;
        Ok(answer)
    }
}

/// What identifies a gRPC write for its key: the client's scope, the key from the
/// `idempotency-key` metadata, and the fingerprint of the method and the encoded request.
/// `None` without a key; a malformed key is a problem.
pub(crate) fn identity<Req: Message>(
    method_path: &str,
    request: &tonic::Request<Req>,
) -> Result<Option<(String, IdempotencyKey, Fingerprint)>, Problem> {
    let Some(value) = request.metadata().get(HEADER) else {
        return Ok(None);
    };
    let raw = value
        .to_str()
        .map_err(|_| Problem::invalid_request("the idempotency-key must be visible ASCII"))?;
    let key = IdempotencyKey::parse(raw)?;
    let scope = request
        .extensions()
        .get::<ClientScope>()
        .map_or(ClientScope::ANONYMOUS, |s| s.0.as_str())
        .to_owned();
    let fingerprint = Fingerprint::of(
        &http::Method::POST,
        method_path,
        &request.get_ref().encode_to_vec(),
    );
    Ok(Some((scope, key, fingerprint)))
}

/// A response message as the key's record keeps it.
pub(crate) fn stored_message<Resp: Message>(message: &Resp) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
        message.encode_to_vec(),
    )
        .into_response()
}

/// The gRPC answer of a stored (or just stored) response, marked as a replay if it is one.
pub(crate) async fn answer_of<Resp: Message + Default>(
    response: Response,
) -> Result<tonic::Response<Resp>, tonic::Status> {
    let replayed = response.headers().contains_key(REPLAYED_HEADER);
    let mut answer = tonic::Response::new(decode(response).await?);
    if replayed {
        answer.metadata_mut().insert(
            REPLAYED_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    Ok(answer)
}

/// A stored (or just stored) answer back into a message or a status.
async fn decode<Resp: Message + Default>(response: Response) -> Result<Resp, tonic::Status> {
    let bytes = stored_answer(response).await?;
    Resp::decode(bytes).map_err(|e| Problem::internal(e).into())
}

/// A stored (or just stored) answer's body when it is a success, or the problem it
/// records (rebuilt from its problem+json document, its retry hint kept).
pub(crate) async fn stored_answer(response: Response) -> Result<bytes::Bytes, Problem> {
    let status = response.status();
    // A problem's retry hint travels as `Retry-After` (seconds): keep it for the status's
    // details (a refused call-out, a key in use).
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let bytes = axum::body::to_bytes(response.into_body(), MAX_STORED)
        .await
        .map_err(|e| Problem::internal(std::io::Error::other(e.to_string())))?;
    if status.is_success() {
        return Ok(bytes);
    }
    // A problem+json document: rebuild the problem from its `type` and detail.
    let body: ProblemBody = serde_json::from_slice(&bytes).map_err(Problem::internal)?;
    let kind = Kind::from_type_uri(&body.type_uri).unwrap_or(Kind::Internal);
    let mut problem = Problem::new(kind).with_errors(body.errors);
    if let Some(detail) = body.detail {
        problem = problem.with_detail(detail);
    }
    if let Some(after) = retry_after {
        problem = problem.with_retry_after(after);
    }
    Err(problem)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use axum::response::IntoResponse;
    use problem::Problem;
    use tonic_types::StatusExt;

    /// A problem answered through the key (a refused call-out, a key in use) keeps its
    /// retry hint on the way back to a status.
    #[tokio::test]
    async fn a_problem_s_retry_hint_survives_the_way_back_to_a_status() {
        let response = Problem::unavailable("accounts is unavailable")
            .with_retry_after(Duration::from_secs(3))
            .into_response();
        let status = super::decode::<()>(response).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let retry = status.get_error_details().retry_info().cloned();
        assert_eq!(
            retry.and_then(|r| r.retry_delay),
            Some(Duration::from_secs(3))
        );
    }
}
