//! `OrderService` over gRPC: the same use cases as REST, plus `WatchOrder`.

use proto::v1::order::Status;
use proto::v1::order_service_client::OrderServiceClient;
use proto::v1::{
    CancelOrderRequest, CreateOrderItem, CreateOrderRequest, GetOrderRequest, ListOrdersRequest,
    WatchOrderRequest,
};
use tokio_stream::StreamExt;

use crate::helpers::System;

async fn client(system: &System) -> OrderServiceClient<server::testing::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(system.orders.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    OrderServiceClient::new(server::testing::authorized(
        channel,
        system.orders.token.clone(),
    ))
}

fn create(
    user_id: i64,
    product_id: i64,
    quantity: i32,
    key: &str,
) -> tonic::Request<CreateOrderRequest> {
    let mut request = tonic::Request::new(CreateOrderRequest {
        user_id,
        items: vec![CreateOrderItem {
            product_id: i32::try_from(product_id).unwrap(),
            quantity,
        }],
    });
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_order_pushes_each_transition_until_the_order_is_final() {
    let system = System::start().await;
    let item = system.product(3.00, 5).await;
    let mut orders = client(&system).await;
    let placed = orders
        .create_order(create(1, item, 2, "g1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.status, Status::Pending as i32);
    assert_eq!(placed.total_minor, 600);
    // The same key: the same order.
    let again = orders
        .create_order(create(1, item, 2, "g1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, placed.id);

    let mut watch = orders
        .watch_order(WatchOrderRequest {
            order_id: placed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let Ok(next) = tokio::time::timeout(std::time::Duration::from_secs(20), watch.next()).await
        else {
            panic!("no update within 20 s after {seen:?}");
        };
        let Some(update) = next else { break };
        let order = update.unwrap();
        seen.push(order.status);
        if order.status == Status::Confirmed as i32 {
            // Cancel it: the watcher sees that too, and the stream ends there.
            orders
                .cancel_order(CancelOrderRequest {
                    order_id: placed.id.clone(),
                })
                .await
                .unwrap();
        }
    }
    // Whether PENDING was seen depends on how fast the worker was; the rest does not.
    assert_eq!(
        seen.iter()
            .filter(|s| **s != Status::Pending as i32)
            .copied()
            .collect::<Vec<_>>(),
        [Status::Confirmed as i32, Status::Cancelled as i32]
    );
    let got = orders
        .get_order(GetOrderRequest {
            order_id: placed.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.history.len(), 3);
    system.stock_becomes(item, 5).await;

    let listed = orders
        .list_orders(ListOrdersRequest {
            user_id: 1,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
    assert!(listed.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refusals_come_from_the_error_table() {
    let system = System::start().await;
    let item = system.product(3.00, 5).await;
    let mut orders = client(&system).await;
    let err = orders
        .create_order(create(77, item, 1, "g2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = orders
        .get_order(GetOrderRequest {
            order_id: "ord_missing".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = orders
        .watch_order(WatchOrderRequest {
            order_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
