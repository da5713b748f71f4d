//! Orders' gRPC face: `OrderService` (`proto/ecommerce/v1/order.proto`), translating
//! between protobuf and the domain and calling the use cases (`app::Orders`), and
//! `OperationsService` (`operations.proto`): the operator's redrive of the dead letters
//! of the queue orders consumes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use idempotency::GrpcWrite;
use problem::{FieldError, Problem};
use proto::v1::operations_service_server::{OperationsService, OperationsServiceServer};
use proto::v1::order::Status as StatusMessage;
use proto::v1::order_service_server::{OrderService, OrderServiceServer};
use proto::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse,
    Order as OrderMessage, OrderItem, OrderTransition, RedriveDeadLettersRequest,
    RedriveDeadLettersResponse, WatchOrderRequest,
};
use server::grpc::{GrpcRoutes, page};
use tonic::{Request, Response, Status};

use crate::app::Orders;
use crate::domain::{Order, OrderId, OrderRequest, Status as OrderStatus, UserId};

/// Largest message a caller may send: 50 lines are well under it.
const MAX_MESSAGE: usize = 64 * 1024;
/// How often a watcher re-reads an order another process may have moved.
const WATCH_POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct OrdersGrpc {
    orders: Arc<Orders>,
}

/// Orders' gRPC services, ready for `server::grpc::face`.
pub fn routes(orders: Arc<Orders>) -> GrpcRoutes {
    let api = OrdersGrpc { orders };
    GrpcRoutes::new()
        .add_service(OrderServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(OperationsServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE))
}

fn status_message(s: OrderStatus) -> StatusMessage {
    match s {
        OrderStatus::Pending => StatusMessage::Pending,
        OrderStatus::Confirmed => StatusMessage::Confirmed,
        OrderStatus::Rejected => StatusMessage::Rejected,
        OrderStatus::Paid => StatusMessage::Paid,
        OrderStatus::Cancelled => StatusMessage::Cancelled,
    }
}

fn order_message(o: Order) -> OrderMessage {
    OrderMessage {
        id: o.id.to_string(),
        user_id: o.user_id.0,
        status: status_message(o.status) as i32,
        items: o
            .lines
            .iter()
            .map(|l| OrderItem {
                // Lines were checked against catalog's int32 ids when accepted.
                product_id: i32::try_from(l.product_id.0).unwrap_or(i32::MAX),
                quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
                unit_price_minor: l.unit_price_minor,
            })
            .collect(),
        total_minor: o.total_minor,
        currency: o.currency,
        history: o
            .history
            .into_iter()
            .map(|t| OrderTransition {
                status: status_message(t.status) as i32,
                at_unix_ms: t.at,
                reason: t.reason,
            })
            .collect(),
        correlation_id: o.correlation_id,
    }
}

fn order_id(raw: &str) -> Result<OrderId, Problem> {
    OrderId::parse(raw).map_err(|e| Problem::validation(vec![FieldError::new("order_id", e)]))
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<OrderMessage, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for OrdersGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<OrderMessage>, Status> {
        let body = request.get_ref();
        let lines: Vec<(i64, i64)> = body
            .items
            .iter()
            .map(|i| (i64::from(i.product_id), i64::from(i.quantity)))
            .collect();
        let asked = OrderRequest::parse(body.user_id, &lines).map_err(|errors| {
            Problem::validation(
                errors
                    .into_iter()
                    .map(|(field, why)| FieldError::new(field, why))
                    .collect(),
            )
        })?;
        let write = GrpcWrite::new("/ecommerce.v1.OrderService/CreateOrder", &request);
        self.orders
            .place(&write, asked, |order| Ok(order_message(order)))
            .await
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<OrderMessage>, Status> {
        let id = order_id(&request.get_ref().order_id)?;
        let order = self.orders.order(&id).await.map_err(Problem::from)?;
        Ok(Response::new(order_message(order)))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let page = page(request.page_size, &request.page_token, "")?;
        if request.user_id < 1 {
            return Err(Problem::validation(vec![FieldError::new(
                "user_id",
                "must be a user id (1 or more)",
            )])
            .into());
        }
        let rows = self
            .orders
            .orders_of(UserId(request.user_id), page.after, page.limit + 1)
            .await
            .map_err(Problem::from)?;
        let listed = server::rest::Page::from_rows(rows, page.limit, |o| o.seq, order_message);
        Ok(Response::new(ListOrdersResponse {
            orders: listed.items,
            next_page_token: listed.next_cursor.unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<OrderMessage>, Status> {
        let id = order_id(&request.get_ref().order_id)?;
        let order = self.orders.cancel(&id).await.map_err(Problem::from)?;
        Ok(Response::new(order_message(order)))
    }

    type WatchOrderStream = OrderStream;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let id = order_id(&request.get_ref().order_id)?;
        let updates = self
            .orders
            .watch(&id, WATCH_POLL)
            .await
            .map_err(Problem::from)?;
        let stream = updates.map(|update| match update {
            Ok(order) => Ok(order_message(order)),
            Err(err) => Err(Status::from(Problem::from(err))),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl OperationsService for OrdersGrpc {
    async fn redrive_dead_letters(
        &self,
        request: Request<RedriveDeadLettersRequest>,
    ) -> Result<Response<RedriveDeadLettersResponse>, Status> {
        let body = request.get_ref();
        let queue = body.queue.clone();
        let limit = usize::try_from(body.limit).map_err(|_| {
            Problem::validation(vec![FieldError::new("limit", "must not be negative")])
        })?;
        let write = GrpcWrite::new(
            "/ecommerce.v1.OperationsService/RedriveDeadLetters",
            &request,
        );
        let answered = queue.clone();
        self.orders
            .redrive_dead_letters(&write, &queue, limit, move |moved| {
                Ok(RedriveDeadLettersResponse {
                    queue: answered,
                    moved: i32::try_from(moved).unwrap_or(i32::MAX),
                })
            })
            .await?
    }
}
