//! Services this process serves, by the address each listens on, so that a caller in the
//! same process — the gateway forwarding to an owner that `brigade up` runs beside it —
//! can hand a request straight to the owner's router: the whole of the owner's stack
//! (correlation, metrics, the identity token's check, shedding, the deadline) and its
//! faces, as over the socket, without the second HTTP exchange (two serializations and
//! parses, and the loopback's syscalls, which cost more than the request itself; see
//! BENCHMARKS.md "The edge"). A service is registered while its port serves and
//! forgotten when its shutdown begins; a caller that finds nothing at an address uses
//! the socket as before. A caller holds its [`Local`]'s token while the owner answers, and
//! the owner's shutdown waits for those (within its grace period) as it waits for its
//! connections, before it closes its database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{OnceLock, PoisonError, RwLock};

use axum::Router;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

#[derive(Clone)]
struct Entry {
    /// Which registration this is (an address can be served again after a stop).
    id: u64,
    local: Local,
}

/// A service served in this process: its router, and the requests handed to it.
#[derive(Clone)]
pub struct Local {
    router: Router,
    in_flight: TaskTracker,
}

impl Local {
    /// Its router, and a token to hold until it has answered.
    pub fn call(&self) -> (Router, TaskTrackerToken) {
        (self.router.clone(), self.in_flight.token())
    }
}

fn table() -> &'static RwLock<HashMap<SocketAddr, Entry>> {
    static TABLE: OnceLock<RwLock<HashMap<SocketAddr, Entry>>> = OnceLock::new();
    TABLE.get_or_init(RwLock::default)
}

/// A registration, undone when dropped.
#[derive(Debug)]
pub(crate) struct Registered {
    addr: SocketAddr,
    id: u64,
}

/// Serves `router` in process at `addr` until the returned guard is dropped; the
/// requests handed to it are tracked by `in_flight`.
pub(crate) fn register(addr: SocketAddr, router: Router, in_flight: TaskTracker) -> Registered {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let local = Local { router, in_flight };
    table()
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(addr, Entry { id, local });
    Registered { addr, id }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut table = table().write().unwrap_or_else(PoisonError::into_inner);
        if table.get(&self.addr).is_some_and(|e| e.id == self.id) {
            table.remove(&self.addr);
        }
    }
}

/// The service this process serves at `addr`, if it serves one there. Loopback and
/// unspecified addresses match each other (a service bound to `0.0.0.0` is the one
/// `127.0.0.1` reaches).
pub fn find(addr: SocketAddr) -> Option<Local> {
    let table = table().read().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = table.get(&addr) {
        return Some(entry.local.clone());
    }
    if !addr.ip().is_loopback() {
        return None;
    }
    let any = match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], addr.port())),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, addr.port())),
    };
    table.get(&any).map(|entry| entry.local.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_service_is_found_while_registered_and_a_later_one_at_its_address_is_not_undone() {
        let first = register(addr(1), Router::new(), TaskTracker::new());
        assert!(find(addr(1)).is_some());
        assert!(find(addr(2)).is_none());
        // The same address served again (a restart) before the first guard drops.
        let second = register(addr(1), Router::new(), TaskTracker::new());
        drop(first);
        assert!(find(addr(1)).is_some(), "the second registration stands");
        drop(second);
        assert!(find(addr(1)).is_none());
    }

    #[test]
    fn loopback_reaches_a_service_bound_to_every_address() {
        let _any = register(
            SocketAddr::from(([0, 0, 0, 0], 3)),
            Router::new(),
            TaskTracker::new(),
        );
        assert!(find(addr(3)).is_some());
        assert!(find(SocketAddr::from(([10, 0, 0, 1], 3))).is_none());
    }
}
