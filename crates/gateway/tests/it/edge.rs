//! The gateway as the one door: API keys and their scopes on every write, REST forwarded
//! to the owning service, idempotency keys scoped per API key, and no way around it.

use std::time::Duration;

use serde_json::{Value, json};

use telemetry::metrics::series_value;

use crate::helpers::{System, bearer, key_id, key_store, make_key};

/// Every write endpoint of the public REST API, read from the committed OpenAPI
/// documents (which tests elsewhere hold equal to the code), so a new one is covered the
/// day it is added.
fn rest_writes() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi");
    let mut writes = Vec::new();
    for service in ["catalog", "accounts", "orders", "billing"] {
        let text = std::fs::read_to_string(dir.join(format!("{service}.json"))).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                if ["post", "put", "patch", "delete"].contains(&method.as_str()) {
                    // Any id will do: the refusal comes before anything is looked up.
                    let concrete = path.replace("{id}", "1").replace("{order_id}", "1");
                    writes.push((method.to_uppercase(), concrete));
                }
            }
        }
    }
    assert!(writes.len() >= 7, "{writes:?}");
    writes
}

/// A call of every mutation, by field name. The test asks the schema for its mutations
/// and fails on any this table lacks.
fn mutation_call(field: &str) -> &'static str {
    match field {
        "createProduct" => {
            r#"mutation { createProduct(name: "Nope", price: 1.5, stock: 1, idempotencyKey: "edge-m1") { id } }"#
        }
        "placeOrder" => {
            r#"mutation { placeOrder(input: {userId: "1", items: [{productId: "1", quantity: 1}]}, idempotencyKey: "edge-m2") { id } }"#
        }
        "cancelOrder" => r#"mutation { cancelOrder(id: "ord_x") { id } }"#,
        other => panic!("mutation {other} has no call in edge.rs's table: add one"),
    }
}

