//! Orders through the gateway's GraphQL: placed with an idempotency key, followed to
//! PAID, listed a page at a time from the user, cancelled.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::System;

const ORDER_FIELDS: &str = "id status total currency items { quantity unitPrice product { name } } history { status at reason } user { name }";

async fn place(system: &System, key: &str, product: i64, quantity: i64) -> Value {
    let (status, answer) = system
        .graphql_with(
            &format!(
                "mutation($input: PlaceOrderInput!, $key: String!) {{ placeOrder(input: $input, idempotencyKey: $key) {{ {ORDER_FIELDS} }} }}"
            ),
            json!({
                "input": {"userId": "1", "items": [{"productId": product.to_string(), "quantity": quantity}]},
                "key": key,
            }),
        )
        .await;
    assert_eq!(status, 200, "{answer:#}");
    answer
}

/// Polls `order(id)` until its status is `status` (20 s at most).
async fn order_becomes(system: &System, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, answer) = system
            .graphql_with(
                &format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"),
                json!({"id": id}),
            )
            .await;
        let order = &answer["data"]["order"];
        if order["status"] == status {
            return order.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {id} never became {status}: {answer:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_through_graphql_is_paid_listed_and_cancelled() {
    let system = System::start_with_orders(2, 0).await;
    let placed = place(&system, "gql-order-1", 2, 3).await;
    assert!(placed.get("errors").is_none(), "{placed:#}");
    let order = &placed["data"]["placeOrder"];
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["total"], 89.97, "three Mice at 29.99");
    assert_eq!(
        order["currency"], "usd",
        "Stripe-style lower case, as orders has it"
    );
    assert_eq!(order["items"][0]["product"]["name"], "Mouse");
    assert_eq!(order["items"][0]["unitPrice"], 29.99);
    assert_eq!(order["user"]["name"], "Jane Doe");
    let id = order["id"].as_str().unwrap().to_owned();
    // The same key again: the same order, nothing more placed.
    let again = place(&system, "gql-order-1", 2, 3).await;
    assert_eq!(again["data"]["placeOrder"]["id"], id.as_str());

    let paid = order_becomes(&system, &id, "PAID").await;
    let history: Vec<&str> = paid["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["PENDING", "CONFIRMED", "PAID"]);
    // RFC 3339 in UTC to the millisecond, trailing zeros of the fraction dropped as
    // every face writes it (`…:42.95Z`, `…:42Z`).
    let at = paid["history"][0]["at"].as_str().unwrap();
    let (seconds, fraction) = at
        .strip_suffix('Z')
        .and_then(|t| t.split_once('.').or(Some((t, ""))))
        .unwrap();
    assert_eq!(seconds.len(), 19, "{at}");
    assert_eq!(&seconds[10..11], "T", "{at}");
    assert!(
        fraction.len() <= 3 && fraction.bytes().all(|b| b.is_ascii_digit()),
        "{at}"
    );

    // Listed from the user, a page at a time.
    let second = place(&system, "gql-order-2", 1, 1).await;
    let second_id = second["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = |after: Value| {
        let system = &system;
        async move {
            let (_, answer) = system
                .graphql_with(
                    "query($after: String) { user(id: \"1\") { orders(first: 1, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } } }",
                    json!({"after": after}),
                )
                .await;
            assert!(answer.get("errors").is_none(), "{answer:#}");
            answer["data"]["user"]["orders"].clone()
        }
    };
    let first_page = page(Value::Null).await;
    assert_eq!(first_page["nodes"], json!([{"id": id}]));
    assert_eq!(first_page["pageInfo"]["hasNextPage"], true);
    let next_page = page(first_page["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(next_page["nodes"], json!([{"id": second_id}]));

    // Cancelled: refunded, and CANCELLED on the order.
    let (_, cancelled) = system
        .graphql_with(
            "mutation($id: ID!) { cancelOrder(id: $id) { status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["status"], "CANCELLED",
        "{cancelled:#}"
    );

    // A product that does not exist: refused now, with the error table's details.
    let refused = place(&system, "gql-order-3", 999, 1).await;
    let error = &refused["errors"][0]["extensions"];
    assert_eq!(refused["data"], Value::Null, "{refused:#}");
    assert!(
        (400..500).contains(&error["status"].as_i64().unwrap()),
        "{refused:#}"
    );
    assert!(
        error["type"].as_str().unwrap().starts_with("https://"),
        "{refused:#}"
    );
    // The same key with another order: the key's reuse is refused.
    let reused = place(&system, "gql-order-1", 1, 1).await;
    assert_eq!(
        reused["errors"][0]["extensions"]["status"], 422,
        "{reused:#}"
    );
}

/// A browser's view: an order placed through `placeOrder`, followed over WebSocket
/// (`graphql-transport-ws`) from PENDING to PAID — every transition, in order, each push
/// the order as it then was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_sees_every_transition_of_an_order_in_order() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let system = System::start_with_orders(2, 0).await;
    // A slow provider, so the order is seen moving rather than already paid.
    let sandbox = &system.pipeline[0];
    let r = sandbox
        .client
        .put(sandbox.url("/v1/sandbox/behaviour"))
        .json(&json!({"latency_ms": 400}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let placed = place(&system, "gql-live-1", 1, 1).await;
    let id = placed["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let url = system
        .gateway
        .url("/graphql/ws")
        .replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |v: Value| Message::Text(v.to_string().into());
    // The key in the init payload, as a browser (which cannot set headers) sends it.
    ws.send(send(json!({
        "type": "connection_init",
        "payload": {"Authorization": format!("Bearer {}", system.key)},
    })))
    .await
    .unwrap();
    let next_json = |m: Message| -> Value { serde_json::from_str(m.to_text().unwrap()).unwrap() };
    let ack = next_json(ws.next().await.unwrap().unwrap());
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws.send(send(json!({
        "id": "1",
        "type": "subscribe",
        "payload": {
            "query": "subscription($id: ID!) { orderUpdated(id: $id) { status history { status at } } }",
            "variables": {"id": id},
        },
    })))
    .await
    .unwrap();

    let mut pushes: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pushes.last().is_none_or(|p| p["status"] != "PAID") {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("PAID within 30 s")
            .unwrap()
            .unwrap();
        if !message.is_text() {
            continue;
        }
        let message = next_json(message);
        assert_eq!(message["type"], "next", "{message:#}");
        assert!(message["payload"].get("errors").is_none(), "{message:#}");
        pushes.push(message["payload"]["data"]["orderUpdated"].clone());
    }
    let statuses = |order: &Value| -> Vec<String> {
        order["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"].as_str().unwrap().to_owned())
            .collect()
    };
    let last = statuses(pushes.last().unwrap());
    assert_eq!(last, ["PENDING", "CONFIRMED", "PAID"]);
    assert!(pushes.len() >= 2, "seen moving, not only paid: {pushes:#?}");
    for (i, push) in pushes.iter().enumerate() {
        let seen = statuses(push);
        assert_eq!(seen, last[..seen.len()], "push {i} is a step along the way");
        assert_eq!(push["status"], seen.last().unwrap().as_str());
        if i > 0 {
            assert!(
                seen.len() > statuses(&pushes[i - 1]).len(),
                "each push is a move"
            );
        }
    }
    // Writes do not go over the WebSocket (its calls act for the upgrade request's
    // client): a mutation there is refused, and places nothing.
    ws.send(send(json!({
        "id": "2",
        "type": "subscribe",
        "payload": {
            "query": "mutation { cancelOrder(id: \"ord_none\") { id } }",
        },
    })))
    .await
    .unwrap();
    let refused = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .unwrap()
            .unwrap();
        if message.is_text() {
            let message = next_json(message);
            if message["id"] == "2" {
                break message;
            }
        }
    };
    let error = refused["payload"]["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("POST /graphql"), "{refused:#}");
    ws.close(None).await.ok();
}
