//! The embedded backend (being built).
