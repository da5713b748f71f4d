//! Orders' use cases, one method each: place an order (the synchronous accept), read one
//! or a user's page, process it (the `order_processing` worker: reserve its stock),
//! follow billing's outcome (the saga: paid, or compensate), cancel it, watch it. Faces
//! (REST, gRPC, messages) parse, call one of these, and render.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::Stream;
use idempotency::{Idempotency, Keyed};
use messaging::outbox::{self, Destination};
use problem::{FieldError, Kind, Problem};
use storage::{StoreError, WriteTx, now_millis};

use crate::clients::{Clients, Priced};
use crate::domain::{
    CURRENCY, Order, OrderId, OrderRequest, ProductId, Status, Transition, UserId, total_of,
};
use crate::events;
use crate::store::{Move, OrdersStore};

/// Why a use case refused.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("no order {0} exists")]
    NotFound(OrderId),
    #[error("no user {} exists", .0.0)]
    UnknownUser(UserId),
    #[error("no such products")]
    UnknownProducts(Vec<(usize, ProductId)>),
    #[error("the order total is too large")]
    TotalTooLarge,
    /// Accounts or catalog could not answer (down, slow, breaker open): their problem.
    #[error("{0}")]
    Dependency(Problem),
    #[error("order {0} is {1} and cannot be cancelled")]
    NotCancellable(OrderId, &'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A messaging backend's failure as the caller hears it.
fn messaging_problem(err: &messaging::MessagingError) -> Problem {
    use messaging::MessagingError as E;
    match err {
        E::NotFound(what) => Problem::not_found(what.clone()),
        E::Unavailable { .. } | E::NotConfirmed { .. } | E::Timeout { .. } | E::Closed => {
            Problem::unavailable(err.to_string())
        }
        E::Invalid { .. } | E::Backend { .. } => Problem::internal(err.to_string()),
    }
}

impl From<OrdersError> for Problem {
    fn from(err: OrdersError) -> Self {
        let detail = err.to_string();
        match err {
            OrdersError::NotFound(id) => {
                Problem::not_found(detail).with_extension("order_id", id.as_str())
            }
            OrdersError::UnknownUser(_) => {
                Problem::validation(vec![FieldError::new("user_id", detail)])
            }
            OrdersError::UnknownProducts(missing) => Problem::validation(
                missing
                    .into_iter()
                    .map(|(i, id)| {
                        FieldError::new(
                            format!("items[{i}].product_id"),
                            format!("no product {} exists", id.0),
                        )
                    })
                    .collect(),
            ),
            OrdersError::TotalTooLarge => {
                Problem::validation(vec![FieldError::new("items", detail)])
            }
            OrdersError::Dependency(problem) => problem,
            OrdersError::NotCancellable(..) => {
                Problem::new(Kind::BusinessRuleViolated).with_detail(detail)
            }
            OrdersError::Store(err) => err.into(),
        }
    }
}

/// How a message's handling failed: never (`Permanent`: dead-letter it) or not yet.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
    /// Not before this: the dependency said when it may answer (its breaker's wait).
    #[error("{0}")]
    TransientFor(String, Duration),
}

impl HandleError {
    /// A dependency's problem as a transient failure, with its `Retry-After` if any.
    fn dependency(what: &str, problem: &Problem) -> Self {
        let reason = format!("{what}: {problem}");
        match problem.retry_after() {
            Some(after) => HandleError::TransientFor(reason, after),
            None => HandleError::Transient(reason),
        }
    }
}

impl From<StoreError> for HandleError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Corrupt(what) => HandleError::Permanent(what),
            other => HandleError::Transient(other.to_string()),
        }
    }
}

/// Orders' use cases over its store, its idempotency keys and its clients.
#[derive(Debug, Clone)]
pub struct Orders {
    store: OrdersStore,
    idempotency: Idempotency,
    clients: Clients,
    /// The messaging backend, for operator actions on the queue orders consumes (its
    /// messages go out through the outbox, never from here).
    broker: Option<messaging::Broker>,
}