/// The calls the gateway has made to the services (from the test's own recorder), and
/// what the system holds that a write would change (two calls more).
async fn footprint(system: &System, rendered: String) -> (f64, Value, Value) {
    let calls = series_value(
        &rendered,
        "brigade_downstream_calls_total",
        &[("service", "gateway")],
    );
    let products: Value = system
        .anonymous()
        .get(system.gateway.url("/v1/products?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users: Value = system
        .gateway
        .client
        .get(system.gateway.url("/v1/users?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (calls, products, users)
}

/// Revokes the key named `name` in the gateway's database.
async fn revoke_by_name(system: &System, name: &str) {
    let (db, store) = key_store(&system.settings).await;
    store.revoke(&key_id(&store, name).await).await.unwrap();
    db.close().await;
}

/// Polls (5 s at most) until the gateway's copy of its keys has each of `keys` as it
/// should: live (a key read is not a 401) or not (401). Keys are reloaded whole, so
/// once these show, every change made before them does too.
async fn until_keys(system: &System, keys: &[(&str, bool)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = true;
        for (key, live) in keys {
            let status = bearer(key)
                .get(system.gateway.url("/v1/users/1"))
                .send()
                .await
                .unwrap()
                .status();
            all &= (status != 401) == *live;
        }
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not reload its keys within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A current-thread runtime: the test's own recorder sees only its own calls.
#[tokio::test]
async fn every_write_without_a_valid_key_or_its_scope_is_refused_and_changes_nothing() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
    })
    .await;
    let revoked = make_key(&system.settings, "revoked", None).await;
    let narrow = make_key(&system.settings, "narrow", Some("billing:read")).await;
    revoke_by_name(&system, "revoked").await;
    until_keys(&system, &[(&narrow, true), (&revoked, false)]).await;
    let before = footprint(&system, metrics.render()).await;

    let callers = [
        ("no key", system.anonymous(), 401),
        ("a revoked key", bearer(&revoked), 401),
        ("a key of another shape", bearer("sk_live_not_ours"), 401),
        ("a key without the scope", bearer(&narrow), 403),
    ];
    for (method, path) in rest_writes() {
        for (who, client, status) in &callers {
            let answer = client
                .request(method.parse().unwrap(), system.gateway.url(&path))
                .header("idempotency-key", format!("edge-{method}-{path}"))
                .json(&json!({"name": "Nope", "price": 1.5, "stock": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                answer.status().as_u16(),
                *status,
                "{method} {path} with {who}"
            );
            let www = answer.headers().get("www-authenticate").cloned();
            let body: Value = answer.json().await.unwrap();
            let kind = if *status == 401 {
                "unauthenticated"
            } else {
                "forbidden"
            };
            assert_eq!(
                body["type"],
                format!("https://brigade.dev/problems/{kind}"),
                "{method} {path} with {who}: {body}"
            );
            assert_eq!(www.is_some(), *status == 401, "{method} {path} with {who}");
        }
    }

    let mutations: Value = system
        .graphql("{ __schema { mutationType { fields { name } } } }")
        .await;
    let fields = mutations["data"]["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap();
    assert!(fields.len() >= 3);
    for field in fields {
        let name = field["name"].as_str().unwrap();
        for (who, client, status) in &callers {
            let answer = client
                .post(system.gateway.url("/graphql"))
                .json(&json!({"query": mutation_call(name)}))
                .send()
                .await
                .unwrap();
            let http = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap();
            // A key that is not valid is refused at the door (HTTP 401); a missing key or
            // scope is the field's error, with the table's code.
            let code = if *status == 401 {
                "UNAUTHENTICATED"
            } else {
                "PERMISSION_DENIED"
            };
            if http == 401 {
                assert_ne!(*who, "no key", "{name}: {body}");
                assert_eq!(body["status"], 401, "{name} with {who}: {body}");
            } else {
                assert_eq!(http, 200, "{name} with {who}: {body}");
                assert_eq!(
                    body["errors"][0]["extensions"]["code"], code,
                    "{name} with {who}: {body}"
                );
            }
        }
    }
    let after = footprint(&system, metrics.render()).await;
    assert_eq!(
        after.0,
        before.0 + 2.0,
        "the gateway called a service for a refused write (2 calls are the footprint's)"
    );
    assert_eq!(
        (&after.1, &after.2),
        (&before.1, &before.2),
        "a refused write changed something"
    );
}

#[tokio::test]
async fn two_api_keys_with_the_same_idempotency_key_get_two_results() {
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
    })
    .await;
    let other = make_key(&system.settings, "other", Some("catalog:write")).await;
    until_keys(&system, &[(&other, true)]).await;
    let body = json!({"name": "Twin", "price": 2.5, "stock": 4});
    let mut ids = Vec::new();
    for client in [system.gateway.client.clone(), bearer(&other)] {
        for _ in 0..2 {
            let answer = client
                .post(system.gateway.url("/v1/products"))
                .header("idempotency-key", "same-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201);
            let created: Value = answer.json().await.unwrap();
            ids.push(created["id"].as_i64().unwrap());
        }
    }
    // Each key replays its own first answer, and the two keys made two products.
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2], "{ids:?}");
}

/// REST through the gateway, to an owner this process serves: handed to its router in
/// process (the default) or sent over its socket — the same answers either way. A
/// current-thread runtime: the test's own recorder sees only its own calls.
#[tokio::test]
async fn rest_is_forwarded_in_process_with_the_callers_scopes_and_services_refuse_the_side_door() {
    rest_is_forwarded(true).await;
}

#[tokio::test]
async fn rest_is_forwarded_over_the_socket_with_the_callers_scopes_and_services_refuse_the_side_door()
 {
    rest_is_forwarded(false).await;
}

async fn rest_is_forwarded(in_process: bool) {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let mut system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
        s.gateway.forward_in_process = in_process;
    })
    .await;
    let reader = make_key(&system.settings, "reader", Some("accounts:read")).await;
    until_keys(&system, &[(&reader, true)]).await;
    // Catalog's reads are public; a user needs accounts:read.
    let laptop = system
        .anonymous()
        .get(system.gateway.url("/v1/products/1"))
        .header("x-correlation-id", "edge-forward-1")
        .send()
        .await
        .unwrap();
    assert_eq!(laptop.status(), 200);
    assert_eq!(laptop.headers()["x-correlation-id"], "edge-forward-1");
    assert!(laptop.headers().contains_key("etag"));
    let vary: Vec<_> = laptop.headers().get_all("vary").iter().collect();
    assert_eq!(vary.len(), 1, "{vary:?}");
    let body: Value = laptop.json().await.unwrap();
    assert_eq!(body["name"], "Laptop");
    let user = system
        .anonymous()
        .get(system.gateway.url("/v1/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 401);
    let user = bearer(&reader)
        .get(system.gateway.url("/v1/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    // A body past the cap is refused at the door.
    let big = system
        .gateway
        .client
        .post(system.gateway.url("/v1/products"))
        .header("idempotency-key", "too-big")
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    // ...and one that streams past it without saying its length (chunked).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port: u16 = system
            .gateway
            .base
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let chunk = vec![b' '; 70 * 1024];
        let head = format!(
            "POST /v1/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Idempotency-Key: too-big-chunked\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
            system.key,
            chunk.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let _ = tcp.write_all(&chunk).await;
        let _ = tcp.write_all(b"\r\n0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    }
    // Billing's paths are reads only: another method is a 405 saying what is allowed.
    let write = system
        .gateway
        .client
        .delete(system.gateway.url("/v1/payments/ord_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 405);
    assert_eq!(write.headers()["allow"], "GET, HEAD");
    // A path no service owns is the gateway's 404.
    let nothing = system
        .anonymous()
        .get(system.gateway.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 404);

    // The services' own ports take no call that skipped the gateway, key or not.
    for (client, what) in [
        (system.anonymous(), "no key"),
        (bearer(&system.key), "a key"),
    ] {
        let direct = client
            .post(system.catalog.url("/v1/products"))
            .header("idempotency-key", "side-door")
            .json(&json!({"name": "Side", "price": 1.0, "stock": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 401, "{what}");
        let direct = client
            .get(system.accounts().url("/v1/users/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 401, "{what}");
    }

    // Every forward went the way asked.
    let rendered = metrics.render();
    let forwarded = |transport| {
        series_value(
            &rendered,
            "brigade_forwarded_total",
            &[("service", "gateway"), ("transport", transport)],
        )
    };
    let (used, unused) = if in_process {
        ("in_process", "socket")
    } else {
        ("socket", "in_process")
    };
    assert!(forwarded(used) >= 4.0, "{rendered}");
    assert_eq!(forwarded(unused), 0.0, "{rendered}");

    // An owner that has stopped is not reached in process either: 503, not an answer
    // from a service that is gone.
    system.stop_accounts().await;
    let gone = bearer(&reader)
        .get(system.gateway.url("/v1/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 503);
}

/// An owner that fails (its 5xx) is a failure of the call: the client hears the
/// gateway's 503 problem (a dependency's 500 is never ours), a read is retried, and
/// enough of them open the owner's breaker, after which nothing more reaches it — in
/// process and over the socket alike.
#[tokio::test]
async fn an_owners_5xx_counts_against_its_breaker_in_process() {
    an_owners_5xx_counts_against_its_breaker(true).await;
}

#[tokio::test]
async fn an_owners_5xx_counts_against_its_breaker_over_the_socket() {
    an_owners_5xx_counts_against_its_breaker(false).await;
}

async fn an_owners_5xx_counts_against_its_breaker(in_process: bool) {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let system = System::start_with(3, 2, |s| s.gateway.forward_in_process = in_process).await;
    // Catalog loses its reviews table behind its back: every read of reviews is its 500.
    let file = system.settings.data_dir.join("catalog.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&file),
    )
    .await
    .unwrap();
    sqlx::query("DROP TABLE reviews")
        .execute(&mut conn)
        .await
        .unwrap();
    let direct = system
        .catalog
        .client
        .get(system.catalog.url("/v1/products/1/reviews"))
        .send()
        .await
        .unwrap();
    assert!(direct.status().is_server_error(), "{}", direct.status());

    let url = system.gateway.url("/v1/products/1/reviews");
    let breaker = || {
        series_value(
            &metrics.render(),
            "brigade_breaker_state",
            &[("service", "gateway"), ("breaker", "catalog")],
        )
    };
    let reached = || {
        series_value(
            &metrics.render(),
            "brigade_requests_total",
            &[
                ("service", "catalog"),
                ("route", "/v1/products/{id}/reviews"),
            ],
        )
    };
    // The direct read above reached catalog too: count from here.
    let probed = reached();
    let mut asked = 0;
    while breaker() != 1.0 {
        asked += 1;
        assert!(
            asked <= 30,
            "the breaker never opened: {}",
            metrics.render()
        );
        let r = system.anonymous().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("catalog"),
            "{body}"
        );
    }
    // Each read was tried more than once: more calls reached catalog than were asked.
    let before = reached();
    assert!(
        before - probed > f64::from(asked),
        "{} calls for {asked} reads",
        before - probed
    );
    // Open: refused at once, and catalog is not asked.
    let r = system.anonymous().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(reached(), before);
}

#[tokio::test]
async fn a_burst_past_a_keys_rate_is_refused_with_ratelimit_fields_and_others_are_not() {
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
        s.gateway.limits.per_key = settings::Rate {
            per_second: 5,
            burst: 5,
        };
    })
    .await;
    let other = make_key(&system.settings, "other", Some("catalog:write")).await;
    until_keys(&system, &[(&other, true)]).await;
    let started = std::time::Instant::now();
    let (mut admitted, mut refused) = (0u32, 0u32);
    let mut remaining_seen = Vec::new();
    for _ in 0..30 {
        let answer = system
            .gateway
            .client
            .get(system.gateway.url("/v1/products/1"))
            .send()
            .await
            .unwrap();
        let policy = answer.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(policy, "\"key\";q=5;w=1");
        let state = answer.headers()["ratelimit"].to_str().unwrap().to_owned();
        let r: u32 = state
            .split(';')
            .find_map(|p| p.strip_prefix("r="))
            .unwrap()
            .parse()
            .unwrap();
        match answer.status().as_u16() {
            200 => {
                admitted += 1;
                remaining_seen.push(r);
            }
            429 => {
                refused += 1;
                assert_eq!(r, 0, "{state}");
                let retry: u64 = answer.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=1).contains(&retry), "Retry-After {retry}");
                let body: Value = answer.json().await.unwrap();
                assert_eq!(body["status"], 429, "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Never more than the burst plus what the rate refilled meanwhile.
    let allowed = 5.0 + 5.0 * elapsed;
    assert!(
        f64::from(admitted) <= allowed.floor() + 1.0 && admitted >= 5,
        "{admitted} admitted in {elapsed:.2} s (at most {allowed:.1})"
    );
    assert!(refused >= 10, "{refused} refused");
    assert_eq!(&remaining_seen[..5], &[4, 3, 2, 1, 0], "{remaining_seen:?}");

    // Another key has its own rate.
    let answer = bearer(&other)
        .get(system.gateway.url("/v1/products/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // (Its bucket is its own: the polls that waited for it to load took a token or two.)
    let state = answer.headers()["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"key\";r="), "{state}");
}

/// The gRPC services the gateway forwards, and every one of their methods, from the
/// descriptors the services are built from: the gateway's table must name each.
fn public_grpc_methods() -> Vec<(String, String)> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            if !gateway::forward::PUBLIC_GRPC_SERVICES.contains(&full.as_str()) {
                continue;
            }
            for method in &service.method {
                methods.push((full.clone(), method.name().to_owned()));
            }
        }
    }
    methods
}

/// A gRPC (or gRPC-Web) call with an empty message, as raw HTTP: the status the gateway
/// answers with (refusals are trailers-only: `grpc-status` in the headers).
async fn grpc_status(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    web: bool,
    key: Option<&str>,
) -> String {
    let mut request = client
        .post(format!("{base}{path}"))
        .header(
            "content-type",
            if web {
                "application/grpc-web+proto"
            } else {
                "application/grpc"
            },
        )
        .body(vec![0u8, 0, 0, 0, 0]);
    if !web {
        request = request.header("te", "trailers");
    }
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let answer = request.send().await.unwrap();
    answer
        .headers()
        .get("grpc-status")
        .map(|s| s.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "(in the trailers)".to_owned())
}

#[tokio::test]
async fn grpc_and_grpc_web_writes_need_a_key_with_their_scope_and_internal_rpcs_are_unreachable() {
    let recorder = telemetry::metrics::isolated_recorder();
    let metrics = recorder.handle();
    let _own = metrics::set_default_local_recorder(&recorder);
    let system = System::start_with(3, 2, |s| {
        s.gateway.keys.refresh = Duration::from_millis(100);
    })
    .await;
    let narrow = make_key(&system.settings, "narrow", Some("billing:read")).await;
    let revoked = make_key(&system.settings, "revoked", None).await;
    revoke_by_name(&system, "revoked").await;
    until_keys(&system, &[(&narrow, true), (&revoked, false)]).await;

    let listed = public_grpc_methods();
    assert_eq!(
        listed.len(),
        gateway::forward::GRPC_METHODS.len(),
        "the gateway's table and the descriptors differ: {listed:?}"
    );
    for (service, method) in &listed {
        assert!(
            gateway::forward::GRPC_METHODS
                .iter()
                .any(|(s, m, _)| s == service && m == method),
            "{service}/{method} is not in the gateway's table"
        );
    }

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h1 = reqwest::Client::new();
    let base = system.gateway.url("");
    let before = series_value(
        &metrics.render(),
        "brigade_downstream_calls_total",
        &[("service", "gateway")],
    );
    for (service, method, scope) in gateway::forward::GRPC_METHODS {
        let Some(scope) = scope.filter(|s| s.writes()) else {
            continue;
        };
        let path = format!("/{service}/{method}");
        for (web, client) in [(false, &h2), (true, &h1)] {
            for (who, key, status) in [
                ("no key", None, "16"),
                ("a revoked key", Some(revoked.as_str()), "16"),
                ("a malformed key", Some("bgd_sk_nope"), "16"),
                ("a key without the scope", Some(narrow.as_str()), "7"),
            ] {
                assert_eq!(
                    grpc_status(client, &base, &path, web, key).await,
                    status,
                    "{path} (web: {web}) with {who}, needing {scope}"
                );
            }
        }
    }
    assert_eq!(
        series_value(
            &metrics.render(),
            "brigade_downstream_calls_total",
            &[("service", "gateway")],
        ),
        before,
        "a refused gRPC call reached a service"
    );

    // Internal RPCs are not forwarded, whatever the key.
    for path in [
        "/ecommerce.v1.InventoryService/ReserveStock",
        "/ecommerce.v1.OperationsService/RedriveDeadLetters",
    ] {
        for web in [false, true] {
            let client = if web { &h1 } else { &h2 };
            let status = grpc_status(client, &base, path, web, Some(&system.key)).await;
            assert_eq!(status, "12", "{path} (web: {web}) is UNIMPLEMENTED");
        }
    }

    // Forwarded with the key: a create, then a public read and a server stream.
    use proto::v1::product_service_client::ProductServiceClient;
    let channel = tonic::transport::Endpoint::from_shared(base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ProductServiceClient::new(channel);
    let mut create = tonic::Request::new(proto::v1::CreateProductRequest {
        name: "Through the door".into(),
        price: 12.5,
        stock: 3,
    });
    create.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", system.key).parse().unwrap(),
    );
    create
        .metadata_mut()
        .insert("idempotency-key", "grpc-edge-1".parse().unwrap());
    let created = client.create_product(create).await.unwrap().into_inner();
    let read = client
        .get_product(proto::v1::ProductRequest {
            product_id: created.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.name, "Through the door");
    let mut stream = client
        .list_products(proto::v1::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while let Some(product) = stream.message().await.unwrap() {
        seen += 1;
        assert!(product.id > 0);
    }
    assert_eq!(seen, 4, "3 seeded and the one created");
    let refused = client
        .create_product(proto::v1::CreateProductRequest {
            name: "No key".into(),
            price: 1.0,
            stock: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[test]
fn the_committed_public_api_document_is_the_codes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/gateway.json");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = serde_json::to_string_pretty(&gateway::public_api::openapi()).unwrap() + "\n";
    assert!(
        committed == generated,
        "openapi/gateway.json is out of date with the code (or with the owners' committed \
         documents). Regenerate it with `cargo run -- openapi --write`."
    );
}

#[tokio::test]
async fn the_gateway_serves_the_whole_public_api_document_and_its_docs() {
    let system = System::start(2, 0).await;
    let doc: Value = system
        .anonymous()
        .get(system.gateway.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/products",
        "/v1/users",
        "/v1/orders",
        "/v1/payments/{order_id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    assert_eq!(
        doc["paths"]["/v1/orders"]["post"]["x-scope"],
        "orders:write"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
    let page = system
        .anonymous()
        .get(system.gateway.url("/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger"));
}

/// A key works until it is revoked, and stops within the reload bound after; a rolled
/// key's successor works at once after a reload and the old one until its grace ends.
#[tokio::test]
async fn revoking_or_rolling_a_key_takes_effect_within_the_reload_bound() {
    let refresh = Duration::from_millis(200);
    let system = System::start_with(2, 0, |s| s.gateway.keys.refresh = refresh).await;
    let key = make_key(&system.settings, "short-lived", Some("accounts:read")).await;
    let (db, store) = key_store(&system.settings).await;
    let id = key_id(&store, "short-lived").await;
    let status_with = |key: String| {
        let client = bearer(&key);
        let url = system.gateway.url("/v1/users/1");
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    // Polls until `key` answers `want`, within `bound` (plus a request's time).
    let until = |key: String, want: u16, bound: Duration| {
        let status_with = &status_with;
        async move {
            let started = tokio::time::Instant::now();
            loop {
                let got = status_with(key.clone()).await;
                if got == want {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < bound,
                    "still {got} after {:?} (wanted {want})",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(key.clone(), 200, refresh * 3).await;

    let rolled = store.roll(&id, Duration::from_secs(3600)).await.unwrap();
    until(rolled.key.clone(), 200, refresh * 3).await;
    assert_eq!(
        status_with(key.clone()).await,
        200,
        "the old key has an hour's grace"
    );

    store.revoke(&id).await.unwrap();
    let took = until(key.clone(), 401, refresh * 3).await;
    assert!(took <= refresh * 3, "revocation took {took:?}");
    assert_eq!(
        status_with(rolled.key.clone()).await,
        200,
        "its successor lives on"
    );
    db.close().await;
}
