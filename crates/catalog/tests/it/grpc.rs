//! The gRPC face over a real HTTP/2 connection on the service's one port.

use std::time::Duration;

use bytes::{Buf, BufMut};
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::{
    BatchGetProductsRequest, CreateProductRequest, ListProductsRequest, ProductRequest,
};
use server::testing::Channel;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::helpers::{Backend, TestApp, TestData};

async fn channel(app: &TestApp) -> Channel {
    let channel = tonic::transport::Channel::from_shared(app.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    server::testing::authorized(channel, app.token.clone())
}

async fn client(app: &TestApp) -> ProductServiceClient<Channel> {
    ProductServiceClient::new(channel(app).await)
}

fn create(name: &str, price: f64, stock: i32) -> CreateProductRequest {
    CreateProductRequest {
        name: name.into(),
        price,
        stock,
    }
}

#[tokio::test]
async fn the_seeds_product_service_works_over_grpc() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut c = client(&app).await;
    let laptop = c
        .create_product(create("Laptop", 999.99, 50))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (laptop.id, laptop.name.as_str(), laptop.price, laptop.stock),
        (1, "Laptop", 999.99, 50)
    );
    c.create_product(create("Mouse", 29.99, 200)).await.unwrap();

    let got = c
        .get_product(ProductRequest { product_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, laptop);
    // REST and gRPC are two faces of one catalog.
    let rest: serde_json::Value = app.get("/v1/products/2").await.json().await.unwrap();
    assert_eq!(rest["name"], "Mouse");

    let batch = c
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec![2, 99, 1],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch.products.iter().map(|p| p.id).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(batch.missing_ids, [99]);
    app.stop().await;
}

