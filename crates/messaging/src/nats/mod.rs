//! The nats backend (being built).
