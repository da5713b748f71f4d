//! [`Keyed`]: one face's write request and how its answer is kept, so that a service's
//! application layer runs a use case once for every face. REST ([`IdempotentJson`]) keeps
//! the HTTP response; gRPC ([`GrpcWrite`]) keeps the encoded response message. The use
//! case decides the order (its dependency calls, its write); the face only says how its
//! answer looks ([`Keyed::Answer`]) and gets back what it returns ([`Keyed::Output`]).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use axum::response::Response;
use problem::Problem;
use prost::Message;
use storage::WriteTx;
use storage::rusqlite::Connection;

use crate::extract::IdempotentJson;
use crate::record::Idempotency;

/// A use case's future, boxed: the trait's futures are awaited inside faces' handlers
/// that must be `Send` (axum, tonic), and an unboxed `impl Future + Send` there trips
/// rustc's higher-ranked lifetime checks for the `work` closures that borrow; one
/// allocation per write is nothing beside its transaction.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A face's write request, with what identifies it for its `Idempotency-Key`.
pub trait Keyed: Sync {
    /// What the write answers with when it succeeds: REST a response, gRPC the message.
    type Answer: Send + 'static;
    /// What the face's handler gets back: the answer, a replay, or a problem, in the
    /// face's own terms.
    type Output: Send;

    /// The write, with the key's decisions (replay, refusal) first, then `call_out` (a
    /// question to another service, holding no claim and no lock), then `work` in one
    /// transaction with the key's record: see [`Idempotency::run_after`].
    fn run_after<'a, C, F, Fut>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: F,
    ) -> Boxed<'a, Self::Output>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        F: FnOnce(WriteTx) -> Fut + Send + 'a,
        Fut: Future<Output = (WriteTx, Result<Self::Answer, Problem>)> + Send + 'a;

    /// [`run_after`](Keyed::run_after) whose write is [`run_local`](Keyed::run_local)'s
    /// synchronous call (only where [`writes_locally`](Keyed::writes_locally)): the key's
    /// decisions, then `call_out` holding nothing, then the write on the rusqlite writer.
    fn run_after_local<'a, C, W>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: W,
    ) -> Boxed<'a, Self::Output>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        W: FnOnce(&Connection) -> Result<Self::Answer, Problem> + Send + 'static;

    /// A write whose effect is outside this database (a broker's), under the key: see
    /// [`Idempotency::run_claimed`]. Without a key (gRPC, GraphQL) `work` runs once.
    fn run_claimed<'a, W>(
        &'a self,
        idempotency: &'a Idempotency,
        work: W,
    ) -> Boxed<'a, Self::Output>
    where
        W: Future<Output = Result<Self::Answer, Problem>> + Send + 'a;

    /// Whether [`run_local`](Keyed::run_local) can run this write: the database is a
    /// SQLite file with a rusqlite writer, and the request has a key to keep.
    fn writes_locally(&self, idempotency: &Idempotency) -> bool;

    /// The write as one synchronous call on a SQLite file's rusqlite writer (see
    /// [`Idempotency::run_local`]); only where [`writes_locally`](Keyed::writes_locally).
    fn run_local<'a, W>(&'a self, idempotency: &'a Idempotency, work: W) -> Boxed<'a, Self::Output>
    where
        W: FnOnce(&Connection) -> Result<Self::Answer, Problem> + Send + 'static;
}

impl<T: Sync> Keyed for IdempotentJson<T> {
    type Answer = Response;
    type Output = Response;

    fn run_after<'a, C, F, Fut>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: F,
    ) -> Boxed<'a, Response>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        F: FnOnce(WriteTx) -> Fut + Send + 'a,
        Fut: Future<Output = (WriteTx, Result<Response, Problem>)> + Send + 'a,
    {
        Box::pin(idempotency.execute_after(self, call_out, work))
    }

    fn run_after_local<'a, C, W>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: W,
    ) -> Boxed<'a, Response>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        W: FnOnce(&Connection) -> Result<Response, Problem> + Send + 'static,
    {
        Box::pin(idempotency.run_after_local(
            &self.scope,
            &self.key,
            &self.fingerprint,
            call_out,
            work,
        ))
    }

    fn run_claimed<'a, W>(&'a self, idempotency: &'a Idempotency, work: W) -> Boxed<'a, Response>
    where
        W: Future<Output = Result<Response, Problem>> + Send + 'a,
    {
        Box::pin(idempotency.run_claimed(&self.scope, &self.key, &self.fingerprint, work))
    }

    fn writes_locally(&self, idempotency: &Idempotency) -> bool {
        idempotency.writes_locally()
    }

    fn run_local<'a, W>(&'a self, idempotency: &'a Idempotency, work: W) -> Boxed<'a, Response>
    where
        W: FnOnce(&Connection) -> Result<Response, Problem> + Send + 'static,
    {
        Box::pin(idempotency.execute_local(self, work))
    }
}

