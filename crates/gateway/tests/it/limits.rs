//! What an operation may ask for: hostile operations are refused before any resolver
//! runs (the gateway's backend call counters do not move), and the cost bucket throttles
//! a client that spends faster than it refills.

use serde_json::{Value, json};
use telemetry::metrics::series_value;

use crate::helpers::System;

/// Every outbound call the gateway has made, from its own series.
fn gateway_calls(rendered: &str) -> f64 {
    series_value(
        rendered,
        "brigade_downstream_calls_total",
        &[("service", "gateway")],
    )
}

/// The first error's `extensions`.
fn refusal(answer: &Value) -> &Value {
    &answer["errors"][0]["extensions"]
}

/// Each hostile operation of the issue, refused with a clear error and no backend call.
/// A current-thread runtime: the test's own recorder sees only its own calls.
#[tokio::test]
async fn hostile_operations_are_refused_before_any_backend_call() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let system = System::start(2, 0).await;
    // One real query first: the counters exist and move when something runs.
    system.graphql(r#"{ product(id: "1") { name } }"#).await;
    let before = gateway_calls(&metrics.render());
    assert_eq!(before, 1.0);

    // Depth 50: users' orders' users' orders...
    let mut deep = String::from("name");
    for _ in 0..12 {
        deep = format!("orders {{ nodes {{ user {{ {deep} }} }} }}");
    }
    let deep = format!(r#"{{ user(id: "1") {{ {deep} }} }}"#);
    let answer = system.graphql(&deep).await;
    assert_eq!(refusal(&answer)["limit"], "max_depth", "{answer:#}");
    assert_eq!(refusal(&answer)["value"], 38);
    assert_eq!(refusal(&answer)["code"], "INVALID_ARGUMENT");
    assert_eq!(answer["data"], Value::Null);
    // ...and through introspection (its own allowance is deeper, not unbounded).
    let mut deep = String::from("name");
    for _ in 0..48 {
        deep = format!("ofType {{ {deep} }}");
    }
    let deep = format!(r#"{{ __type(name: "Product") {{ {deep} }} }}"#);
    let answer = system.graphql(&deep).await;
    assert_eq!(
        refusal(&answer)["limit"],
        "max_introspection_depth",
        "{answer:#}"
    );
    assert_eq!(refusal(&answer)["value"], 50);
    // A tool's standard introspection query is answered.
    let introspection = system.graphql(INTROSPECTION).await;
    assert!(introspection.get("errors").is_none(), "{introspection:#}");
    assert_eq!(
        introspection["data"]["__schema"]["queryType"]["name"],
        "Query"
    );

    // 1,000 aliases of one field.
    let aliases: String = (0..1000)
        .map(|i| format!(r#"a{i}: product(id: "1") {{ name }} "#))
        .collect();
    let answer = system.graphql(&format!("{{ {aliases} }}")).await;
    assert_eq!(refusal(&answer)["limit"], "max_aliases", "{answer:#}");
    assert_eq!(refusal(&answer)["value"], 1000);

    // A fragment cycle.
    let cycle = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
    let answer = system.graphql(cycle).await;
    assert_eq!(refusal(&answer)["limit"], "fragment_cycle", "{answer:#}");

    // More than the maximum cost: 200 products × 20 reviews × their authors.
    let costly = "{ products(limit: 200) { name reviews { rating user { name } } } }";
    let answer = system.graphql(costly).await;
    assert_eq!(refusal(&answer)["limit"], "max_cost", "{answer:#}");
    assert_eq!(refusal(&answer)["value"], 2 + 200 * (1 + 2 + 20 * 2));
    assert_eq!(refusal(&answer)["maximum"], 1000);
    // The same through a variable: the cost is computed with variables applied.
    let (_, answer) = system
        .graphql_with(
            "query($n: Int) { products(limit: $n) { name reviews { rating user { name } } } }",
            json!({"n": 200}),
        )
        .await;
    assert_eq!(refusal(&answer)["limit"], "max_cost", "{answer:#}");

    // A variable's default is what runs, so it is what is priced.
    let (_, answer) = system
        .graphql_with(
            "query($n: Int = 200) { products(limit: $n) { name reviews { rating user { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(refusal(&answer)["limit"], "max_cost", "{answer:#}");

    // Fragments that multiply: each spreads the next twice (2^30 fields if expanded).
    let mut fragments = String::from("query { ...F0 } ");
    for i in 0..30 {
        fragments.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} }} ",
            n = i + 1
        ));
    }
    fragments.push_str("fragment F30 on Query { products(limit: 1) { name } }");
    let answer = system.graphql(&fragments).await;
    assert_eq!(refusal(&answer)["limit"], "max_selections", "{answer:#}");
    // ...also beside a harmless operation that is the one named to run.
    let (_, answer) = system
        .post_graphql(&json!({
            "query": format!("query Harmless {{ __typename }} {}", fragments.replacen("query {", "query Bomb {", 1)),
            "operationName": "Harmless",
        }))
        .await;
    assert_eq!(refusal(&answer)["limit"], "max_selections", "{answer:#}");

    // A batch of 100 operations.
    let batch: Vec<Value> = (0..100)
        .map(|_| json!({"query": r#"{ product(id: "1") { name } }"#}))
        .collect();
    let (status, problem) = system.post_graphql(&Value::Array(batch)).await;
    assert_eq!(status, 422, "{problem:#}");
    assert!(
        problem["errors"][0]["reason"]
            .as_str()
            .is_some_and(|d| d.contains("100 operations")),
        "{problem:#}"
    );

    // A 1 MB query string.
    let huge = format!(
        "{{ product(id: \"1\") {{ name }} }} #{}",
        "x".repeat(1 << 20)
    );
    let (status, problem) = system.graphql_with(&huge, json!({})).await;
    assert_eq!(status, 413, "{problem:#}");

    assert_eq!(
        gateway_calls(&metrics.render()),
        before,
        "no refused operation called a backend"
    );
}

/// A client that spends faster than its bucket refills is throttled, told when to come
/// back, and admitted again once the points have come back; another client keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_spending_faster_than_its_bucket_refills_is_throttled() {
    let system = System::start_with(2, 0, |s| {
        s.gateway.graphql.bucket_size = 100;
        s.gateway.graphql.max_cost = 100;
        s.gateway.graphql.restore_rate = 10;
    })
    .await;
    // Requested 2 + 40 × 1 = 42 (only two products exist, so 4 are charged).
    let query = "{ products(limit: 40) { name } }";
    let first = system.graphql(query).await;
    assert_eq!(first["extensions"]["cost"]["requestedQueryCost"], 42);
    assert_eq!(first["extensions"]["cost"]["actualQueryCost"], 4);
    // Spend it all faster than 10 a second refills it: 42 each, 38 of them given back...
    // so ask for what cannot be given back: a mutation of 11, ten times.
    let mut throttled = None;
    for i in 0..12 {
        let answer = system
            .graphql(&format!(
                r#"mutation {{ createProduct(name: "P{i}", price: 1.0, stock: 1, idempotencyKey: "p-{i}") {{ id }} }}"#
            ))
            .await;
        if answer.get("errors").is_some() {
            throttled = Some(answer);
            break;
        }
    }
    let answer = throttled.expect("throttled before 12 mutations of 11 from a bucket of 100");
    let error = &answer["errors"][0];
    assert_eq!(error["extensions"]["code"], "THROTTLED", "{answer:#}");
    assert_eq!(error["extensions"]["status"], 429);
    assert!(error["extensions"]["retryAfterSeconds"].as_f64().unwrap() >= 1.0);
    assert_eq!(answer["data"], Value::Null);
    let cost = &answer["extensions"]["cost"];
    assert_eq!(cost["requestedQueryCost"], 11);
    assert!(
        cost["throttleStatus"]["currentlyAvailable"]
            .as_f64()
            .unwrap()
            < 11.0
    );
    // Nothing was created by the refused mutation.
    let page = system.graphql("{ products(limit: 40) { name } }").await;
    let created = page["data"]["products"].as_array().map_or(0, |p| p.len());
    assert!(created <= 12, "{page:#}");
}

/// graphql-js's `getIntrospectionQuery()` (what GraphiQL, code generators and fuzzers send).
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;
