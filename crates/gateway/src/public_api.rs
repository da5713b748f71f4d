//! One OpenAPI document for the whole public REST API, as the gateway serves it
//! (`/openapi.json`, and Swagger UI at `/docs`): the owning services' committed documents
//! (`openapi/{catalog,accounts,orders,billing}.json`, each held equal to its code by that
//! service's tests) merged, with the edge's own contract added to every operation — the
//! API key (`Authorization: Bearer`), the scope it needs (`x-scope`), 401/403 where a key
//! is needed, 429 everywhere, and the RateLimit fields. Committed as
//! `openapi/gateway.json` (`brigade openapi --write`; drift-tested).

use serde_json::{Map, Value, json};

use crate::forward::scope_of_rest;

/// The owners' documents, as committed.
const OWNERS: [(&str, &str); 4] = [
    ("catalog", include_str!("../../../openapi/catalog.json")),
    ("accounts", include_str!("../../../openapi/accounts.json")),
    ("orders", include_str!("../../../openapi/orders.json")),
    ("billing", include_str!("../../../openapi/billing.json")),
];

const INTRO: &str = "Brigade's public REST API, served by the gateway: every path is forwarded to the service that owns it. \
Catalog's reads are public; everything else needs an API key (`brigade keys create`) sent as `Authorization: Bearer <key>`, \
with the scope each operation names in `x-scope`. No key or a key that is not valid: 401 (`unauthenticated`, with \
`WWW-Authenticate`); a key without the scope: 403 (`forbidden`). Each key has a rate (GCRA; anonymous reads one per client \
address) and a number of requests it may have in flight: past either, 429 (`rate-limited`) with `Retry-After`. Every \
answer the gateway admits carries `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers). \
`Idempotency-Key`s are scoped to the API key.";

/// The merged document (an owner's document that does not parse is left out, logged).
pub fn openapi() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut tags = Vec::new();
    let mut conventions = String::new();
    for (owner, text) in OWNERS {
        let Ok(doc) = serde_json::from_str::<Value>(text) else {
            tracing::error!(
                owner,
                "the committed OpenAPI document does not parse; left out"
            );
            continue;
        };
        if let Some(owned) = doc["paths"].as_object() {
            for (path, item) in owned {
                paths.insert(path.clone(), edge_contract(path, item.clone()));
            }
        }
        if let Some(owned) = doc["components"]["schemas"].as_object() {
            for (name, schema) in owned {
                schemas
                    .entry(name.clone())
                    .or_insert_with(|| schema.clone());
            }
        }
        if let Some(owned) = doc["tags"].as_array() {
            for tag in owned {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        if conventions.is_empty()
            && let Some(text) = doc["info"]["description"].as_str()
            && let Some((_, rest)) = text.split_once("\n\n")
        {
            conventions = rest.to_owned();
        }
    }
    unique_operation_ids(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Brigade",
            "description": format!("{INTRO}\n\n{conventions}"),
            "license": {"name": "MIT", "identifier": "MIT"},
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `brigade keys create` (`bgd_sk_…` secret, `bgd_rk_…` restricted)."
                }
            }
        },
        "tags": tags,
    })
}

/// Makes every operationId unique, as OpenAPI requires: the owners' documents reuse
/// `get`, `list` and `create` per resource, so each becomes `<resource>.<id>` (the last
/// literal segment of its path: `products.get`, `reviews.list`), with the method added
/// where that is still taken.
fn unique_operation_ids(paths: &mut Map<String, Value>) {
    let mut taken = std::collections::HashSet::new();
    for (path, item) in paths.iter_mut() {
        let resource = path
            .split('/')
            .rfind(|s| !s.is_empty() && !s.starts_with('{') && *s != "v1")
            .unwrap_or("root")
            .to_owned();
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in operations.iter_mut() {
            let Some(id) = operation.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            let mut unique = format!("{resource}.{id}");
            if taken.contains(&unique) {
                unique = format!("{resource}.{method}.{id}");
            }
            taken.insert(unique.clone());
            operation["operationId"] = json!(unique);
        }
    }
}

