//! How every Brigade service is hosted: [`Application::build`] binds the service's one
//! port (REST now; gRPC and gRPC-Web join it on the same port), wraps the service's wire
//! faces in the shared middleware stack, adds `/healthz`, `/readyz` and `/metrics`, and
//! [`Application::run_until_stopped`] serves until a shutdown future fires, then drains.
#![forbid(unsafe_code)]

pub mod extract;
pub mod graphql;
pub mod grpc;
mod guard;
mod health;
pub mod identity;
pub mod local;
pub mod rest;
mod serve;
mod service;
mod stack;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use settings::{ServiceName, Settings};
use storage::{Database, StorageError};
use tokio::net::TcpListener;

pub use guard::REQUEST_TIMEOUT_HEADER;
pub use service::{Parts, Service};
pub use stack::router;

/// Why a service could not start. Each message is one line naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{service} cannot listen on {addr}: {reason}")]
    Bind {
        service: ServiceName,
        addr: SocketAddr,
        reason: String,
    },
    #[error("{service}: {source}")]
    Database {
        service: ServiceName,
        #[source]
        source: StorageError,
    },
    /// The messaging backend could not be reached or opened.
    #[error("{service} cannot reach its messaging backend: {reason}")]
    Messaging {
        service: ServiceName,
        reason: String,
    },
}

impl StartError {
    pub fn database(service: ServiceName, source: StorageError) -> Self {
        StartError::Database { service, source }
    }
}

/// A service bound to its port and ready to serve.
#[derive(Debug)]
pub struct Application {
    service: ServiceName,
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    db: Database,
    /// How long in-flight requests may run on after shutdown begins.
    grace: Duration,
    /// Cancelled when shutdown begins; background tasks watch it.
    stop: tokio_util::sync::CancellationToken,
    /// Work the service does besides serving (purging expired keys, relaying outboxes).
    background: tokio::task::JoinSet<()>,
    /// The gRPC health service's reporter, and the service names it reports besides ""
    /// (each gRPC service this port serves, so `grpc-health-probe -service <name>` works).
    health: tonic_health::server::HealthReporter,
    health_names: Vec<&'static str>,
    /// Whether requests carry their peer's address (`ConnectInfo<SocketAddr>`).
    client_addresses: bool,
    /// What checks callers' identity tokens, on a service that requires them.
    verifier: Option<std::sync::Arc<identity::Signer>>,
    /// Header limits and the slow-client timeout.
    http: settings::HttpSettings,
    /// Set when the port terminates TLS.
    tls: Option<Tls>,
}

