//! Catalog's gRPC face: the seed's `ProductService` (plus `BatchGetProducts`),
//! `ReviewService` and `InventoryService`, translating between protobuf and the domain and
//! calling the use cases (`app::Catalog`). Errors come from the one table through
//! `Problem`'s conversion to `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use idempotency::GrpcWrite;
use problem::{FieldError, Problem};
use proto::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use proto::v1::product_service_server::{ProductService, ProductServiceServer};
use proto::v1::review_service_server::{ReviewService, ReviewServiceServer};
use proto::v1::{
    BatchGetProductsRequest, BatchGetProductsResponse, BatchListReviewsRequest,
    BatchListReviewsResponse, CreateProductRequest, CreateReviewRequest, ListProductsRequest,
    ListReviewsRequest, ListReviewsResponse, ProductRequest, ProductResponse, ProductReviews,
    ReleaseStockRequest, Reservation as ReservationMessage, ReservationLine as LineMessage,
    ReserveStockRequest, Review as ReviewMessage,
};
use server::grpc::{GrpcRoutes, page};
use tonic::{Request, Response, Status};

use crate::app::Catalog;
use crate::domain::{
    NewProduct, NewReservation, NewReview, OrderId, Product, ProductId, Reservation,
    ReservationState, Review, ReviewId,
};

/// Largest message a caller may send; a create is a few hundred bytes.
const MAX_MESSAGE: usize = 64 * 1024;
/// Products fetched per database round trip while streaming.
const STREAM_BATCH: u32 = 200;
#[derive(Clone)]
pub struct CatalogGrpc {
    catalog: Arc<Catalog>,
}

