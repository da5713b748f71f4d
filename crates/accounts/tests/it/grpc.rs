//! `UserService` over gRPC: the same use cases as REST, in protobuf.

use proto::v1::user_service_client::UserServiceClient;
use proto::v1::{BatchGetUsersRequest, CreateUserRequest, GetUserRequest};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::rest::spawn_app;

fn create(name: &str, email: &str, key: Option<&str>) -> Request<CreateUserRequest> {
    let mut request = Request::new(CreateUserRequest {
        name: name.to_owned(),
        email: email.to_owned(),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn users_are_created_once_per_key_and_looked_up_in_batches() {
    let app = spawn_app().await;
    let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = UserServiceClient::new(server::testing::authorized(channel, app.token.clone()));

    let jane = c
        .create_user(create("Jane", "jane@example.com", Some("g1")))
        .await
        .unwrap();
    assert!(jane.metadata().get("idempotent-replayed").is_none());
    let jane = jane.into_inner();
    let again = c
        .create_user(create("Jane", "jane@example.com", Some("g1")))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        again.into_inner(),
        jane,
        "the retry replays the first answer"
    );

    // Without a key the write simply runs; a taken email is the table's conflict.
    let max = c
        .create_user(create("Max", "max@example.com", None))
        .await
        .unwrap()
        .into_inner();
    let taken = c
        .create_user(create("Other", "jane@EXAMPLE.com", Some("g2")))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::Aborted, "{taken:?}");
    let info = taken.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata["type"],
        "https://brigade.dev/problems/conflict"
    );
    let invalid = c
        .create_user(create("", "nope", Some("g3")))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = invalid
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["name", "email"]);

    let got = c
        .get_user(GetUserRequest { user_id: jane.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, jane);
    let missing = c
        .get_user(GetUserRequest { user_id: 999 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A batch answers in the order asked, repeats included, and names what is missing.
    let batch = c
        .batch_get_users(BatchGetUsersRequest {
            user_ids: vec![max.id, 999, jane.id, max.id],
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = batch.users.iter().map(|u| u.id).collect();
    assert_eq!(ids, [max.id, jane.id, max.id]);
    assert_eq!(batch.missing_ids, [999]);
    let too_many = c
        .batch_get_users(BatchGetUsersRequest {
            user_ids: (1..=201).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    app.stop().await;
}