/// The work queues whose dead letters orders redrives: the ones it consumes.
pub const REDRIVABLE: [&str; 1] = [events::ORDER_PROCESSING];
/// Dead letters one redrive moves when the caller names no limit, and at most.
pub const REDRIVE_DEFAULT: usize = 100;
pub const REDRIVE_MAX: usize = 1_000;

/// The metric names orders records (every series also has `service="orders"`).
pub mod series {
    /// Counter: transitions, by the status reached (`to`).
    pub const TRANSITIONS: &str = "brigade_orders_transitions_total";
    /// Gauge: orders by status, sampled.
    pub const BY_STATUS: &str = "brigade_orders_by_status";
    /// Histogram: seconds from the accept to CONFIRMED.
    pub const ACCEPT_TO_CONFIRMED: &str = "brigade_orders_accept_to_confirmed_seconds";
    /// Histogram: seconds from the accept to PAID.
    pub const ACCEPT_TO_PAID: &str = "brigade_orders_accept_to_paid_seconds";
    /// Counter: saga compensations (stock released, order cancelled), by `reason`.
    pub const COMPENSATIONS: &str = "brigade_orders_compensations_total";
}

fn count_transition(to: Status, created_at: i64) {
    metrics::counter!(series::TRANSITIONS, "service" => crate::SERVICE.as_str(), "to" => to.as_str())
        .increment(1);
    let seconds = (now_millis().saturating_sub(created_at)).max(0) as f64 / 1000.0;
    match to {
        Status::Confirmed => {
            metrics::histogram!(series::ACCEPT_TO_CONFIRMED, "service" => crate::SERVICE.as_str())
                .record(seconds);
        }
        Status::Paid => {
            metrics::histogram!(series::ACCEPT_TO_PAID, "service" => crate::SERVICE.as_str())
                .record(seconds);
        }
        _ => {}
    }
}

impl Orders {
    pub fn new(store: OrdersStore, idempotency: Idempotency, clients: Clients) -> Self {
        Self {
            store,
            idempotency,
            clients,
            broker: None,
        }
    }

    /// With the messaging backend the operator actions work on.
    #[must_use]
    pub fn with_broker(mut self, broker: Option<messaging::Broker>) -> Self {
        self.broker = broker;
        self
    }

    /// The operator's redrive: up to `limit` (0: [`REDRIVE_DEFAULT`]) dead letters of
    /// `queue`, one orders consumes, back onto it — under the face's idempotency key,
    /// claimed before anything moves: a concurrent request with the key hears 409, a
    /// repeat answers what the first did and moves nothing more. A broker's move cannot
    /// share the database's transaction, so the key's answer is recorded after it: a
    /// redrive cut short between the two (a crash) holds its key until the claim's lock
    /// times out, and a retry then moves what is dead at that time.
    pub async fn redrive_dead_letters<K: Keyed>(
        &self,
        write: &K,
        queue: &str,
        limit: usize,
        render: impl FnOnce(usize) -> Result<K::Answer, Problem> + Send + 'static,
    ) -> Result<K::Output, Problem> {
        if !REDRIVABLE.contains(&queue) {
            return Err(Problem::not_found(format!(
                "orders consumes no queue named {queue:?}; its dead letters are on {}",
                REDRIVABLE.join(", ")
            ))
            .with_extension("queue", queue));
        }
        let limit = match limit {
            0 => REDRIVE_DEFAULT,
            n if n <= REDRIVE_MAX => n,
            _ => {
                return Err(Problem::validation(vec![FieldError::new(
                    "limit",
                    format!("at most {REDRIVE_MAX} dead letters move in one redrive"),
                )]));
            }
        };
        let Some(broker) = &self.broker else {
            return Err(Problem::unavailable(
                "orders runs without its messaging backend here",
            ));
        };
        let client = telemetry::context::current()
            .and_then(|ctx| ctx.client().map(|c| c.to_string()))
            .unwrap_or_default();
        let redrive = async move {
            let moved = broker
                .queues
                .redrive(queue, limit)
                .await
                .map_err(|err| messaging_problem(&err))?;
            // An operator's action on the system: said at info, with who asked.
            tracing::info!(queue, moved, limit, client, "dead letters redriven");
            render(moved)
        };
        Ok(write.run_claimed(&self.idempotency, redrive).await)
    }

