//! A three-hop chain (A → B → C) with a 300 ms budget and a leaf that would take 1 s:
//! each hop's outbound call gets its remaining budget minus a margin, so every hop gives
//! up before its caller and the leaf's work is cancelled. Proven exactly on tokio's paused
//! clock (in-process hops), and once over real sockets and servers with bounds that a
//! loaded machine cannot break (the order of giving up, and far less than the leaf's 1 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use problem::{Kind, Problem};
use resilience::downstream::{Downstream, Policy};
use server::grpc::{GrpcRoutes, face};
use settings::{ServiceName, Settings};
use tokio::sync::mpsc::UnboundedSender;

/// The leaf's work: what nobody may wait for.
const LEAF_TAKES: Duration = Duration::from_secs(1);
/// Over real sockets every hop must have given up well before the leaf would finish:
/// the 300 ms budget plus as much again for a loaded machine's scheduling (a run once
/// measured 351.5 ms), still far from the leaf's 1 s.
const GIVE_UP_BY: Duration = Duration::from_millis(600);

/// What each hop reports: when it answered (since the test began) and with what.
#[derive(Debug)]
enum Event {
    Answered {
        hop: &'static str,
        at: Duration,
        status: String,
    },
    LeafCancelled {
        at: Duration,
    },
}

#[derive(Clone)]
struct Hop {
    name: &'static str,
    next: Option<(String, Downstream, reqwest::Client)>,
    events: UnboundedSender<Event>,
    began: Instant,
}

impl tonic::server::NamedService for Hop {
    const NAME: &'static str = "test.Hop";
}

struct Cancelled(UnboundedSender<Event>, Instant);

impl Drop for Cancelled {
    fn drop(&mut self) {
        let _ = self.0.send(Event::LeafCancelled {
            at: self.1.elapsed(),
        });
    }
}

/// Calls the next hop as a plain gRPC client would, passing on this attempt's budget.
async fn forward(client: &reqwest::Client, url: &str, budget: Duration) -> Result<(), Problem> {
    let response = client
        .post(format!("{url}/test.Hop/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "grpc-timeout",
            telemetry::deadline::format_grpc_timeout(budget),
        )
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    match response
        .headers()
        .get("grpc-status")
        .map(|v| v.as_bytes().to_vec())
    {
        Some(code) if code == b"4" => Err(Problem::new(Kind::Timeout)),
        Some(code) if code == b"0" => Ok(()),
        _ => Err(Problem::unavailable("unexpected answer")),
    }
}

impl tower::Service<axum::extract::Request> for Hop {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: axum::extract::Request) -> Self::Future {
        let hop = self.clone();
        Box::pin(async move {
            let outcome = match &hop.next {
                // The leaf: a second of work, cancelled when the deadline passes.
                None => {
                    let _guard = Cancelled(hop.events.clone(), hop.began);
                    tokio::time::sleep(LEAF_TAKES).await;
                    Ok(())
                }
                Some((url, downstream, client)) => {
                    downstream
                        .call(true, |attempt| forward(client, url, attempt.budget))
                        .await
                }
            };
            let status = match &outcome {
                Ok(()) => "ok".to_owned(),
                Err(p) => p.kind().slug().to_owned(),
            };
            let _ = hop.events.send(Event::Answered {
                hop: hop.name,
                at: hop.began.elapsed(),
                status,
            });
            let response = match outcome {
                Ok(()) => tonic::Status::ok("").into_http::<axum::body::Body>(),
                Err(problem) => tonic::Status::from(problem).into_http::<axum::body::Body>(),
            };
            Ok(axum::response::IntoResponse::into_response(response))
        })
    }
}

async fn start(service: ServiceName, hop: Hop) -> (String, Arc<tokio::sync::Notify>) {
    let db = storage::testing::sqlite(&[&storage::Migrations::NONE]).await;
    let mut settings = Settings::default();
    settings.services.get_mut(service).port = 0;
    // What this test is about is deadlines, not who may call: the hops call each other
    // with bare HTTP/2 requests.
    settings.identity.require_internal_token = false;
    let app = server::Application::build(
        service,
        &settings,
        db.db.clone(),
        face(GrpcRoutes::new().add_service(hop)),
    )
    .await
    .unwrap();
    let url = format!("http://{}", app.local_addr());
    let stop = Arc::new(tokio::sync::Notify::new());
    let signal = stop.clone();
    tokio::spawn(async move {
        let _db = db;
        app.run_until_stopped(async move { signal.notified().await })
            .await
    });
    (url, stop)
}