/// `item` (one path's operations) with the edge's contract on each operation.
fn edge_contract(path: &str, mut item: Value) -> Value {
    let Some(operations) = item.as_object_mut() else {
        return item;
    };
    for (method, operation) in operations.iter_mut() {
        let Ok(method) = method.to_uppercase().parse::<http::Method>() else {
            continue;
        };
        let Some(operation) = operation.as_object_mut() else {
            continue;
        };
        let scope = scope_of_rest(path, &method).flatten();
        match scope {
            Some(scope) => {
                operation.insert("security".to_owned(), json!([{"apiKey": []}]));
                operation.insert("x-scope".to_owned(), json!(scope.as_str()));
            }
            // Public: a key is optional (it is counted against the key's rate).
            None => {
                operation.insert("security".to_owned(), json!([{}, {"apiKey": []}]));
            }
        }
        let responses = operation
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        let Some(responses) = responses else { continue };
        let problem = |description: &str| {
            json!({
                "description": description,
                "headers": ratelimit_headers(),
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            })
        };
        responses.insert(
            "429".to_owned(),
            problem("Over the key's (or the address's) rate or concurrency: retry after `Retry-After` seconds."),
        );
        match scope {
            Some(scope) => {
                responses.insert(
                    "401".to_owned(),
                    problem("No API key, or one that is not valid (unknown, revoked, expired, malformed)."),
                );
                responses.insert(
                    "403".to_owned(),
                    problem(&format!("The API key lacks the `{scope}` scope.")),
                );
            }
            None => {
                responses.insert(
                    "401".to_owned(),
                    problem("An API key was sent and is not valid."),
                );
            }
        }
        for (status, response) in responses.iter_mut() {
            if status.starts_with('2')
                && let Some(response) = response.as_object_mut()
            {
                let headers = response.entry("headers").or_insert_with(|| json!({}));
                if let (Some(headers), Some(more)) =
                    (headers.as_object_mut(), ratelimit_headers().as_object())
                {
                    for (name, header) in more {
                        headers.insert(name.clone(), header.clone());
                    }
                }
            }
        }
    }
    item
}

fn ratelimit_headers() -> Value {
    json!({
        "RateLimit-Policy": {
            "description": "The rate the request was counted against: `\"key\";q=<burst>;w=<seconds to refill it>` (draft-ietf-httpapi-ratelimit-headers).",
            "schema": {"type": "string"}
        },
        "RateLimit": {
            "description": "What is left of it: `\"key\";r=<remaining>;t=<seconds until whole>`.",
            "schema": {"type": "string"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_owned_path_is_in_and_writes_name_their_scope() {
        let doc = openapi();
        for (_, text) in OWNERS {
            let owned: Value = serde_json::from_str(text).unwrap();
            for path in owned["paths"].as_object().unwrap().keys() {
                assert!(doc["paths"].get(path).is_some(), "{path}");
            }
        }
        let create = &doc["paths"]["/v1/products"]["post"];
        assert_eq!(create["x-scope"], "catalog:write");
        assert_eq!(create["security"], json!([{"apiKey": []}]));
        assert!(create["responses"]["403"].is_object());
        let list = &doc["paths"]["/v1/products"]["get"];
        assert!(list.get("x-scope").is_none());
        assert!(list["responses"]["429"].is_object());
        assert!(list["responses"]["200"]["headers"]["RateLimit"].is_object());
        assert_eq!(
            doc["paths"]["/v1/users/{id}"]["get"]["x-scope"],
            "accounts:read"
        );
        // OpenAPI wants operationIds unique.
        let mut ids = std::collections::HashSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                if let Some(id) = operation["operationId"].as_str() {
                    assert!(ids.insert(id.to_owned()), "{id} twice");
                }
            }
        }
        assert_eq!(
            doc["paths"]["/v1/products/{id}/reviews"]["get"]["operationId"],
            "reviews.list"
        );
        // A valid utoipa document, as Swagger UI is given it.
        serde_json::from_value::<utoipa::openapi::OpenApi>(doc).unwrap();
    }
}
