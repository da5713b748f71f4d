//! Billing's integration tests: one binary, a module per concern. The pipeline tests run
//! the real billing service beside the real payments sandbox, on the embedded broker,
//! and talk to both over their sockets and the stream.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod app;
mod helpers;
mod pipeline;
mod rest;
mod store;
