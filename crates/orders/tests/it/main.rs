//! Orders' integration tests: the real services on free ports, the embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accept;
mod contract;
mod grpc;
mod helpers;
mod messages;
