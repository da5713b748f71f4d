//! The idempotency crate's integration tests: one binary, a module per concern. Tests that
//! touch the database run on both backends (`storage::backend_tests!`).
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod extract;
mod helpers;
mod http;
mod key;
mod local;
mod one_tx;
mod store;
