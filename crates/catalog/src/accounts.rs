//! What catalog asks of the accounts service: whether a user exists (a review's author
//! must; `app::Catalog::create_review` asks). A real service-to-service call — gRPC `UserService.GetUser` — made through the
//! `resilience` layer: a deadline under the caller's, budgeted retries, a breaker.
//! Catalog never reads accounts' database.

use problem::Problem;
use proto::v1::GetUserRequest;
use proto::v1::user_service_client::UserServiceClient;
use resilience::downstream::{Downstream, Policy};
use server::grpc::client::Channel;
use settings::{ServiceName, Settings};

use crate::domain::UserId;

#[derive(Debug, Clone)]
pub struct Accounts {
    client: UserServiceClient<Channel>,
    downstream: Downstream,
}

impl Accounts {
    /// A client for the accounts service at its configured address. Connects lazily, so
    /// catalog starts (and serves everything else) while accounts is down.
    pub fn new(settings: &Settings) -> Result<Self, server::grpc::client::ClientError> {
        let channel = server::grpc::client::channel(settings, ServiceName::Accounts)?;
        Ok(Self {
            client: UserServiceClient::new(channel),
            downstream: Downstream::of_service(
                crate::SERVICE.as_str(),
                "accounts",
                Policy::from_outbound(&settings.outbound),
            ),
        })
    }

    pub fn downstream(&self) -> &Downstream {
        &self.downstream
    }

    /// Whether `user` exists. A lookup is a read, so it may be retried.
    pub async fn user_exists(&self, user: UserId) -> Result<bool, Problem> {
        self.downstream
            .call(true, |attempt| {
                let mut client = self.client.clone();
                async move {
                    let request = server::grpc::client::request(
                        GetUserRequest { user_id: user.0 },
                        attempt.budget,
                    );
                    match client.get_user(request).await {
                        Ok(_) => Ok(true),
                        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
                        Err(status) => Err(Problem::from_downstream("accounts", &status)),
                    }
                }
            })
            .await
    }
}
