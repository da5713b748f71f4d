//! The gateway against the real catalog and accounts services.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod caching;
mod edge;
mod federation;
mod graphql;
mod helpers;
mod limits;
mod orders;
mod profiles;