/// The catalog's gRPC services, ready for `server::grpc::face`.
pub fn routes(catalog: Arc<Catalog>) -> GrpcRoutes {
    let api = CatalogGrpc { catalog };
    GrpcRoutes::new()
        .add_service(ProductServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(ReviewServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(InventoryServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE))
}

fn product_message(p: &Product) -> Result<ProductResponse, Problem> {
    Ok(ProductResponse {
        id: int32(p.id.0, "id")?,
        name: p.name.as_str().to_owned(),
        price: p.price.to_decimal(),
        // Stock is at most i32::MAX by the domain's rule.
        stock: int32(p.stock.units(), "stock")?,
    })
}

/// The proto carries int32 ids (the seed's choice); a larger id cannot be represented.
fn int32(value: i64, what: &str) -> Result<i32, Problem> {
    i32::try_from(value).map_err(|_| {
        Problem::internal(std::io::Error::other(format!(
            "{what} {value} exceeds int32"
        )))
    })
}

fn review_message(r: Review) -> Result<ReviewMessage, Problem> {
    Ok(ReviewMessage {
        id: r.id.0,
        product_id: int32(r.product_id.0, "product_id")?,
        user_id: r.user_id.0,
        rating: i32::from(r.rating.stars()),
        comment: r.comment.map(|c| c.as_str().to_owned()).unwrap_or_default(),
    })
}

type ProductStream = Pin<Box<dyn Stream<Item = Result<ProductResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProductService for CatalogGrpc {
    async fn get_product(
        &self,
        request: Request<ProductRequest>,
    ) -> Result<Response<ProductResponse>, Status> {
        let id = ProductId(i64::from(request.into_inner().product_id));
        let product = self.catalog.product(id).await.map_err(Problem::from)?;
        Ok(Response::new(product_message(&product)?))
    }

    type ListProductsStream = ProductStream;

    /// Streams products in id order, fetching them from the database a batch at a time
    /// (memory stays flat however many there are) and stopping at the caller's deadline.
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ProductStream>, Status> {
        let request = request.into_inner();
        if request.page_size < 0 {
            return Err(Problem::validation(vec![FieldError::new(
                "page_size",
                "must not be negative (0 streams every product)",
            )])
            .into());
        }
        // page_size 0 streams everything, so only the token is validated here.
        let start = page(0, &request.page_token, "")?.after;
        let limit = (request.page_size > 0).then_some(request.page_size as u64);
        // The stream is polled after this handler returns, outside the deadline's scope:
        // carry the deadline along.
        let deadline = telemetry::deadline::current();
        let state = Streaming {
            catalog: Arc::clone(&self.catalog),
            after: start.map(ProductId),
            left: limit,
            buffer: Vec::new().into_iter(),
            done: false,
            deadline,
        };
        let stream = futures::stream::unfold(state, Streaming::next);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<ProductResponse>, Status> {
        let body = request.get_ref();
        let new = NewProduct::parse(&body.name, body.price, i64::from(body.stock))
            .map_err(Problem::validation)?;
        let write = GrpcWrite::new("/ecommerce.v1.ProductService/CreateProduct", &request);
        self.catalog
            .create_product(&write, new, |product| product_message(&product))
            .await
    }

    async fn batch_get_products(
        &self,
        request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        let ids: Vec<ProductId> = request
            .into_inner()
            .product_ids
            .into_iter()
            .map(|id| ProductId(i64::from(id)))
            .collect();
        let looked_up = self
            .catalog
            .products_by_id(&ids)
            .await
            .map_err(Problem::from)?;
        Ok(Response::new(BatchGetProductsResponse {
            products: looked_up
                .found
                .iter()
                .map(product_message)
                .collect::<Result<_, _>>()?,
            missing_ids: looked_up
                .missing
                .into_iter()
                .map(|id| int32(id.0, "product_id"))
                .collect::<Result<_, _>>()?,
        }))
    }
}

/// The state of one `ListProducts` stream.
struct Streaming {
    catalog: Arc<Catalog>,
    after: Option<ProductId>,
    /// Products still to send; `None` for all.
    left: Option<u64>,
    buffer: std::vec::IntoIter<Arc<Product>>,
    done: bool,
    deadline: Option<tokio::time::Instant>,
}

impl Streaming {
    async fn next(mut self) -> Option<(Result<ProductResponse, Status>, Self)> {
        if self.done || self.left == Some(0) {
            return None;
        }
        if self
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            self.done = true;
            let status: Status = Problem::new(problem::Kind::Timeout)
                .with_detail("the call's deadline passed while streaming")
                .into();
            return Some((Err(status), self));
        }
        let product = match self.buffer.next() {
            Some(p) => p,
            None => {
                // A bounded stream needs no more rows than it has left to send.
                let want = self.left.map_or(STREAM_BATCH, |left| {
                    u32::try_from(left).map_or(STREAM_BATCH, |l| l.min(STREAM_BATCH))
                });
                let batch = match self.catalog.products(self.after, want).await {
                    Ok(batch) => batch,
                    Err(err) => {
                        self.done = true;
                        return Some((Err(Problem::from(err).into()), self));
                    }
                };
                let mut batch = batch.into_iter();
                let first = batch.next()?;
                self.buffer = batch;
                first
            }
        };
        self.after = Some(product.id);
        self.left = self.left.map(|n| n - 1);
        let item = product_message(&product).map_err(Status::from);
        Some((item, self))
    }
}

#[tonic::async_trait]
impl ReviewService for CatalogGrpc {
    async fn list_reviews(
        &self,
        request: Request<ListReviewsRequest>,
    ) -> Result<Response<ListReviewsResponse>, Status> {
        let request = request.into_inner();
        let page = page(request.page_size, &request.page_token, "")?;
        let product = ProductId(i64::from(request.product_id));
        let rows = self
            .catalog
            .reviews(product, page.after.map(ReviewId), page.limit + 1)
            .await
            .map_err(Problem::from)?;
        let listed = server::rest::Page::from_rows(rows, page.limit, |r| r.id.0, review_message);
        Ok(Response::new(ListReviewsResponse {
            reviews: listed.items.into_iter().collect::<Result<_, _>>()?,
            next_page_token: listed.next_cursor.unwrap_or_default(),
        }))
    }

    async fn create_review(
        &self,
        request: Request<CreateReviewRequest>,
    ) -> Result<Response<ReviewMessage>, Status> {
        let body = request.get_ref();
        let comment = (!body.comment.is_empty()).then_some(body.comment.as_str());
        let new = NewReview::parse(
            ProductId(i64::from(body.product_id)),
            body.user_id,
            i64::from(body.rating),
            comment,
        )
        .map_err(Problem::validation)?;
        let write = GrpcWrite::new("/ecommerce.v1.ReviewService/CreateReview", &request);
        self.catalog
            .create_review(&write, new, review_message)
            .await
    }

    async fn batch_list_reviews(
        &self,
        request: Request<BatchListReviewsRequest>,
    ) -> Result<Response<BatchListReviewsResponse>, Status> {
        let request = request.into_inner();
        let per_product = match request.per_product_limit {
            0 => DEFAULT_REVIEWS_PER_PRODUCT,
            n @ 1..=MAX_REVIEWS_PER_PRODUCT => n.unsigned_abs(),
            _ => {
                return Err(Problem::validation(vec![FieldError::new(
                    "per_product_limit",
                    format!("must be between 1 and {MAX_REVIEWS_PER_PRODUCT} (0: the default)"),
                )])
                .into());
            }
        };
        let ids: Vec<ProductId> = request
            .product_ids
            .into_iter()
            .map(|id| ProductId(i64::from(id)))
            .collect();
        let looked_up = self
            .catalog
            .reviews_of(&ids, per_product)
            .await
            .map_err(Problem::from)?;
        Ok(Response::new(BatchListReviewsResponse {
            products: looked_up
                .found
                .into_iter()
                .map(|(id, reviews)| {
                    Ok::<_, Problem>(ProductReviews {
                        product_id: int32(id.0, "product_id")?,
                        reviews: reviews
                            .into_iter()
                            .map(review_message)
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, _>>()?,
            missing_ids: looked_up
                .missing
                .into_iter()
                .map(|id| int32(id.0, "product_id"))
                .collect::<Result<_, _>>()?,
        }))
    }
}

/// `BatchListReviews` without a `per_product_limit`, and its largest.
const DEFAULT_REVIEWS_PER_PRODUCT: u32 = 20;
const MAX_REVIEWS_PER_PRODUCT: i32 = 100;

fn reservation_message(r: Reservation) -> Result<ReservationMessage, Problem> {
    use proto::v1::reservation::State;
    let state = match r.state {
        ReservationState::Reserved => State::Reserved,
        ReservationState::Released => State::Released,
    };
    Ok(ReservationMessage {
        order_id: r.order_id.as_str().to_owned(),
        state: state as i32,
        lines: r
            .lines
            .into_iter()
            .map(|l| {
                Ok(LineMessage {
                    product_id: int32(l.product_id.0, "product_id")?,
                    quantity: int32(l.quantity.units(), "quantity")?,
                })
            })
            .collect::<Result<_, Problem>>()?,
    })
}

#[tonic::async_trait]
impl InventoryService for CatalogGrpc {
    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReservationMessage>, Status> {
        let request = request.into_inner();
        let lines: Vec<(i64, i64)> = request
            .lines
            .iter()
            .map(|l| (i64::from(l.product_id), i64::from(l.quantity)))
            .collect();
        let new = NewReservation::parse(&request.order_id, &lines).map_err(Problem::validation)?;
        let reservation = self.catalog.reserve(&new).await.map_err(Problem::from)?;
        Ok(Response::new(reservation_message(reservation)?))
    }

    async fn release_stock(
        &self,
        request: Request<ReleaseStockRequest>,
    ) -> Result<Response<ReservationMessage>, Status> {
        let order = OrderId::parse(&request.into_inner().order_id)
            .map_err(|r| Problem::validation(vec![FieldError::new("order_id", r)]))?;
        let reservation = self.catalog.release(&order).await.map_err(Problem::from)?;
        Ok(Response::new(reservation_message(reservation)?))
    }
}
