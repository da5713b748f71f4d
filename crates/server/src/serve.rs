//! The accept loop every port runs: hyper-util's server (HTTP/1.1 and HTTP/2, upgrades
//! for WebSockets) under `http`'s limits, optionally behind TLS, with graceful shutdown.
//!
//! Why not `axum::serve`: it offers no way to bound a request's headers, to time out a
//! client that sends them slowly (slowloris), or to terminate TLS; hyper's builder has all
//! three. What axum::serve did is kept: TCP_NODELAY, the peer's address as
//! `ConnectInfo` where asked for, and a drain of open connections on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use settings::{HttpSettings, TlsSettings};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections one port serves at once; past it, new ones wait in the kernel's
/// accept queue until one closes (a client holding thousands open starves nobody else
/// of file descriptors).
const MAX_CONNECTIONS: usize = 10_000;

/// The HTTP/2 client preface: a connection that starts with it speaks HTTP/2 (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `router` on `listener` until `stop`, then waits for open connections to end
/// (the caller bounds that wait by the grace period).
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    http: &HttpSettings,
    tls: Option<TlsAcceptor>,
    client_addresses: bool,
    stop: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout)
        .max_headers(http.max_headers)
        .max_buf_size(http.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(http.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is gone: its connection is closed.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let first_bytes = http.header_read_timeout;
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Nagle's algorithm would hold a streamed response's later frames until the
        // client's delayed ACK (~40 ms per ListProducts page); replies here are small
        // and already batched by hyper, so send them at once.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY on an accepted connection");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            if client_addresses {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
            }
            router.clone().oneshot(request)
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    // The protocol is told from the first bytes, under the slow-header
                    // deadline: a client that sends nothing, or half a preface, is cut
                    // off instead of holding the connection forever.
                    // (hyper then reads the same bytes to pick HTTP/1.1 or HTTP/2; from
                    // there HTTP/1.1 has its header deadline, HTTP/2 its pings.)
                    if sniff(&tcp, first_bytes).await.is_none() {
                        return;
                    }
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .into_owned();
                    let _ = watcher.watch(connection).await;
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                tracing::debug!(%err, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(connection).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Whether a connection speaks HTTP/2 (its first bytes are the preface) or HTTP/1.1
/// (anything else); `None` if it closes, or sends too little, within `limit`.
async fn sniff(tcp: &tokio::net::TcpStream, limit: Duration) -> Option<bool> {
    let mut first = [0u8; 24];
    let told = async {
        loop {
            let n = tcp.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if first[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // Part of the preface so far: the rest normally follows in the same packet.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, told).await.ok().flatten()
}

/// The TLS acceptor for `tls`'s PEM files (HTTP/2 and HTTP/1.1 offered by ALPN).
pub(crate) fn acceptor(tls: &TlsSettings) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the certificate chain {}: {e}",
                tls.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("cannot read the private key {}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
