//! The door every client comes through: who the caller is (its API key, or anonymous),
//! and what the gateway tells the services about it (a signed identity token naming the
//! client, `server::identity`). REST forwarding (`forward`) and GraphQL (`web`) both ask
//! here.

use std::sync::Arc;

use http::HeaderMap;
use problem::Problem;
use server::identity::Signer;

use crate::admit::Admission;
use crate::graphql::answers::Answers;
use crate::graphql::limits::Mutated;
use crate::keys::{Caller, Keys};

#[derive(Debug, Clone)]
pub struct Edge {
    pub keys: Keys,
    /// Rates, concurrency and shedding (`crate::admit`).
    pub admission: Arc<Admission>,
    /// GraphQL answers kept for a repeat, forgotten by every write (`graphql::answers`).
    pub answers: Arc<Answers>,
    signer: Arc<Signer>,
}

impl Edge {
    pub fn new(
        keys: Keys,
        signer: Arc<Signer>,
        admission: Arc<Admission>,
        answers: Arc<Answers>,
    ) -> Self {
        Self {
            keys,
            admission,
            answers,
            signer,
        }
    }

    /// For a request that writes (or, given `mutated`, a GraphQL request that turns out to
    /// hold a mutation): when the guard drops — once the response is made, or when the
    /// request is cancelled after its write may have taken effect — every kept answer is
    /// forgotten, so nothing kept from before the write is served after it.
    pub fn forget_after(&self, mutated: Option<Mutated>) -> ForgetAfter {
        ForgetAfter {
            answers: Arc::clone(&self.answers),
            mutated,
        }
    }

    /// The caller's address, when the server recorded it.
    pub fn peer(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
        extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
    }

    /// The caller the request's `Authorization` names (401 for a key that is not valid).
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        self.keys
            .authenticate(headers.get(http::header::AUTHORIZATION))
    }

    /// The identity token a call made for `caller` carries.
    pub fn token(&self, caller: &Caller) -> http::HeaderValue {
        self.signer.token(&caller.client())
    }

    /// `work` acting for `caller`: the calls it makes to services name the caller's
    /// client (their tokens, and the idempotency scope the services read from them).
    pub fn acting_for<F: std::future::Future>(
        caller: &Caller,
        work: F,
    ) -> impl std::future::Future<Output = F::Output> {
        let ctx = telemetry::context::current().map(|ctx| ctx.with_client(caller.client()));
        async move {
            match ctx {
                Some(ctx) => telemetry::context::scope(ctx, work).await,
                None => work.await,
            }
        }
    }
}

/// See [`Edge::forget_after`].
#[must_use = "the kept answers are forgotten when this guard drops"]
pub struct ForgetAfter {
    answers: Arc<Answers>,
    mutated: Option<Mutated>,
}

impl Drop for ForgetAfter {
    fn drop(&mut self) {
        if self.mutated.as_ref().is_none_or(Mutated::get) {
            self.answers.forget_all();
        }
    }
}