    pub fn store(&self) -> &OrdersStore {
        &self.store
    }

    /// The synchronous accept: asks accounts whether the user exists and catalog for
    /// every product's price (at once, each through its `Downstream`), then — under the
    /// face's `Idempotency-Key` — records the order `PENDING` with its `ProcessOrder` and
    /// `OrderCreated` in one transaction. A retry with the same key answers the same
    /// order; the checks run after the key's replay and refusal decisions, holding no
    /// claim and no lock.
    pub async fn place<K: Keyed>(
        &self,
        write: &K,
        request: OrderRequest,
        render: impl FnOnce(Order) -> Result<K::Answer, Problem> + Send + 'static,
    ) -> K::Output {
        if write.writes_locally(&self.idempotency) {
            return self.place_locally(write, request, render).await;
        }
        let priced: OnceLock<Vec<crate::domain::Line>> = OnceLock::new();
        let (clients, slot, asked) = (&self.clients, &priced, &request);
        let check = async move {
            let _ = slot.set(check(clients, asked).await?);
            Ok(())
        };
        let store = &self.store;
        write
            .run_after(&self.idempotency, check, |mut tx| async move {
                let result = match slot.get() {
                    Some(lines) => place_in(store, &mut tx, asked, lines.clone()).await,
                    None => Err(Problem::internal("the order's lines were not priced")),
                };
                (tx, result.and_then(render))
            })
            .await
    }

