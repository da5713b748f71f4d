//! Catalog's integration tests: one binary, a module per concern.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod balance;
mod contract;
mod events;
mod grpc;
mod helpers;
mod idempotency;
mod products;
mod reservations;
mod resilience;
mod store;
