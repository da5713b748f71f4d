//! Orders' integration tests: the real services on free ports, the embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accept;
mod contract;
mod e2e;
mod grpc;
mod helpers;
mod messages;
mod pipeline;
