//! Accounts' gRPC face: `UserService`, translating between protobuf and the domain and
//! calling the use cases (`app::Accounts`).

use idempotency::GrpcWrite;
use problem::Problem;
use proto::v1::user_service_server::{UserService, UserServiceServer};
use proto::v1::{
    BatchGetUsersRequest, BatchGetUsersResponse, CreateUserRequest, GetUserRequest,
    User as UserMessage,
};
use server::grpc::GrpcRoutes;
use tonic::{Request, Response, Status};

use crate::app::Accounts;
use crate::domain::{NewUser, User, UserId};

const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Clone)]
pub struct AccountsGrpc {
    accounts: Accounts,
}

/// The accounts' gRPC services, ready for `server::grpc::face`.
pub fn routes(accounts: Accounts) -> GrpcRoutes {
    GrpcRoutes::new().add_service(
        UserServiceServer::new(AccountsGrpc { accounts }).max_decoding_message_size(MAX_MESSAGE),
    )
}

fn user_message(u: &User) -> UserMessage {
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
        let id = UserId(request.into_inner().user_id);
        let user = self.accounts.user(id).await.map_err(Problem::from)?;
        Ok(Response::new(user_message(&user)))
    }

    async fn batch_get_users(
        &self,
        request: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let ids: Vec<UserId> = request
            .into_inner()
            .user_ids
            .into_iter()
            .map(UserId)
            .collect();
        let looked_up = self
            .accounts
            .users_by_id(&ids)
            .await
            .map_err(Problem::from)?;
        Ok(Response::new(BatchGetUsersResponse {
            users: looked_up.found.iter().map(user_message).collect(),
            missing_ids: looked_up.missing.into_iter().map(|id| id.0).collect(),
        }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<UserMessage>, Status> {
        let new = NewUser::parse(&request.get_ref().name, &request.get_ref().email)
            .map_err(Problem::validation)?;
        let write = GrpcWrite::new("/ecommerce.v1.UserService/CreateUser", &request);
        self.accounts
            .create_user(&write, new, |user| Ok(user_message(&user)))
            .await
    }
}