    /// `place` on a SQLite file: the key's decisions, the checks (holding nothing), then
    /// the order and its messages in one synchronous call on the file's rusqlite writer
    /// (catalog's creates take the same path: sqlx's per-statement hand-offs under the
    /// write lock cost several times the work). The order and its envelopes are made in
    /// the request's task, where its correlation ID and trace are, and handed over.
    async fn place_locally<K: Keyed>(
        &self,
        write: &K,
        request: OrderRequest,
        render: impl FnOnce(Order) -> Result<K::Answer, Problem> + Send + 'static,
    ) -> K::Output {
        type Prepared = (Order, [(Destination<'static>, messaging::Envelope); 2]);
        let prepared: Arc<Mutex<Option<Prepared>>> = Arc::default();
        let (clients, slot, asked) = (&self.clients, prepared.clone(), &request);
        let check = async move {
            let order = new_order(asked, check(clients, asked).await?)?;
            let messages = [
                (
                    Destination::Queue(events::ORDER_PROCESSING),
                    events::process_order(&order),
                ),
                (
                    Destination::Stream(events::ORDER_EVENTS),
                    events::created(&order),
                ),
            ];
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((order, messages));
            Ok(())
        };
        let taken = prepared.clone();
        // The accept's time once the writer wrote it (0: it did not).
        let wrote = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let written = wrote.clone();
        let answer = write
            .run_after_local(&self.idempotency, check, move |conn| {
                let Some((mut order, messages)) =
                    taken.lock().unwrap_or_else(PoisonError::into_inner).take()
                else {
                    return Err(Problem::internal("the order was not prepared"));
                };
                order.seq = crate::store::insert_order_local(conn, &order, &messages)
                    .map_err(|e| Problem::from(OrdersError::Store(e)))?;
                written.store(order.created_at, std::sync::atomic::Ordering::Relaxed);
                render(order)
            })
            .await;
        // Counted once the call is over (not for a replay or a refusal, where nothing
        // was written; a failed commit after the write is too rare to correct for).
        let created_at = wrote.load(std::sync::atomic::Ordering::Relaxed);
        if created_at != 0 {
            count_transition(Status::Pending, created_at);
        }
        // Written or not (a replay, a refusal), ringing the relay is harmless.
        self.store.committed_locally();
        answer
    }

    pub async fn order(&self, id: &OrderId) -> Result<Order, OrdersError> {
        self.store
            .order(id)
            .await?
            .ok_or_else(|| OrdersError::NotFound(id.clone()))
    }

    /// One page of a user's orders, oldest first, after the order at `after` (its seq).
    pub async fn orders_of(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Order>, OrdersError> {
        Ok(self.store.orders_of(user, after, limit).await?)
    }

    /// The `order_processing` worker's use case: reserve the order's stock in catalog,
    /// then `CONFIRMED` (and `OrderConfirmed`), or `REJECTED` with the refusal's problem
    /// details (and `OrderRejected`). Catalog down or slow is transient (the message comes
    /// back after a backoff); an order that does not exist never will.
    pub async fn process(&self, id: &OrderId) -> Result<(), HandleError> {
        let order = self
            .store
            .order(id)
            .await?
            .ok_or_else(|| HandleError::Permanent(format!("no order {id} exists")))?;
        match order.status {
            Status::Pending => {}
            // Cancelled while this message waited: make sure nothing stays reserved (the
            // cancel released it already; a release is idempotent).
            Status::Cancelled => return self.release(id).await,
            // Decided by an earlier delivery of this message.
            _ => return Ok(()),
        }
        match self.clients.reserve(id, &order.lines).await {
            Ok(true) => {
                let mut tx = self.store.begin().await?;
                match self
                    .store
                    .move_in(&mut tx, id, Status::Confirmed, "")
                    .await?
                {
                    Move::Moved => {
                        let event = events::confirmed(&order);
                        outbox::enqueue(&mut tx, Destination::Stream(events::ORDER_EVENTS), &event)
                            .await?;
                        tx.commit().await.map_err(StoreError::from)?;
                        count_transition(Status::Confirmed, order.created_at);
                        Ok(())
                    }
                    // Confirmed by another copy of this message, which holds the same
                    // reservation (one per order id).
                    Move::Stays(Status::Confirmed | Status::Paid) => Ok(()),
                    // Cancelled, or rejected by another copy that ran first: nothing may
                    // stay reserved for it.
                    Move::Stays(_) => {
                        tx.rollback().await.map_err(StoreError::from)?;
                        self.release(id).await
                    }
                }
            }
            // Its reservation was released before it was made: the order was cancelled
            // (cancel commits CANCELLED before it releases), so this only finds it PENDING
            // if something else released it; it cannot be served, so it ends.
            Ok(false) => {
                let reason = "its stock was released before it could be reserved";
                self.cancel_in_store(id, reason)
                    .await
                    .map_err(|e| match e {
                        OrdersError::Store(err) => HandleError::from(err),
                        other => HandleError::Transient(other.to_string()),
                    })?;
                Ok(())
            }
            Err(problem) if refuses_the_order(&problem) => {
                let reason = problem
                    .public_detail()
                    .map_or_else(|| problem.kind().title().to_owned(), |d| d.into_owned());
                let mut tx = self.store.begin().await?;
                if self
                    .store
                    .move_in(&mut tx, id, Status::Rejected, &reason)
                    .await?
                    == Move::Moved
                {
                    let event = events::rejected(&order, &problem);
                    outbox::enqueue(&mut tx, Destination::Stream(events::ORDER_EVENTS), &event)
                        .await?;
                    tx.commit().await.map_err(StoreError::from)?;
                    count_transition(Status::Rejected, order.created_at);
                    tracing::info!(order_id = %id, %reason, "order rejected");
                }
                Ok(())
            }
            Err(problem) => Err(HandleError::dependency(
                "catalog could not reserve stock",
                &problem,
            )),
        }
    }

    async fn release(&self, id: &OrderId) -> Result<(), HandleError> {
        self.clients
            .release(id)
            .await
            .map_err(|p| HandleError::dependency("catalog could not release stock", &p))
    }

    /// Billing charged the order: `PAID` (a cancelled order stays cancelled; billing
    /// refunds it on its `OrderCancelled`).
    pub async fn paid(&self, id: &OrderId) -> Result<(), HandleError> {
        let mut tx = self.store.begin().await?;
        match self.store.move_in(&mut tx, id, Status::Paid, "").await {
            Ok(Move::Moved) => {
                let created = self
                    .store
                    .order_in(&mut tx, id)
                    .await?
                    .map(|o| o.created_at);
                tx.commit().await.map_err(StoreError::from)?;
                count_transition(Status::Paid, created.unwrap_or_else(now_millis));
                Ok(())
            }
            Ok(Move::Stays(_)) => Ok(()),
            Err(StoreError::NotFound(what)) => Err(HandleError::Permanent(what)),
            Err(err) => Err(err.into()),
        }
    }

    /// Billing could not charge the order: the saga compensates — the order `CANCELLED`
    /// with `OrderCancelled`, whose handling (`released`) gives its stock back. Each step
    /// is idempotent and durable before the next: a crash part way repeats nothing twice
    /// and loses nothing.
    pub async fn payment_failed(&self, id: &OrderId, code: &str) -> Result<(), HandleError> {
        let reason = format!("payment_failed: {code}");
        match self.cancel_in_store(id, &reason).await {
            Ok(Some(_)) => {
                metrics::counter!(series::COMPENSATIONS, "service" => crate::SERVICE.as_str(), "reason" => "payment_failed")
                    .increment(1);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(OrdersError::NotFound(id)) => {
                Err(HandleError::Permanent(format!("no order {id} exists")))
            }
            Err(OrdersError::Store(err)) => Err(err.into()),
            Err(other) => Err(HandleError::Transient(other.to_string())),
        }
    }

    /// An order was cancelled (its `OrderCancelled`, read back by group `orders`): its
    /// stock goes back to catalog. Idempotent (catalog releases once per order id), and
    /// retried until catalog answers, so a cancel never strands reserved stock.
    pub async fn released(&self, id: &OrderId) -> Result<(), HandleError> {
        self.release(id).await
    }

    /// Cancels an order the client no longer wants: `CANCELLED` with `OrderCancelled`
    /// in one transaction, answered at once; the stock goes back when that event is
    /// handled (`released`), and billing refunds a charge. Committing first means a
    /// cancel cut short (a deadline, a crash) has either happened whole or not at all.
    /// Cancelling a cancelled order answers with it unchanged; a rejected one cannot be
    /// cancelled.
    pub async fn cancel(&self, id: &OrderId) -> Result<Order, OrdersError> {
        let order = self.order(id).await?;
        match order.status {
            Status::Cancelled => return Ok(order),
            Status::Rejected => return Err(OrdersError::NotCancellable(id.clone(), "REJECTED")),
            _ => {}
        }
        if self.cancel_in_store(id, "customer").await?.is_some() {
            metrics::counter!(series::COMPENSATIONS, "service" => crate::SERVICE.as_str(), "reason" => "customer")
                .increment(1);
        }
        let now = self.order(id).await?;
        if now.status == Status::Rejected {
            return Err(OrdersError::NotCancellable(id.clone(), "REJECTED"));
        }
        Ok(now)
    }

    /// `CANCELLED` with `OrderCancelled` if it may move there; `Some` when it moved.
    async fn cancel_in_store(&self, id: &OrderId, reason: &str) -> Result<Option<()>, OrdersError> {
        let mut tx = self.store.begin().await?;
        match self
            .store
            .move_in(&mut tx, id, Status::Cancelled, reason)
            .await
        {
            Ok(Move::Moved) => {
                let order = self
                    .store
                    .order_in(&mut tx, id)
                    .await?
                    .ok_or_else(|| OrdersError::NotFound(id.clone()))?;
                let event = events::cancelled(&order, reason);
                outbox::enqueue(&mut tx, Destination::Stream(events::ORDER_EVENTS), &event).await?;
                tx.commit().await.map_err(StoreError::from)?;
                count_transition(Status::Cancelled, order.created_at);
                Ok(Some(()))
            }
            Ok(Move::Stays(_)) => Ok(None),
            Err(StoreError::NotFound(_)) => Err(OrdersError::NotFound(id.clone())),
            Err(err) => Err(err.into()),
        }
    }

    /// The order now, then again each time it moves, until it is final (or the watcher
    /// goes away). Changes this process commits are seen at once; changes by another
    /// process sharing the database within `poll`.
    pub async fn watch(
        &self,
        id: &OrderId,
        poll: Duration,
    ) -> Result<impl Stream<Item = Result<Order, OrdersError>> + Send + 'static, OrdersError> {
        let first = self.order(id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let store = self.store.clone();
        let id = id.clone();
        let mut changes = store.changes();
        tokio::spawn(async move {
            let mut seen = first.history.len();
            let done = first.status.is_final();
            if tx.send(Ok(first)).await.is_err() || done {
                return;
            }
            let mut ticks = tokio::time::interval(poll);
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = ticks.tick() => {}
                    changed = changes.recv() => match changed {
                        Ok(changed) if changed != id => continue,
                        // Ours, or we fell behind: read it either way.
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
                let order = match store.order(&id).await {
                    Ok(Some(order)) => order,
                    Ok(None) => return,
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                };
                if order.history.len() > seen {
                    seen = order.history.len();
                    let done = order.status.is_final();
                    if tx.send(Ok(order)).await.is_err() || done {
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Whether catalog's refusal of a reservation is the order's fate (not enough stock, a
/// product gone, a rule it breaks) rather than a passing or configuration problem
/// (unavailable, rate-limited, unauthenticated...), which is retried.
fn refuses_the_order(problem: &Problem) -> bool {
    matches!(
        problem.kind(),
        Kind::InsufficientStock
            | Kind::NotFound
            | Kind::BusinessRuleViolated
            | Kind::ValidationFailed
            | Kind::InvalidRequest
    )
}

/// What the accept asks other services: whether the user exists and every product's
/// price now (at once, each through its `Downstream`); the lines priced.
async fn check(
    clients: &Clients,
    request: &OrderRequest,
) -> Result<Vec<crate::domain::Line>, Problem> {
    let (user, prices) = tokio::join!(
        clients.user_exists(request.user_id),
        clients.price(&request.lines)
    );
    match user {
        Ok(true) => {}
        Ok(false) => return Err(OrdersError::UnknownUser(request.user_id).into()),
        Err(problem) => return Err(OrdersError::Dependency(problem).into()),
    }
    match prices.map_err(OrdersError::Dependency)? {
        Priced::All(lines) if total_of(&lines).is_none() => Err(OrdersError::TotalTooLarge.into()),
        Priced::All(lines) => Ok(lines),
        Priced::Missing(missing) => Err(OrdersError::UnknownProducts(missing).into()),
    }
}

/// A new order, PENDING, of `request`'s priced `lines`, in the current request's chain.
fn new_order(request: &OrderRequest, lines: Vec<crate::domain::Line>) -> Result<Order, Problem> {
    let now = now_millis();
    let total_minor = total_of(&lines).ok_or_else(|| Problem::from(OrdersError::TotalTooLarge))?;
    Ok(Order {
        seq: 0,
        id: OrderId::generate(),
        user_id: request.user_id,
        status: Status::Pending,
        lines,
        total_minor,
        currency: CURRENCY.to_owned(),
        correlation_id: telemetry::context::current()
            .map(|c| c.correlation_id.to_string())
            .unwrap_or_default(),
        history: vec![Transition {
            status: Status::Pending,
            at: now,
            reason: String::new(),
        }],
        created_at: now,
    })
}

/// Records a new order with its two messages in `tx`.
async fn place_in(
    store: &OrdersStore,
    tx: &mut WriteTx,
    request: &OrderRequest,
    lines: Vec<crate::domain::Line>,
) -> Result<Order, Problem> {
    let mut order = new_order(request, lines)?;
    let store_err = |e: StoreError| Problem::from(OrdersError::Store(e));
    order.seq = store.insert_in(tx, &order).await.map_err(store_err)?;
    outbox::enqueue(
        tx,
        Destination::Queue(events::ORDER_PROCESSING),
        &events::process_order(&order),
    )
    .await
    .map_err(store_err)?;
    outbox::enqueue(
        tx,
        Destination::Stream(events::ORDER_EVENTS),
        &events::created(&order),
    )
    .await
    .map_err(store_err)?;
    let created_at = order.created_at;
    tx.after_commit(move || count_transition(Status::Pending, created_at));
    Ok(order)
}
