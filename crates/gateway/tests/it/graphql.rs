//! The tutorial's GraphQL, served by the gateway over catalog and accounts.

use serde_json::{Value, json};

use crate::helpers::{System, calls};

/// The tutorial's example query, verbatim.
const TUTORIAL_QUERY: &str = r#"
# Client query — ask for exactly the fields you need.
query {
    product(id: "1") {
        name
        price
        reviews {
            rating
            user { name }
        }
    }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_query_returns_the_tutorials_response_shape() {
    let system = System::start(2, 0).await;
    // The tutorial's one review: Jane (user 1) gave the Laptop 5 stars.
    system.review(1, 1, 5, "Fast and light.").await;
    let asked = std::time::Instant::now();
    let answer = system.graphql(TUTORIAL_QUERY).await;
    let regained = 50.0 * asked.elapsed().as_secs_f64();
    assert_eq!(
        answer["data"],
        json!({
                "product": {
                    "name": "Laptop",
                    "price": 999.99,
                    "reviews": [
                        {"rating": 5, "user": {"name": "Jane Doe"}}
                    ]
                }
        })
    );
    // Its cost (see the schema's description): the product 1, its reviews 2 + 20 × (1 +
    // the author's 1) requested; 1 + 2 + 1 × 2 for what came back.
    let cost = &answer["extensions"]["cost"];
    assert_eq!(cost["requestedQueryCost"], 43, "{answer:#}");
    assert_eq!(cost["actualQueryCost"], 5);
    assert_eq!(cost["throttleStatus"]["maximumAvailable"], 1000.0);
    assert_eq!(cost["throttleStatus"]["restoreRate"], 50.0);
    // 1,000 less the 5 it used (the unused 38 given back), plus what the bucket regained
    // at 50 a second while the operation ran (a busy machine makes that a few points).
    let available = cost["throttleStatus"]["currentlyAvailable"]
        .as_f64()
        .unwrap();
    assert!(
        (995.0..=995.0 + regained.ceil()).contains(&available),
        "{regained} regained: {answer:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_that_does_not_exist_is_null_not_an_error() {
    let system = System::start(2, 0).await;
    for id in ["999", "0", "-3", "laptop"] {
        let answer = system
            .graphql(&format!("{{ product(id: \"{id}\") {{ name }} }}"))
            .await;
        assert_eq!(answer["data"], json!({"product": null}), "id {id}");
        assert!(answer.get("errors").is_none(), "id {id}: {answer:#}");
    }
}

/// N+1, answered: a page of 50 products with their reviews and the reviews' authors
/// costs three backend calls — the page, one batch of reviews, one batch of users —
/// counted from the gateway's own per-downstream series. A current-thread runtime: the
/// test's own recorder sees only its own calls.
#[tokio::test]
async fn a_page_of_products_with_reviews_and_authors_is_three_backend_calls() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    // 50 products × 20 reviews × their authors may cost 2,152: above the default maximum.
    // Every query runs (none answered from the gateway's kept answers): this counts how
    // a query executes.
    let system = System::start_with(60, 300, |s| {
        s.gateway.graphql.max_cost = 5_000;
        s.gateway.graphql.bucket_size = 100_000;
        s.gateway.graphql.answer_cache_entries = 0;
    })
    .await;
    for limit in [50, 5] {
        let before = metrics.render();
        let answer = system
            .graphql(&format!(
                "{{ products(limit: {limit}) {{ name reviews {{ rating user {{ name }} }} }} }}"
            ))
            .await;
        let after = metrics.render();
        assert!(answer.get("errors").is_none(), "{answer:#}");
        let products = answer["data"]["products"].as_array().unwrap();
        assert_eq!(products.len(), limit);
        let reviews: Vec<&Value> = products
            .iter()
            .flat_map(|p| p["reviews"].as_array().unwrap())
            .collect();
        assert!(
            reviews.len() > limit,
            "the seed's 300 reviews are spread over the page"
        );
        assert!(
            reviews
                .iter()
                .all(|r| r["user"]["name"].as_str().is_some_and(|n| !n.is_empty()))
        );
        assert_eq!(
            calls(&after, "catalog") - calls(&before, "catalog"),
            2.0,
            "the page and one batch of reviews"
        );
        assert_eq!(
            calls(&after, "accounts") - calls(&before, "accounts"),
            1.0,
            "one batch of users"
        );
    }
    // Many at once: still three calls each (a level's keys are not split into several
    // batches when operations interleave).
    let before = metrics.render();
    let query = "{ products(limit: 50) { name reviews { rating user { name } } } }";
    let answers = futures::future::join_all((0..16).map(|_| system.graphql(query))).await;
    let after = metrics.render();
    for answer in &answers {
        assert!(answer.get("errors").is_none(), "{answer:#}");
    }
    assert_eq!(calls(&after, "catalog") - calls(&before, "catalog"), 32.0);
    assert_eq!(calls(&after, "accounts") - calls(&before, "accounts"), 16.0);
}

/// A failing backend gives a field error with the error table's extensions, and the
/// fields that did not need it still resolve: accounts down, the reviews' authors fail.
/// `Review.user` is non-null, so as the spec says the null reaches the nearest nullable
/// field (`product`), while the other root field is answered (`data` and `errors`
/// together), in the order asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_fails_is_a_field_error_with_the_error_tables_extensions() {
    let mut system = System::start(2, 0).await;
    system.review(1, 1, 5, "Fast and light.").await;
    system.stop_accounts().await;
    let (status, answer) = system
        .graphql_with(
            "{ product(id: \"1\") { name reviews { rating user { name } } } mouse: product(id: \"2\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let errors = answer["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{answer:#}");
    let error = &errors[0];
    assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{error:#}");
    assert_eq!(error["extensions"]["status"], 503);
    assert!(
        error["extensions"]["type"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{error:#}"
    );
    assert_eq!(
        error["path"],
        json!(["product", "reviews", 0, "user"]),
        "{error:#}"
    );
    // Partial data: the null went up to `product`; what did not need accounts is there.
    assert_eq!(
        answer["data"],
        json!({ "product": null, "mouse": { "name": "Mouse" } }),
        "{answer:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_product_with_an_idempotency_key_creates_one_product() {
    let system = System::start(2, 0).await;
    let mutation = r#"mutation { createProduct(name: "Dock", price: 129.5, stock: 7, idempotencyKey: "dock-1") { id name price stock } }"#;
    let first = system.graphql(mutation).await;
    let again = system.graphql(mutation).await;
    assert!(first.get("errors").is_none(), "{first:#}");
    assert_eq!(
        first["data"], again["data"],
        "the retry answers the first product"
    );
    assert_eq!(
        first["extensions"]["cost"]["requestedQueryCost"], 11,
        "a mutation: 10 + 1"
    );
    assert_eq!(first["data"]["createProduct"]["name"], "Dock");
    assert_eq!(first["data"]["createProduct"]["stock"], 7);
    let page = system.graphql("{ products(limit: 10) { name } }").await;
    let docks = page["data"]["products"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "Dock")
        .count();
    assert_eq!(docks, 1);
    // A product catalog refuses: a validation error, not a 500.
    let refused = system
        .graphql(r#"mutation { createProduct(name: "", price: -1, stock: 1) { id } }"#)
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "INVALID_ARGUMENT",
        "{refused:#}"
    );
    assert_eq!(refused["data"], Value::Null);
}

/// The committed SDL is the schema the code serves: a change to one without the other
/// fails here.
#[test]
fn the_committed_sdl_is_the_codes() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../graphql/schema.graphql");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == gateway::graphql::sdl(),
        "graphql/schema.graphql is out of date with the code. Regenerate it with \
         `cargo run -q -p brigade -- graphql --write` and review the diff."
    );
}

/// What an operation resolved is charged even when a failed non-null root field nulls
/// `data` (the spec's null propagation comes after the cost is measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_root_field_does_not_refund_what_the_others_resolved() {
    let system = System::start(20, 0).await;
    let (status, answer) = system
        .graphql_with(
            "{ products(limit: 20) { name } bad: products(limit: 0) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["data"], Value::Null, "{answer:#}");
    assert_eq!(answer["errors"][0]["path"], json!(["bad"]), "{answer:#}");
    // 20 products listed: 2 for the list and 1 for each.
    assert_eq!(
        answer["extensions"]["cost"]["actualQueryCost"], 22,
        "{answer:#}"
    );
}
