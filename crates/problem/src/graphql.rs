//! The one conversion to a GraphQL error (the spec's `errors[]` entry).

use serde::Serialize;

use crate::{Problem, request_context};

/// A GraphQL error as the spec shapes it; `extensions` carries the table's vocabulary:
/// `code` (the gRPC code name), `type` (the problem URI), `status`, `retryable`,
/// `correlation_id` and, for validation failures, `errors` — plus `classification`, the
/// error class in graphql-java's and Spring for GraphQL's words (`BAD_REQUEST` for every
/// refusal of what the client asked, a missing record included; `UNAUTHORIZED`,
/// `FORBIDDEN`) and, for the server's failures, Apollo's `INTERNAL_SERVER_ERROR` (the
/// name tools such as Schemathesis read as a server failure) — so that GraphQL tooling
/// can tell a refused request from a failed server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphqlError {
    pub message: String,
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn to_graphql(&self, correlation_id: &str) -> GraphqlError {
        use serde_json::Value;
        let kind = self.kind;
        let mut ext = serde_json::Map::new();
        ext.insert("code".into(), Value::from(kind.graphql_code()));
        ext.insert("type".into(), Value::from(kind.type_uri()));
        ext.insert("status".into(), Value::from(kind.http_status().as_u16()));
        ext.insert("retryable".into(), Value::from(kind.retryable()));
        ext.insert("classification".into(), Value::from(classification(kind)));
        if !correlation_id.is_empty() {
            ext.insert("correlation_id".into(), Value::from(correlation_id));
        }
        if !self.more.errors.is_empty() {
            ext.insert(
                "errors".into(),
                serde_json::to_value(&self.more.errors).unwrap_or(Value::Null),
            );
        }
        for (k, v) in &self.more.extensions {
            ext.entry(k.clone()).or_insert_with(|| v.clone());
        }
        GraphqlError {
            message: self
                .public_detail()
                .map(|d| d.into_owned())
                .unwrap_or_else(|| kind.title().to_owned()),
            extensions: ext,
        }
    }
}

impl From<Problem> for GraphqlError {
    fn from(problem: Problem) -> Self {
        let (correlation_id, _) = request_context();
        problem.log(&correlation_id);
        problem.to_graphql(&correlation_id)
    }
}

/// graphql-java's `ErrorType` for a kind of the table.
fn classification(kind: crate::Kind) -> &'static str {
    use crate::Kind;
    match kind {
        Kind::Unauthenticated => "UNAUTHORIZED",
        Kind::Forbidden => "FORBIDDEN",
        k if k.is_server_error() => "INTERNAL_SERVER_ERROR",
        _ => "BAD_REQUEST",
    }
}
