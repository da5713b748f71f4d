//! The payment provider billing charges through: a Stripe-shaped HTTP API (the payments
//! sandbox by default, `billing.provider_url` otherwise), an external SaaS in the seed's
//! 5–30 s timeout class. Every call goes through `resilience::Downstream` named
//! `payments` (a deadline of `billing.provider_timeout` under the handler's, budgeted
//! retries, a breaker), carries the caller's correlation headers and the attempt's budget
//! (`x-request-timeout-ms`), and is counted in `series`.
//!
//! Every call carries an idempotency key — the order id for its charge, `refund-<order
//! id>` for its refund — so retrying one (here, or a redelivered event later) can never
//! charge or refund twice: the provider replays its first answer.
//!
//! Answers: 200 is done; 402 is a decline (the card, for good: a [`ChargeAnswer`], not an
//! error); 400 and 422 mean the provider refused the request itself
//! ([`ProviderError::Refused`]); everything else — 409 (the key's first request is still
//! running), 429, 5xx, a timeout, no connection, an open breaker, and statuses that
//! point at our configuration (401, 403, 404, a redirect) — is
//! [`ProviderError::Unavailable`]: try again later with the same key.

use std::time::Duration;

use problem::{Kind, Problem};
use resilience::downstream::{Attempt, Downstream, Policy};
use serde::{Deserialize, Serialize};
use settings::Settings;

use crate::domain::{ChargeAnswer, Decline, OrderId, OrderToCharge, Refund};
use crate::series;

/// Why a provider call did not get an answer billing can record.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Not now (an outage, a timeout, the breaker open, the key still in flight, a
    /// misconfigured address): try again later with the same key.
    #[error("{0}")]
    Unavailable(Problem),
    /// The provider refused the request itself (400, 422): retrying the same request
    /// cannot help.
    #[error("{0}")]
    Refused(Problem),
}

impl ProviderError {
    fn from_problem(problem: Problem) -> Self {
        if problem.kind().retryable() {
            ProviderError::Unavailable(problem)
        } else {
            ProviderError::Refused(problem)
        }
    }
}

/// A client of the provider.
#[derive(Debug, Clone)]
pub struct Provider {
    http: reqwest::Client,
    /// `{provider}/v1/charges`.
    charges: String,
    /// `{provider}/v1/refunds`.
    refunds: String,
    /// The policy every call runs under, and its breaker's state (`/metrics`).
    downstream: Downstream,
}

/// The operations, as the `operation` label names them.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Charge,
    Refund,
}

impl Operation {
    const fn label(self) -> &'static str {
        match self {
            Operation::Charge => "charge",
            Operation::Refund => "refund",
        }
    }
}

impl Provider {
    /// A client of the provider at `settings.provider_url()`. Connects lazily, so billing
    /// starts (and serves what it has) while the provider is down.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let base = settings.provider_url();
        reqwest::Url::parse(&base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(settings.outbound.timeout)
            // A redirect means a wrong address, not somewhere to post a charge again.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("brigade-billing")
            .build()
            .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
        let policy = Policy {
            timeout: settings.billing.provider_timeout,
            ..Policy::from_outbound(&settings.outbound)
        };
        Ok(Self {
            http,
            charges: format!("{base}/v1/charges"),
            refunds: format!("{base}/v1/refunds"),
            downstream: Downstream::of_service(crate::SERVICE.as_str(), "payments", policy),
        })
    }

    pub fn downstream(&self) -> &Downstream {
        &self.downstream
    }

    /// Charges `order` in full under its id as the idempotency key: the provider's
    /// charge, or its decline.
    pub async fn charge(&self, order: &OrderToCharge) -> Result<ChargeAnswer, ProviderError> {
        let body = ChargeRequest {
            amount: order.amount.minor(),
            currency: order.currency.as_str(),
            order_id: order.order_id.as_str(),
            description: format!("Brigade order {}", order.order_id),
        };
        self.post(
            Operation::Charge,
            &self.charges,
            order.order_id.as_str(),
            &body,
            read_charge,
        )
        .await
    }

