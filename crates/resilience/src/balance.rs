//! Client-side load balancing across replicas of one service: HTTP/2 pins every call to
//! one long-lived connection, so a connection-level balancer would send everything to one
//! backend. Each call instead picks a replica by **power of two choices** on in-flight
//! calls (two at random, the less busy wins), and each replica has its own circuit
//! breaker: a failing replica is ejected while its breaker is open and re-admitted through
//! its half-open probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::breaker::{BreakerConfig, CircuitBreaker, Permit};

/// One replica: its client (a connection or channel to it), its load and its breaker.
#[derive(Debug)]
pub struct Replica<C> {
    pub name: String,
    pub client: C,
    in_flight: AtomicUsize,
    breaker: CircuitBreaker,
}

impl<C> Replica<C> {
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The replicas of one downstream.
#[derive(Debug, Clone)]
pub struct Replicas<C> {
    replicas: Arc<Vec<Replica<C>>>,
}

/// A replica chosen for one attempt: its index and client, its breaker permit, and a
/// guard that counts the call as in flight until dropped.
pub struct Picked<'a, C> {
    pub index: usize,
    pub client: &'a C,
    pub permit: Permit<'a>,
    pub in_flight: InFlight<'a>,
}

/// Counts one call in flight on a replica while alive.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<C> Replicas<C> {
    /// `replicas` are (name, client) pairs; each gets a breaker with `breaker`'s config.
    pub fn new(replicas: Vec<(String, C)>, breaker: &BreakerConfig) -> Self {
        let replicas = replicas
            .into_iter()
            .map(|(name, client)| Replica {
                breaker: CircuitBreaker::new(name.clone(), breaker.clone()),
                in_flight: AtomicUsize::new(0),
                client,
                name,
            })
            .collect();
        Self {
            replicas: Arc::new(replicas),
        }
    }

    pub fn replicas(&self) -> &[Replica<C>] {
        &self.replicas
    }

    /// Picks a replica for one attempt: the less busy of two drawn at random whose breaker
    /// admits the call; if neither admits it, any replica that does. `None` when every
    /// replica's breaker refuses (all ejected).
    pub fn pick(&self, rng: &mut fastrand::Rng) -> Option<Picked<'_, C>> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let a = rng.usize(..n);
        let b = if n > 1 {
            (a + 1 + rng.usize(..n - 1)) % n
        } else {
            a
        };
        let (first, second) = if self.replicas[b].in_flight() < self.replicas[a].in_flight() {
            (b, a)
        } else {
            (a, b)
        };
        let order = [first, second]
            .into_iter()
            .chain((0..n).filter(|i| *i != first && *i != second));
        for index in order {
            let replica = &self.replicas[index];
            if let Ok(permit) = replica.breaker.try_acquire() {
                replica.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(Picked {
                    index,
                    client: &replica.client,
                    permit,
                    in_flight: InFlight(&replica.in_flight),
                });
            }
        }
        None
    }
}