#[tokio::test]
async fn list_products_streams_every_product_in_order() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut c = client(&app).await;
    for i in 0..450 {
        c.create_product(create(&format!("P{i}"), 1.0, i))
            .await
            .unwrap();
    }
    let mut stream = c
        .list_products(ListProductsRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        ids.push(p.id);
    }
    assert_eq!(
        ids,
        (1..=450).collect::<Vec<_>>(),
        "all of them, across stream batches"
    );

    let mut some = c
        .list_products(ListProductsRequest {
            page_size: 7,
            page_token: server::rest::encode_cursor(10),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(p) = some.message().await.unwrap() {
        ids.push(p.id);
    }
    assert_eq!(ids, (11..=17).collect::<Vec<_>>(), "the page after id 10");

    let bad = c
        .list_products(ListProductsRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // Malformed, or a base-36 string the server never issued.
    for token in ["NOT A TOKEN", "a", "2999"] {
        let bad = c
            .list_products(ListProductsRequest {
                page_size: 0,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{token:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn errors_come_from_the_table_with_rich_details() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut c = client(&app).await;

    let mut request = Request::new(ProductRequest { product_id: 404 });
    request
        .metadata_mut()
        .insert("x-correlation-id", "grpc-corr-1".parse().unwrap());
    let missing = c.get_product(request).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "Product 404 not found");
    let info = missing
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "NOT_FOUND");
    assert_eq!(
        info.metadata["type"],
        "https://brigade.dev/problems/not-found"
    );
    assert_eq!(info.metadata["correlation_id"], "grpc-corr-1");

    let invalid = c.create_product(create("", -1.0, 5)).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let bad_request = invalid
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("BadRequest");
    let fields: Vec<&str> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["name", "price"]);

    // Counted by kind, as REST's errors are (read back from the status's details; the
    // route is the service's, one per service whatever the method).
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for kind in ["not-found", "validation-failed"] {
        let labels = [
            ("protocol", "grpc"),
            ("route", "/ecommerce.v1.ProductService/{*method}"),
            ("kind", kind),
        ];
        let counted = telemetry::metrics::series_value(&metrics, "brigade_errors_total", &labels);
        assert!(counted >= 1.0, "{kind}: {metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn correlation_ids_are_returned_as_metadata() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut c = client(&app).await;
    c.create_product(create("Laptop", 999.99, 50))
        .await
        .unwrap();
    let mut request = Request::new(ProductRequest { product_id: 1 });
    request
        .metadata_mut()
        .insert("x-correlation-id", "grpc-corr-2".parse().unwrap());
    let response = c.get_product(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-correlation-id").unwrap(),
        "grpc-corr-2"
    );
    let generated = c
        .get_product(ProductRequest { product_id: 1 })
        .await
        .unwrap();
    assert!(generated.metadata().get("x-correlation-id").is_some());
    app.stop().await;
}

fn keyed(key: &str, body: CreateProductRequest) -> Request<CreateProductRequest> {
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

async fn create_is_idempotent_with_a_key(backend: Backend) {
    let data = TestData::new(backend).await;
    let app = data.spawn().await;
    let mut c = client(&app).await;
    let first = c
        .create_product(keyed("grpc-key", create("Desk", 150.0, 3)))
        .await
        .unwrap();
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let first = first.into_inner();
    let again = c
        .create_product(keyed("grpc-key", create("Desk", 150.0, 3)))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        first,
        again.into_inner(),
        "the retry replays the first answer"
    );
    let reused = c
        .create_product(keyed("grpc-key", create("Desk", 99.0, 3)))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    let info = reused
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(
        info.metadata["type"],
        "https://brigade.dev/problems/idempotency-key-reused"
    );
    let malformed = c
        .create_product(keyed("", create("Desk", 150.0, 3)))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    // One product exists, and after a restart the key still replays.
    let batch = c
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec![1, 2],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.missing_ids, [2]);
    app.stop().await;
    let app = data.spawn().await;
    let mut c = client(&app).await;
    let after_restart = c
        .create_product(keyed("grpc-key", create("Desk", 150.0, 3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_restart, first);
    app.stop().await;
}

#[tokio::test]
async fn create_is_idempotent_with_a_key_sqlite() {
    create_is_idempotent_with_a_key(Backend::Sqlite).await;
}

#[tokio::test]
async fn create_is_idempotent_with_a_key_postgres() {
    create_is_idempotent_with_a_key(Backend::Postgres).await;
}

/// `ReviewService` over gRPC: creates under a key (replayed), each refusal with its
/// details (a bad field, an unknown product, an author accounts does not know), and
/// `ListReviews` in pages.
async fn reviews_are_created_and_listed(backend: Backend) {
    use proto::v1::review_service_client::ReviewServiceClient;
    use proto::v1::{CreateReviewRequest, ListReviewsRequest};

    let data = TestData::new(backend).await;
    let app = data.spawn().await;
    let mut products = client(&app).await;
    products
        .create_product(create("Laptop", 999.99, 5))
        .await
        .unwrap();
    let mut reviews = ReviewServiceClient::new(channel(&app).await);
    let review = |product_id: i32, user_id: i64, rating: i32, key: Option<&str>| {
        let mut request = Request::new(CreateReviewRequest {
            product_id,
            user_id,
            rating,
            comment: format!("{rating} stars"),
        });
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("idempotency-key", key.parse().unwrap());
        }
        request
    };
    let first = reviews
        .create_review(review(1, 1, 5, Some("rv-1")))
        .await
        .unwrap();
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let first = first.into_inner();
    assert_eq!(
        (
            first.product_id,
            first.user_id,
            first.rating,
            first.comment.as_str()
        ),
        (1, 1, 5, "5 stars")
    );
    let again = reviews
        .create_review(review(1, 1, 5, Some("rv-1")))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner(), first);
    for (n, user) in [(2, 2), (3, 3), (4, 4)] {
        reviews
            .create_review(review(1, user, n, None))
            .await
            .unwrap();
    }

    let fields_of = |status: &Status| -> Vec<String> {
        status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default()
    };
    let bad = reviews
        .create_review(review(1, 1, 9, Some("rv-bad")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(fields_of(&bad), ["rating"]);
    let stranger = reviews
        .create_review(review(1, 999, 4, Some("rv-stranger")))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::InvalidArgument, "{stranger:?}");
    assert_eq!(fields_of(&stranger), ["user_id"]);
    let nowhere = reviews
        .create_review(review(77, 1, 4, Some("rv-nowhere")))
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), Code::NotFound, "{nowhere:?}");
    let info = nowhere.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata["type"],
        "https://brigade.dev/problems/not-found"
    );

    let page = |page_size: i32, page_token: String| ListReviewsRequest {
        product_id: 1,
        page_size,
        page_token,
    };
    let one = reviews
        .list_reviews(page(3, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.reviews.len(), 3);
    assert_eq!(one.reviews[0], first);
    assert!(!one.next_page_token.is_empty());
    let two = reviews
        .list_reviews(page(3, one.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    let ratings: Vec<i32> = two.reviews.iter().map(|r| r.rating).collect();
    assert_eq!(ratings, [4], "the last page");
    assert!(two.next_page_token.is_empty());
    let unknown = reviews
        .list_reviews(ListReviewsRequest {
            product_id: 77,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let forged = reviews
        .list_reviews(page(3, "not-a-token".to_owned()))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::InvalidArgument);
    assert_eq!(fields_of(&forged), ["page_token"]);
    app.stop().await;
}

#[tokio::test]
async fn reviews_are_created_and_listed_sqlite() {
    reviews_are_created_and_listed(Backend::Sqlite).await;
}

#[tokio::test]
async fn reviews_are_created_and_listed_postgres() {
    reviews_are_created_and_listed(Backend::Postgres).await;
}

/// gRPC health follows the database: SERVING while catalog's PostgreSQL database takes
/// connections, NOT_SERVING once it stops (connections cut, new ones refused), SERVING
/// again when it is back, and NOT_SERVING when the service shuts down — what a balancer
/// watching `Health.Watch` acts on.
#[tokio::test]
async fn health_goes_not_serving_when_the_database_is_lost_and_on_shutdown() {
    use sqlx::{Connection, Executor};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let data = TestData::new(Backend::Postgres).await;
    let app = data.spawn().await;
    let name = data.pg_name().unwrap().to_owned();
    let mut health = HealthClient::new(channel(&app).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The next status the watch reports that is `want` (repeats of the old one may come
    // first), within a deadline that covers the reporter's 2 s poll and a ping.
    let mut until = async |want: ServingStatus, what: &str| {
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match watch.message().await {
                    Ok(Some(update)) if update.status == want as i32 => return true,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return false,
                }
            }
        })
        .await;
        assert_eq!(seen, Ok(true), "health never reported {want:?}: {what}");
    };
    until(ServingStatus::Serving, "at start").await;

    let admin = storage::testing::postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    // The names are ours (`fresh_name`), never input.
    conn.execute(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#
    )))
    .await
    .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )))
    .await
    .unwrap();
    until(ServingStatus::NotServing, "with the database gone").await;

    conn.execute(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
    )))
    .await
    .unwrap();
    until(ServingStatus::Serving, "with the database back").await;
    let _ = conn.close().await;

    let stopping = tokio::spawn(app.stop());
    until(ServingStatus::NotServing, "on shutdown").await;
    drop(watch);
    stopping.await.unwrap();
}

