//! The rabbitmq backend (being built).
