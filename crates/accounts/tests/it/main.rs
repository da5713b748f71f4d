//! Accounts' integration tests: one binary, a module per concern.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc;
mod rest;
mod store;