impl Application {
    /// Binds the service's configured address (port 0 picks a free one) and assembles
    /// its router: `faces` (the service's REST/gRPC routes) plus health and metrics, all
    /// behind the shared middleware stack.
    pub async fn build(
        service: ServiceName,
        settings: &Settings,
        db: Database,
        faces: Router,
    ) -> Result<Application, StartError> {
        let addr = settings.services.get(service).addr();
        let (health, health_service) = tonic_health::server::health_reporter();
        let grpc_health = match grpc::reflection() {
            Ok(reflection) => reflection.add_service(health_service),
            Err(err) => {
                return Err(StartError::Bind {
                    service,
                    addr,
                    reason: format!("gRPC reflection could not load the descriptors: {err}"),
                });
            }
        };
        // The gateway is the door (it checks API keys); the payments sandbox stands for
        // an outside provider. Every other service takes calls only with a token.
        // (With `require_internal_token` off, a token that is sent is still checked and
        // names the client: idempotency keys stay per API key behind the gateway.)
        let verifier = if !matches!(service, ServiceName::Gateway | ServiceName::PaymentsSandbox) {
            match identity::Signer::for_settings(settings) {
                Ok(signer) => Some(signer),
                Err(err) => {
                    return Err(StartError::Bind {
                        service,
                        addr,
                        reason: format!(
                            "the internal identity key could not be read or made: {err}"
                        ),
                    });
                }
            }
        } else {
            None
        };
        let tls = match &settings.services.get(service).tls {
            Some(tls) => Some(Tls(serve::acceptor(tls).map_err(|reason| {
                StartError::Bind {
                    service,
                    addr,
                    reason,
                }
            })?)),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error(service, addr, &e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| bind_error(service, addr, &e))?;
        // Install the recorder before the first request so every series is kept.
        let _ = telemetry::metrics::handle();
        telemetry::slo::configure(service.as_str(), settings.slo.objectives(service));
        let app = Application {
            service,
            listener,
            local_addr,
            router: stack::router(
                service,
                db.clone(),
                faces,
                grpc_health,
                settings.max_in_flight,
                &settings.services.get(service).cors_origins_of(service),
                verifier.clone().map(|signer| identity::Check {
                    signer,
                    required: settings.identity.require_internal_token,
                }),
            ),
            db: db.clone(),
            grace: settings.shutdown_grace,
            stop: tokio_util::sync::CancellationToken::new(),
            background: tokio::task::JoinSet::new(),
            client_addresses: false,
            health,
            health_names: Vec::new(),
            verifier,
            http: settings.http.clone(),
            tls,
        };
        Ok(app)
    }

    /// Reports `names` (the gRPC services of this port's faces, `GrpcRoutes::names`) in
    /// the health service too, with the same status as the whole server.
    pub fn report_health_for(&mut self, names: &[&'static str]) {
        self.health_names.extend_from_slice(names);
    }

    /// Runs `task` beside the server until shutdown begins (its token is cancelled then);
    /// shutdown waits for it, within the grace period.
    pub fn spawn_background<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // As this service's work: a message it consumes is traced as its own.
        self.background.spawn(telemetry::context::serving(
            self.service.as_str(),
            task(self.stop.clone()),
        ));
    }

    /// Gives every request its peer's address as `axum::extract::ConnectInfo<SocketAddr>`
    /// (for a service that tells clients apart by address; the others skip the cost of
    /// an extension on every request).
    pub fn with_client_addresses(mut self) -> Self {
        self.client_addresses = true;
        self
    }

    /// The signer whose tokens this service checks (tests and tools calling a service
    /// directly make theirs with it); `None` for the gateway and the payments sandbox.
    pub fn identity(&self) -> Option<&std::sync::Arc<identity::Signer>> {
        self.verifier.as_ref()
    }

    pub fn service(&self) -> ServiceName {
        self.service
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Serves until `shutdown` completes, then stops accepting, gives in-flight requests
    /// up to the grace period, and closes the database pool.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (db, health, names) = (
            self.db.clone(),
            self.health.clone(),
            self.health_names.clone(),
        );
        // Registered before the port serves: a health check never finds a service unknown.
        health::report_readiness(&db, &health, &names).await;
        self.spawn_background(move |stop| health::report_grpc_readiness(db, health, names, stop));
        let service = self.service.as_str();
        self.spawn_background(move |stop| async move {
            telemetry::slo::keep(service, stop.cancelled_owned()).await;
        });
        let stop = self.stop.clone();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });

        // Reachable in process while the port serves (`local`); forgotten once shutdown
        // begins, as the port stops accepting — or when this future is dropped.
        let in_process = tokio_util::task::TaskTracker::new();
        let registered = local::register(self.local_addr, self.router.clone(), in_process.clone());
        let forget = stop.child_token();
        let _forget_when_dropped = forget.clone().drop_guard();
        tokio::spawn(async move {
            forget.cancelled().await;
            drop(registered);
        });
        let serve = serve::run(
            self.listener,
            self.router,
            &self.http,
            self.tls.map(|t| t.0),
            self.client_addresses,
            stop.clone(),
        );
        let service = self.service;
        let grace = self.grace;
        tracing::info!(service = %service, addr = %self.local_addr, "serving");
        let result = tokio::select! {
            () = serve => Ok(()),
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(service = %service, ?grace, "grace period over; dropping in-flight requests");
                Ok(())
            }
        };
        // Requests handed to this service in process (`local`) are not on its
        // connections: they get the same grace before the database closes.
        in_process.close();
        let _ = tokio::time::timeout(grace, in_process.wait()).await;
        let mut background = self.background;
        if tokio::time::timeout(grace, async {
            while background.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            background.abort_all();
        }
        self.db.close().await;
        tracing::info!(service = %service, "stopped");
        result
    }
}

/// The port's TLS acceptor (a newtype: rustls's has no `Debug`).
#[derive(Clone)]
struct Tls(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn bind_error(service: ServiceName, addr: SocketAddr, err: &std::io::Error) -> StartError {
    let reason = match err.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "address already in use (choose another port with \
             BRIGADE_SERVICES__{}__PORT, or 0 for any free port)",
            service.as_str().to_uppercase()
        ),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => err.to_string(),
    };
    StartError::Bind {
        service,
        addr,
        reason,
    }
}
