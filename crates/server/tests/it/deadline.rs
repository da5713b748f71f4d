//! An inbound `grpc-timeout` is enforced even though the gRPC service is mounted inside
//! axum: the handler's future is dropped when the deadline passes and the caller gets
//! DEADLINE_EXCEEDED, while the handler can read its remaining budget.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use server::grpc::{GrpcRoutes, face};
use settings::ServiceName;

use crate::helpers::spawn;

/// A gRPC service whose every call reports its budget, then never finishes; dropping the
/// call (cancellation) is reported too.
#[derive(Clone)]
struct Stuck {
    events: tokio::sync::mpsc::UnboundedSender<Event>,
}

#[derive(Debug)]
enum Event {
    /// The budget the handler saw, and when it looked.
    Started {
        budget: Option<Duration>,
        at: Instant,
    },
    Cancelled,
}

struct OnDrop(tokio::sync::mpsc::UnboundedSender<Event>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Cancelled);
    }
}

impl tonic::server::NamedService for Stuck {
    const NAME: &'static str = "test.Stuck";
}

impl tower::Service<axum::extract::Request> for Stuck {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: axum::extract::Request) -> Self::Future {
        let events = self.events.clone();
        Box::pin(async move {
            let _ = events.send(Event::Started {
                budget: telemetry::deadline::remaining(),
                at: Instant::now(),
            });
            let _guard = OnDrop(events);
            std::future::pending::<()>().await;
            unreachable!("pending never completes")
        })
    }
}

#[tokio::test]
async fn a_passed_deadline_cancels_the_handler_and_answers_deadline_exceeded() {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let faces = face(GrpcRoutes::new().add_service(Stuck { events: tx }));
    let app = spawn(ServiceName::Gateway, faces).await;

    // A plain HTTP/2 client: tonic's Channel would enforce grpc-timeout itself and give
    // up first, hiding whether the server does.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let begun = Instant::now();
    let response = client
        .post(app.url("/test.Stuck/Wait"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let took = begun.elapsed();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        grpc_status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED: {:?}",
        response.headers()
    );
    assert!(
        took >= Duration::from_millis(300),
        "answered before the deadline: {took:?}"
    );
    // Generous: the real socket's one upper bound (the answer comes at the deadline, not
    // after the handler that never finishes).
    assert!(took < Duration::from_secs(3), "took {took:?}");

    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    let Event::Started {
        budget: Some(budget),
        at,
    } = first
    else {
        panic!("the handler saw no deadline: {first:?}");
    };
    // The server's clock started after the request left, so the handler's budget is at
    // most the caller's 300 ms and at least what was left of them when it looked: exact
    // bounds however slow this machine is at the moment.
    let spent = at.duration_since(begun);
    assert!(
        budget <= Duration::from_millis(300)
            && budget >= Duration::from_millis(300).saturating_sub(spent),
        "budget {budget:?}, {spent:?} after the request left"
    );
    let second = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(second, Event::Cancelled),
        "the handler's work was cancelled: {second:?}"
    );
}
