//! Traces over OTLP: one order placed through the gateway of a running `brigade up`
//! whose spans go to a receiver built from the official OTLP protos
//! (`opentelemetry-proto`'s `TraceService`): its spans form one trace — one root, every
//! other span's parent among them — across every service that handled it, with server,
//! client, producer and consumer spans.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use serde_json::{Value, json};

use crate::helpers::{api_key, bearer, brigade, on_free_ports, start, stop_cleanly, until_paid};

/// Every span received, with the `service.name` of its resource.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn one_orders_spans_form_one_trace_across_every_service() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let serving = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = api_key(&data).await;
    let mut cmd = brigade(&data);
    cmd.args(["up", "--no-seed"]).env(
        "BRIGADE_TELEMETRY__OTLP_ENDPOINT",
        format!("http://{collector}"),
    );
    let mut running = start(on_free_ports(&mut cmd)).await;
    let gateway = running.urls["gateway"].clone();
    let client = bearer(&key);

    let made = |path: &'static str, idem: &'static str, body: Value| {
        let client = client.clone();
        let url = format!("{gateway}{path}");
        async move {
            let r = client
                .post(url)
                .header("idempotency-key", idem)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{path}");
            r.json::<Value>().await.unwrap()["id"].clone()
        }
    };
    let user = made(
        "/v1/users",
        "trace-user",
        json!({"name": "Tracy", "email": "tracy@example.com"}),
    )
    .await;
    let product = made(
        "/v1/products",
        "trace-product",
        json!({"name": "Kettle", "price": 20.0, "stock": 5}),
    )
    .await;
    let placed = client
        .post(format!("{gateway}/v1/orders"))
        .header("idempotency-key", "trace-order")
        .json(&json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    let traceparent = placed.headers()["traceparent"].to_str().unwrap().to_owned();
    let trace_id = u128::from_str_radix(traceparent.split('-').nth(1).unwrap(), 16)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    let order: Value = placed.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();

    // Paid: every service has had its turn.
    until_paid(&client, &gateway, &id, Duration::from_secs(60)).await;

    // The exporter sends a batch a second: the trace's spans from every service.
    let every = [
        "gateway",
        "orders",
        "accounts",
        "catalog",
        "billing",
        "payments-sandbox",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<(String, Span)> = receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .cloned()
            .collect();
        let services: BTreeSet<&str> = spans.iter().map(|(s, _)| s.as_str()).collect();
        if every.iter().all(|s| services.contains(s)) {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trace reached only {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let by_id: HashMap<&[u8], &(String, Span)> =
        spans.iter().map(|e| (e.1.span_id.as_slice(), e)).collect();
    let describe =
        |(service, s): &(String, Span)| format!("{service}: {} ({:?})", s.name, s.kind());
    let roots: Vec<String> = spans
        .iter()
        .filter(|(_, s)| s.parent_span_id.is_empty())
        .map(describe)
        .collect();
    // The gateway's span is named by its route (its forward of every `/v1/*`).
    assert_eq!(roots, ["gateway: POST /v1/{*rest} (Server)"], "one root");
    for entry in &spans {
        let (_, s) = entry;
        if !s.parent_span_id.is_empty() {
            assert!(
                by_id.contains_key(s.parent_span_id.as_slice()),
                "{}'s parent is not in the trace",
                describe(entry)
            );
        }
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    let kinds: BTreeSet<i32> = spans.iter().map(|(_, s)| s.kind).collect();
    for kind in [
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ] {
        assert!(kinds.contains(&(kind as i32)), "no {kind:?} span");
    }
    // The accept: orders' span, a child of the gateway's call to orders.
    let accept = spans
        .iter()
        .find(|(service, s)| service == "orders" && s.name == "POST /v1/orders")
        .expect("orders' span of the accept");
    let (caller, call) = by_id[accept.1.parent_span_id.as_slice()];
    assert_eq!(
        (caller.as_str(), call.name.as_str()),
        ("gateway", "call orders")
    );
    // The provider's charge: the sandbox's server span, child of billing's call.
    let charge = spans
        .iter()
        .find(|(service, s)| service == "payments-sandbox" && s.name == "POST /v1/charges")
        .expect("the sandbox's span of the charge");
    let (caller, call) = by_id[charge.1.parent_span_id.as_slice()];
    assert_eq!(caller, "billing");
    assert_eq!(call.kind(), SpanKind::Client);

    stop_cleanly(&mut running).await;
}
