//! What every port takes from a client before a request reaches a service: header count
//! and size limits, a deadline for slow headers (slowloris), no version banner, and TLS
//! from configuration.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use settings::ServiceName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn, spawn_configured};

fn faces() -> Router {
    Router::new().route("/v1/hello", get(|| async { "hello" }))
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused_and_no_banner_is_sent() {
    let app = spawn(ServiceName::Gateway, faces()).await;
    let ok = app.client.get(app.url("/v1/hello")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("server").is_none(), "a version banner");

    let mut many = app.client.get(app.url("/v1/hello"));
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);

    let huge = app
        .client
        .get(app.url("/v1/hello"))
        .header("x-huge", "a".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 431);

    // HTTP/2 too: an oversized header list ends the request, never reaches the route.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let refused = h2
        .get(app.url("/v1/hello"))
        .header("x-huge", "a".repeat(100 * 1024))
        .send()
        .await;
    assert!(refused.is_err() || refused.unwrap().status() == 431);
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    let app = spawn_configured(ServiceName::Gateway, faces(), |s| {
        s.http.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port_of(&app.base)))
        .await
        .unwrap();
    slow.write_all(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ...and never the blank line. The server answers 408 or closes, within a bound.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn a_port_with_tls_configured_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = settings::TlsSettings {
        cert: cert.clone(),
        key: key.clone(),
    };
    let app = spawn_configured(ServiceName::Gateway, faces(), move |s| {
        s.services.gateway.tls = Some(tls);
    })
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port_of(&app.base)))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // Plain HTTP on that port gets nowhere.
    let plain = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // A key that does not fit is a start-up error naming the file.
    std::fs::write(&key, "not a key").unwrap();
    let mut settings = settings::Settings::default();
    settings.services.gateway.port = 0;
    settings.services.gateway.tls = Some(settings::TlsSettings { cert, key });
    let db = storage::testing::sqlite(&[&storage::Migrations::NONE]).await;
    let err = server::Application::build(ServiceName::Gateway, &settings, db.db.clone(), faces())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_half_a_preface_is_cut_off() {
    let app = spawn_configured(ServiceName::Gateway, faces(), |s| {
        s.http.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    for first in [&b""[..], &b"PRI * HT"[..]] {
        let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port_of(&app.base)))
            .await
            .unwrap();
        idle.write_all(first).await.unwrap();
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{first:?}: still open after 5 s");
    }
    // A prompt client is served as before, over HTTP/1.1 and HTTP/2.
    assert_eq!(
        app.client
            .get(app.url("/v1/hello"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert_eq!(
        h2.get(app.url("/v1/hello")).send().await.unwrap().status(),
        200
    );
}
