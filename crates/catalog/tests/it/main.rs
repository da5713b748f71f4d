//! Catalog's integration tests: one binary, a module per concern.

mod store;