#[tokio::test]
async fn health_follows_readiness_and_reflection_lists_the_services() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut health = HealthClient::new(channel(&app).await);
    // The reporter polls readiness; poll it until it says SERVING, within a deadline.
    let serving = async {
        loop {
            let r = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if r.ok() == Some(ServingStatus::Serving as i32) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("SERVING within 10 s");
    // Each service by name too (what `grpc-health-probe -service <name>` asks); an
    // unknown name is NOT_FOUND, as the health protocol says.
    for name in [
        "ecommerce.v1.ProductService",
        "ecommerce.v1.ReviewService",
        "ecommerce.v1.InventoryService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{name}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "ecommerce.v1.NoSuchService".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel(&app).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "ecommerce.v1.ProductService",
        "ecommerce.v1.ReviewService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    app.stop().await;
}

/// Sends raw bytes as a gRPC message, to speak to the server as a broken client would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_call(app: &TestApp, path: &'static str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel(app).await);
    grpc.ready().await.unwrap();
    let path = axum::http::uri::PathAndQuery::from_static(path);
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn broken_calls_get_proper_codes_and_never_break_the_server() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    // Field 1 declared as a length-delimited string of 100 bytes, with 2 present.
    let malformed = raw_call(
        &app,
        "/ecommerce.v1.ProductService/GetProduct",
        vec![0x0a, 100, 1, 2],
    )
    .await;
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");

    let oversized = raw_call(
        &app,
        "/ecommerce.v1.ProductService/CreateProduct",
        vec![0x0a; 100_000],
    )
    .await;
    assert!(
        matches!(oversized.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{oversized:?}"
    );

    let unknown_method = raw_call(
        &app,
        "/ecommerce.v1.ProductService/StealProduct",
        Vec::new(),
    )
    .await;
    assert_eq!(unknown_method.code(), Code::Unimplemented);
    let unknown_service = raw_call(&app, "/ecommerce.v1.NoSuchService/Anything", Vec::new()).await;
    assert_eq!(unknown_service.code(), Code::Unimplemented);

    // Still serving.
    let mut c = client(&app).await;
    let missing = c
        .get_product(ProductRequest { product_id: 1 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_deadline_ends_a_stream_with_deadline_exceeded() {
    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut c = client(&app).await;
    c.create_product(create("Laptop", 999.99, 50))
        .await
        .unwrap();
    let mut request = Request::new(ListProductsRequest {
        page_size: 0,
        page_token: String::new(),
    });
    request.set_timeout(Duration::from_nanos(1));
    let outcome = match c.list_products(request).await {
        Err(status) => status,
        Ok(stream) => {
            let mut stream = stream.into_inner();
            loop {
                match stream.message().await {
                    Err(status) => break status,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the stream ended normally despite an expired deadline"),
                }
            }
        }
    };
    // tonic's client enforces grpc-timeout too, so whichever side notices first ends the
    // call; what matters here is that the stream never completes normally. (That the
    // server itself enforces it is shown in the server crate's deadline test, with a
    // client that does not.)
    assert!(
        matches!(outcome.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{outcome:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn inventory_reserves_and_releases_over_grpc() {
    use proto::v1::inventory_service_client::InventoryServiceClient;
    use proto::v1::reservation::State;
    use proto::v1::{ReleaseStockRequest, ReservationLine, ReserveStockRequest};

    let data = TestData::new(Backend::Sqlite).await;
    let app = data.spawn().await;
    let mut products = client(&app).await;
    products
        .create_product(create("Laptop", 999.99, 50))
        .await
        .unwrap();
    let mut inventory = InventoryServiceClient::new(channel(&app).await);
    let reserve = |quantity| ReserveStockRequest {
        order_id: "ORD-12345".into(),
        lines: vec![ReservationLine {
            product_id: 1,
            quantity,
        }],
    };
    let held = inventory
        .reserve_stock(reserve(2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.state, State::Reserved as i32);
    inventory.reserve_stock(reserve(2)).await.unwrap();
    let stock = products
        .get_product(ProductRequest { product_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .stock;
    assert_eq!(stock, 48, "idempotent per order id");

    let too_many = inventory
        .reserve_stock(ReserveStockRequest {
            order_id: "ORD-2".into(),
            lines: vec![ReservationLine {
                product_id: 1,
                quantity: 49,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::FailedPrecondition);
    let info = too_many
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(
        info.metadata["type"],
        "https://brigade.dev/problems/insufficient-stock"
    );

    let released = inventory
        .release_stock(ReleaseStockRequest {
            order_id: "ORD-12345".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.state, State::Released as i32);
    let stock = products
        .get_product(ProductRequest { product_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .stock;
    assert_eq!(stock, 50);
    let invalid = inventory
        .release_stock(ReleaseStockRequest {
            order_id: "not valid!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    app.stop().await;
}