    /// Refunds `charge` (the charge of `order`) in full, under `refund-<order id>`.
    pub async fn refund(&self, order: &OrderId, charge: &str) -> Result<Refund, ProviderError> {
        let body = RefundRequest { charge };
        self.post(
            Operation::Refund,
            &self.refunds,
            &order.refund_key(),
            &body,
            read_refund,
        )
        .await
    }

    /// One idempotent `POST` under the policy; `read` turns a 2xx or 402 into the answer
    /// and its `outcome` label.
    async fn post<B: Serialize, T>(
        &self,
        operation: Operation,
        url: &str,
        key: &str,
        body: &B,
        read: fn(Reply) -> Result<(T, &'static str), Problem>,
    ) -> Result<T, ProviderError> {
        self.downstream
            .call(true, |attempt| async move {
                // Counted however the attempt ends, cut off at its deadline included.
                let mut timing = Timing::start(operation);
                let answer = self.send(url, key, body, attempt).await.and_then(read);
                timing.outcome = match &answer {
                    Ok((_, outcome)) => outcome,
                    Err(problem) if problem.kind().retryable() => "transient",
                    Err(_) => "rejected",
                };
                answer.map(|(answer, _)| answer)
            })
            .await
            .map_err(ProviderError::from_problem)
    }

    /// Sends one attempt: a 2xx or a 402 is a reply to read, any other status a problem.
    async fn send<B: Serialize>(
        &self,
        url: &str,
        key: &str,
        body: &B,
        attempt: Attempt,
    ) -> Result<Reply, Problem> {
        let mut request = self
            .http
            .post(url)
            .header("idempotency-key", key)
            // The provider gets this attempt's budget, so it stops before we do.
            .header(
                server::REQUEST_TIMEOUT_HEADER,
                attempt.budget.as_millis().to_string(),
            )
            .json(body);
        for (name, value) in telemetry::context::outbound_headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            Problem::unavailable("the payment provider could not be reached").with_source(e)
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(resilience::retry::parse_retry_after);
        let body = response.bytes().await.map_err(|e| {
            Problem::unavailable("the payment provider's answer was cut short").with_source(e)
        })?;
        match status {
            200..=299 | 402 => Ok(Reply {
                status,
                body: body.to_vec(),
            }),
            _ => Err(problem_of(status, &body, retry_after)),
        }
    }
}

/// The answer to one attempt: its status (2xx or 402) and body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// The problem a status other than 2xx and 402 is.
fn problem_of(status: u16, body: &[u8], retry_after: Option<Duration>) -> Problem {
    let kind = match status {
        // The provider refused this request: nothing to retry.
        400 => Kind::InvalidRequest,
        422 => Kind::ValidationFailed,
        408 => Kind::Timeout,
        // The same key's first request is still running there.
        409 => Kind::IdempotencyKeyInUse,
        429 => Kind::RateLimited,
        // An outage (5xx), or an answer that points at our configuration (a redirect,
        // 401, 403, 404): retried until someone fixes it, never skipped.
        _ => Kind::Unavailable,
    };
    let said = serde_json::from_slice::<ProblemReply>(body)
        .ok()
        .and_then(|p| p.detail.or(p.title));
    let detail = match said {
        Some(said) => format!("the payment provider answered {status}: {said}"),
        None => format!("the payment provider answered {status}"),
    };
    let problem = Problem::new(kind).with_detail(detail);
    match retry_after {
        Some(after) => problem.with_retry_after(after),
        None => problem,
    }
}

fn unreadable(what: &str, err: serde_json::Error) -> Problem {
    // The provider may have acted: retry with the same key (it replays), never skip.
    Problem::unavailable(format!("the payment provider's {what} could not be read"))
        .with_source(err)
}

fn read_charge(reply: Reply) -> Result<(ChargeAnswer, &'static str), Problem> {
    if reply.status == 402 {
        let declined: DeclineReply =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("decline", e))?;
        let decline = Decline {
            charge_id: declined.charge,
            // The issuer's reason when the provider gives it (Stripe's `decline_code`),
            // else its error code (`failure_code`: `card_declined`).
            code: declined
                .decline_code
                .or(declined.failure_code)
                .unwrap_or_else(|| "card_declined".to_owned()),
            reason: declined
                .detail
                .unwrap_or_else(|| "the payment provider declined the charge".to_owned()),
        };
        return Ok((ChargeAnswer::Declined(decline), "declined"));
    }
    let charge: ChargeReply =
        serde_json::from_slice(&reply.body).map_err(|e| unreadable("charge", e))?;
    Ok((
        ChargeAnswer::Succeeded {
            charge_id: charge.id,
        },
        "succeeded",
    ))
}

