//! Accounts' gRPC face: `UserService`, translating between protobuf and the domain.

use idempotency::Idempotency;
use problem::{FieldError, Problem};
use proto::v1::user_service_server::{UserService, UserServiceServer};
use proto::v1::{
    BatchGetUsersRequest, BatchGetUsersResponse, CreateUserRequest, GetUserRequest,
    User as UserMessage,
};
use server::grpc::GrpcRoutes;
use tonic::{Request, Response, Status};

use crate::domain::{NewUser, User, UserId};
use crate::store::{self, AccountsStore};

const MAX_MESSAGE: usize = 64 * 1024;
const MAX_BATCH: usize = 200;

#[derive(Clone)]
pub struct AccountsGrpc {
    store: AccountsStore,
    idempotency: Idempotency,
}

/// The accounts' gRPC services, ready for `server::grpc::face`.
pub fn routes(store: AccountsStore, idempotency: Idempotency) -> GrpcRoutes {
    GrpcRoutes::new().add_service(
        UserServiceServer::new(AccountsGrpc { store, idempotency })
            .max_decoding_message_size(MAX_MESSAGE),
    )
}

fn user_message(u: User) -> UserMessage {
    UserMessage {
        id: u.id.0,
        name: u.name.as_str().to_owned(),
        email: u.email.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl UserService for AccountsGrpc {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<UserMessage>, Status> {
        let id = request.into_inner().user_id;
        let user = self
            .store
            .user(UserId(id))
            .await
            .map_err(Problem::from)?
            .ok_or_else(|| {
                Problem::not_found(format!("User {id} not found")).with_extension("user_id", id)
            })?;
        Ok(Response::new(user_message(user)))
    }

    async fn batch_get_users(
        &self,
        request: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let ids = request.into_inner().user_ids;
        if ids.len() > MAX_BATCH {
            return Err(Problem::validation(vec![FieldError::new(
                "user_ids",
                format!("at most {MAX_BATCH} ids per call"),
            )])
            .into());
        }
        let wanted: Vec<UserId> = ids.iter().copied().map(UserId).collect();
        let found = self
            .store
            .users_by_id(&wanted)
            .await
            .map_err(Problem::from)?;
        let mut users = Vec::with_capacity(ids.len());
        let mut missing_ids = Vec::new();
        for id in ids {
            match found.iter().find(|u| u.id.0 == id) {
                Some(u) => users.push(user_message(u.clone())),
                None => missing_ids.push(id),
            }
        }
        Ok(Response::new(BatchGetUsersResponse { users, missing_ids }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<UserMessage>, Status> {
        let new = NewUser::parse(&request.get_ref().name, &request.get_ref().email)
            .map_err(Problem::validation)?;
        let response = self
            .idempotency
            .execute_grpc(
                "/ecommerce.v1.UserService/CreateUser",
                &request,
                |mut tx| async move {
                    let result = store::insert_user(&mut tx, &new)
                        .await
                        .map(user_message)
                        .map_err(Problem::from);
                    (tx, result)
                },
            )
            .await?;
        Ok(response)
    }
}