/// A gRPC write: the method's path (part of the fingerprint) and the request, whose
/// `idempotency-key` metadata is optional (without one the write simply runs once, as
/// the seed's clients expect). `Resp` is the method's response message.
pub struct GrpcWrite<'a, Req, Resp> {
    method_path: &'static str,
    request: &'a tonic::Request<Req>,
    response: PhantomData<fn() -> Resp>,
}

impl<'a, Req, Resp> GrpcWrite<'a, Req, Resp> {
    pub fn new(method_path: &'static str, request: &'a tonic::Request<Req>) -> Self {
        Self {
            method_path,
            request,
            response: PhantomData,
        }
    }
}

impl<Req, Resp> Keyed for GrpcWrite<'_, Req, Resp>
where
    Req: Message + Sync,
    Resp: Message + Default + 'static,
{
    type Answer = Resp;
    type Output = Result<tonic::Response<Resp>, tonic::Status>;

    fn run_after<'a, C, F, Fut>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: F,
    ) -> Boxed<'a, Self::Output>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        F: FnOnce(WriteTx) -> Fut + Send + 'a,
        Fut: Future<Output = (WriteTx, Result<Resp, Problem>)> + Send + 'a,
    {
        Box::pin(idempotency.execute_grpc_after(self.method_path, self.request, call_out, work))
    }

    fn run_after_local<'a, C, W>(
        &'a self,
        idempotency: &'a Idempotency,
        call_out: C,
        work: W,
    ) -> Boxed<'a, Self::Output>
    where
        C: Future<Output = Result<(), Problem>> + Send + 'a,
        W: FnOnce(&Connection) -> Result<Resp, Problem> + Send + 'static,
    {
        let identity = crate::grpc::identity(self.method_path, self.request);
        Box::pin(async move {
            let Some((scope, key, fingerprint)) = identity? else {
                return Err(Problem::internal(std::io::Error::other(
                    "run_after_local for a gRPC write without an idempotency-key",
                ))
                .into());
            };
            let response = idempotency
                .run_after_local(&scope, &key, &fingerprint, call_out, move |conn| {
                    work(conn).map(|message| crate::grpc::stored_message(&message))
                })
                .await;
            crate::grpc::answer_of(response).await
        })
    }

    fn run_claimed<'a, W>(
        &'a self,
        idempotency: &'a Idempotency,
        work: W,
    ) -> Boxed<'a, Self::Output>
    where
        W: Future<Output = Result<Resp, Problem>> + Send + 'a,
    {
        let identity = crate::grpc::identity(self.method_path, self.request);
        Box::pin(async move {
            let Some((scope, key, fingerprint)) = identity? else {
                return Ok(tonic::Response::new(work.await?));
            };
            let response = idempotency
                .run_claimed(&scope, &key, &fingerprint, async move {
                    work.await
                        .map(|message| crate::grpc::stored_message(&message))
                })
                .await;
            crate::grpc::answer_of(response).await
        })
    }

    fn writes_locally(&self, idempotency: &Idempotency) -> bool {
        // Without a key the plain write runs in its own transaction.
        idempotency.writes_locally() && self.request.metadata().contains_key(crate::HEADER)
    }

    fn run_local<'a, W>(&'a self, idempotency: &'a Idempotency, work: W) -> Boxed<'a, Self::Output>
    where
        W: FnOnce(&Connection) -> Result<Resp, Problem> + Send + 'static,
    {
        let identity = crate::grpc::identity(self.method_path, self.request);
        Box::pin(async move {
            let Some((scope, key, fingerprint)) = identity? else {
                return Err(Problem::internal(std::io::Error::other(
                    "run_local for a gRPC write without an idempotency-key",
                ))
                .into());
            };
            let response = idempotency
                .run_local(&scope, &key, &fingerprint, move |conn| {
                    work(conn).map(|message| crate::grpc::stored_message(&message))
                })
                .await;
            crate::grpc::answer_of(response).await
        })
    }
}
