//! Test support (feature `testing`): [`TcpFront`], a TCP relay a test puts in front of a
//! broker or a service, to take it away and bring it back without stopping it or
//! re-binding a released port (which a test running beside could take meanwhile).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Runs `work` to its end on a runtime of its own, on a thread of its own: for cleanup in
/// a `Drop`, where the test's runtime may be unwinding or shutting down.
pub fn on_own_runtime<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

/// A TCP front: clients connect to its port, which stays bound for the whole test, and
/// it relays to the target. Down, it closes every connection it relays and every new one
/// at once, as a stopped process's port would refuse them; up again, it relays to the
/// target it is given.
pub struct TcpFront {
    port: u16,
    state: Arc<Mutex<FrontState>>,
}

struct FrontState {
    /// Where connections go; `None` while down.
    target: Option<SocketAddr>,
    /// The connections being relayed, aborted when the front goes down.
    relays: Vec<tokio::task::AbortHandle>,
}

impl TcpFront {
    /// A front on a free port of 127.0.0.1, relaying to `target`.
    pub async fn to(target: SocketAddr) -> std::io::Result<TcpFront> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(FrontState {
            target: Some(target),
            relays: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(target) = state.target else {
                    continue; // dropped: closed at once
                };
                state.relays.retain(|r| !r.is_finished());
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.relays.push(relay.abort_handle());
            }
        });
        Ok(TcpFront { port, state })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn down(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.target = None;
        for relay in state.relays.drain(..) {
            relay.abort();
        }
    }

    /// Relays new connections to `target`.
    pub fn up(&self, target: SocketAddr) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .target = Some(target);
    }
}

/// A `nats-server` with JetStream of one test's own, on a port it chose, in a temporary
/// store: no other test or run sees its streams. Stopped (and its store removed) when
/// dropped.
pub struct NatsServer {
    url: String,
    addr: SocketAddr,
    _child: tokio::process::Child,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one; fails the test, saying what is missing, when it cannot.
    #[allow(clippy::panic, clippy::expect_used)]
    pub async fn start() -> NatsServer {
        use tokio::io::AsyncBufReadExt;
        let store = tempfile::tempdir().expect("a temporary directory");
        let mut child = tokio::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(store.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server must be on PATH (Debian's nats-server package): {e}")
            });
        let stderr = child.stderr.take().expect("nats-server's stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.split("Listening for client connections on ").nth(1) {
                    return at.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        };
        let addr = tokio::time::timeout(std::time::Duration::from_secs(20), find)
            .await
            .expect("nats-server listening within 20 s")
            .expect("nats-server said where it listens");
        // Keep reading its log, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        NatsServer {
            url: format!("nats://{addr}"),
            addr,
            _child: child,
            _store: store,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A RabbitMQ virtual host of one test's own on the broker at 127.0.0.1:5672 (made with
/// `rabbitmqctl`, with all rights for `guest`): no other test or run sees its queues.
/// Deleted, with everything in it, when dropped.
pub struct RabbitVhost {
    name: String,
}

/// `rabbitmqctl` with a deadline (coreutils' `timeout`): a broker that hangs fails the
/// test instead of hanging it.
fn rabbitmqctl(args: &[&str]) -> std::io::Result<std::process::Output> {
    std::process::Command::new("timeout")
        .args(["60", "rabbitmqctl"])
        .args(args)
        .output()
}

impl RabbitVhost {
    /// Makes one; fails the test, saying how to start RabbitMQ, when it cannot.
    #[allow(clippy::panic)]
    pub fn new() -> RabbitVhost {
        let name = format!("brigade-test-{}", uuid::Uuid::new_v4().simple());
        for args in [
            vec!["add_vhost", name.as_str()],
            vec![
                "set_permissions",
                "-p",
                name.as_str(),
                "guest",
                ".*",
                ".*",
                ".*",
            ],
        ] {
            match rabbitmqctl(&args) {
                Ok(out) if out.status.success() => {}
                other => panic!(
                    "rabbitmqctl {args:?} failed: RabbitMQ must run on 127.0.0.1:5672 (start \
                     it with `rabbitmq-server -detached`) with rabbitmqctl on PATH: {other:?}"
                ),
            }
        }
        RabbitVhost { name }
    }

    /// The AMQP URL of this virtual host, through `port` (5672, or a front's).
    pub fn url_via(&self, port: u16) -> String {
        format!("amqp://guest:guest@127.0.0.1:{port}/{}", self.name)
    }

    pub fn url(&self) -> String {
        self.url_via(5672)
    }
}

impl Default for RabbitVhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}
