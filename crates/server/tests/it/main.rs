//! The host every service runs in, over real sockets: an `Application` on port 0 with a
//! fresh SQLite database, driven by an HTTP client.
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod correlation;
mod cors;
mod deadline;
mod hardening;
mod helpers;
mod host;
mod identity;
mod shutdown;