#[tokio::test]
async fn every_hop_gives_up_before_its_caller_and_the_leaf_is_cancelled() {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let began = Instant::now();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let policy = Policy {
        timeout: Duration::from_secs(2),
        deadline_margin: Duration::from_millis(10),
        ..Policy::default()
    };
    let hop = |name, next| Hop {
        name,
        next,
        events: tx.clone(),
        began,
    };
    let (c_url, _c) = start(ServiceName::Catalog, hop("C", None)).await;
    let (b_url, _b) = start(
        ServiceName::Orders,
        hop(
            "B",
            Some((c_url, Downstream::new("C", policy.clone()), client.clone())),
        ),
    )
    .await;
    let (a_url, _a) = start(
        ServiceName::Gateway,
        hop(
            "A",
            Some((b_url, Downstream::new("B", policy.clone()), client.clone())),
        ),
    )
    .await;

    // The exact budgets and their order are the paused-clock test's; here, real sockets:
    // every hop gave up on its own deadline, long before the leaf's 1 s. (B's and A's
    // deadlines are 10 ms apart, less than a loaded machine's stall: no order here.)
    let sent = Instant::now();
    let status = forward(&client, &a_url, Duration::from_millis(300)).await;
    let took = sent.elapsed();
    assert_eq!(status.unwrap_err().kind(), Kind::Timeout);
    assert!(took < GIVE_UP_BY, "the caller waited {took:?}");

    let mut answered = Vec::new();
    let mut leaf_cancelled = false;
    // The leaf never answers: its work is dropped at its deadline. A and B answer.
    while answered.len() < 2 || !leaf_cancelled {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Answered { hop, at, status } => answered.push((hop, at, status)),
            Event::LeafCancelled { at } => {
                let since_sent = at.saturating_sub(sent.duration_since(began));
                assert!(since_sent < GIVE_UP_BY, "the leaf ran for {since_sent:?}");
                leaf_cancelled = true;
            }
        }
    }
    assert!(leaf_cancelled, "the leaf's work was cancelled");
    for (hop, at, status) in &answered {
        let since_sent = at.saturating_sub(sent.duration_since(began));
        assert!(
            since_sent < GIVE_UP_BY,
            "{hop} answered after {since_sent:?}"
        );
        assert_eq!(status, "timeout", "{hop}");
    }
}

/// The same chain in one process on the paused clock: A's inbound deadline is 300 ms;
/// each hop's call gets what is left less the 10 ms margin (B 290 ms, C 280 ms), so C's
/// work is dropped at exactly 280 ms and B's and A's answers follow at once — none waits
/// for the leaf, and each answers before its own caller's deadline.
#[tokio::test(start_paused = true)]
async fn on_the_paused_clock_each_hop_gets_its_callers_budget_less_the_margin() {
    // One attempt per call: a retry inside the last few ms would be drawn from the
    // backoff's jitter, and this test is about the budgets, which are exact.
    let policy = Policy {
        timeout: Duration::from_secs(2),
        deadline_margin: Duration::from_millis(10),
        retry: resilience::retry::RetryPolicy {
            max_attempts: 1,
            ..resilience::retry::RetryPolicy::default()
        },
        ..Policy::default()
    };
    let (to_b, to_c) = (
        Downstream::new("B", policy.clone()),
        Downstream::new("C", policy),
    );
    let began = tokio::time::Instant::now();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<(&str, Duration)>();
    let leaf = |budget: Duration| {
        let tx = tx.clone();
        telemetry::deadline::scope(tokio::time::Instant::now() + budget, async move {
            struct Dropped(
                UnboundedSender<(&'static str, Duration)>,
                tokio::time::Instant,
            );
            impl Drop for Dropped {
                fn drop(&mut self) {
                    let _ = self.0.send(("C cancelled", self.1.elapsed()));
                }
            }
            let _guard = Dropped(tx, began);
            tokio::time::sleep(LEAF_TAKES).await;
            Ok::<(), Problem>(())
        })
    };
    let b = |budget: Duration| {
        let (tx, to_c) = (tx.clone(), to_c.clone());
        telemetry::deadline::scope(tokio::time::Instant::now() + budget, async move {
            let outcome = to_c.call(true, |attempt| leaf(attempt.budget)).await;
            let _ = tx.send(("B gave up", began.elapsed()));
            outcome
        })
    };
    let outcome = telemetry::deadline::scope(began + Duration::from_millis(300), async {
        to_b.call(true, |attempt| b(attempt.budget)).await
    })
    .await;
    let a_gave_up = began.elapsed();
    assert_eq!(outcome.unwrap_err().kind(), Kind::Timeout);
    drop(tx);
    let mut seen = Vec::new();
    while let Some(event) = events.recv().await {
        seen.push(event);
    }
    assert_eq!(
        seen,
        [
            ("C cancelled", Duration::from_millis(280)),
            ("B gave up", Duration::from_millis(280)),
        ]
    );
    assert_eq!(
        a_gave_up,
        Duration::from_millis(280),
        "A answers with B's answer"
    );
}