fn read_refund(reply: Reply) -> Result<(Refund, &'static str), Problem> {
    if reply.status == 402 {
        return Err(Problem::invalid_request(
            "the payment provider declined a refund",
        ));
    }
    let refund: RefundReply =
        serde_json::from_slice(&reply.body).map_err(|e| unreadable("refund", e))?;
    Ok((
        Refund {
            refund_id: refund.id,
        },
        "succeeded",
    ))
}

/// Counts one attempt when it ends: as `transient` unless told otherwise, so an attempt
/// cut off at its deadline (dropped mid-flight) counts too.
struct Timing {
    operation: Operation,
    started: std::time::Instant,
    outcome: &'static str,
}

impl Timing {
    fn start(operation: Operation) -> Self {
        Self {
            operation,
            started: std::time::Instant::now(),
            outcome: "transient",
        }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        let operation = self.operation.label();
        metrics::counter!(series::PROVIDER_REQUESTS, "service" => crate::SERVICE.as_str(), "operation" => operation, "outcome" => self.outcome)
            .increment(1);
        metrics::histogram!(series::PROVIDER_DURATION, "service" => crate::SERVICE.as_str(), "operation" => operation)
            .record(self.started.elapsed());
    }
}

// The provider's wire format: what we send, and the members of its answers we read
// (it may send more).

#[derive(Serialize)]
struct ChargeRequest<'a> {
    amount: i64,
    currency: &'a str,
    order_id: &'a str,
    description: String,
}

#[derive(Serialize)]
struct RefundRequest<'a> {
    charge: &'a str,
}

#[derive(Deserialize)]
struct ChargeReply {
    id: String,
}

#[derive(Deserialize)]
struct RefundReply {
    id: String,
}

/// A 402's problem+json: `type` …/payment-declined, with the failed charge and the codes.
#[derive(Deserialize)]
struct DeclineReply {
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    charge: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    failure_code: Option<String>,
}

/// Any other problem+json answer: what it says, for the logs.
#[derive(Deserialize)]
struct ProblemReply {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_transient_or_refused() {
        let transient = [408, 409, 429, 500, 502, 503, 504, 301, 401, 403, 404];
        for status in transient {
            let problem = problem_of(status, b"", None);
            assert!(
                matches!(
                    ProviderError::from_problem(problem),
                    ProviderError::Unavailable(_)
                ),
                "{status}"
            );
        }
        for status in [400, 422] {
            let problem = problem_of(status, b"{\"detail\":\"amount too small\"}", None);
            assert!(
                problem.to_string().contains("amount too small"),
                "{problem}"
            );
            assert!(
                matches!(
                    ProviderError::from_problem(problem),
                    ProviderError::Refused(_)
                ),
                "{status}"
            );
        }
        let later = problem_of(503, b"", Some(Duration::from_secs(2)));
        assert_eq!(later.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_decline_keeps_its_code_reason_and_charge() {
        let body = br#"{"type":"https://payments.example/problems/payment-declined","title":"Payment declined","status":402,"detail":"Your card was declined.","charge":"ch_9","decline_code":"card_declined"}"#;
        let reply = Reply {
            status: 402,
            body: body.to_vec(),
        };
        let (answer, outcome) = read_charge(reply).unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(outcome, "declined");
        assert_eq!(
            answer,
            ChargeAnswer::Declined(Decline {
                charge_id: Some("ch_9".into()),
                code: "card_declined".into(),
                reason: "Your card was declined.".into(),
            })
        );
        let paid = Reply {
            status: 200,
            body: br#"{"id":"ch_1","object":"charge","status":"succeeded"}"#.to_vec(),
        };
        assert!(matches!(
            read_charge(paid),
            Ok((ChargeAnswer::Succeeded { .. }, "succeeded"))
        ));
    }
}
