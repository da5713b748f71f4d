//! The real `brigade` binary, started as a user would start it.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod brokers;
mod cli;
mod dashboard;
mod helpers;
mod sigkill;
mod slo;
mod traces;
mod up;
