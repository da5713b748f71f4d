//! Resilience for every outbound call Brigade makes (service-to-service gRPC, REST
//! clients, broker publishes): a deadline that never outlives the caller's, retries with
//! exponential backoff and full jitter inside a retry budget, a circuit breaker per
//! downstream, a bulkhead, and balancing across replicas. Each piece is usable alone
//! (plain async API) and assembled per client in one place.
#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod downstream;
pub mod layer;
pub mod retry;
pub mod site;

pub use site::CallSite;
