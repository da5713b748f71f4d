//! The from-memory `ProductService` of `bare-grpc` (and of `grpc-layers`, which puts it
//! behind Brigade's own hosting): product 1 and every page of 50 (the first, and each
//! later one by its `page_token`), copied once from a running Brigade catalog over gRPC,
//! answered with the same generated server and codec.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::{Stream, StreamExt};
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::product_service_server::ProductService;
use proto::v1::{
    BatchGetProductsRequest, BatchGetProductsResponse, CreateProductRequest, ListProductsRequest,
    ProductRequest, ProductResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The page size `bench/grpc.sh` asks for, and so the most this server streams.
const PAGE: usize = 50;

/// What the bare server answers with.
pub struct Canned {
    one: ProductResponse,
    /// Every page of [`PAGE`] products by its token (`""` for the first).
    pages: HashMap<String, Arc<[ProductResponse]>>,
}

type ProductStream = Pin<Box<dyn Stream<Item = Result<ProductResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProductService for Canned {
    async fn get_product(
        &self,
        request: Request<ProductRequest>,
    ) -> Result<Response<ProductResponse>, Status> {
        if request.get_ref().product_id == self.one.id {
            Ok(Response::new(self.one.clone()))
        } else {
            Err(Status::not_found("only product 1 is served"))
        }
    }

    type ListProductsStream = ProductStream;

    /// One message per item, like Brigade's stream (tonic's encoder batches them into
    /// HTTP/2 DATA frames the same way for both).
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ProductStream>, Status> {
        let request = request.into_inner();
        let Some(page) = self.pages.get(&request.page_token) else {
            return Err(Status::invalid_argument("no such page_token"));
        };
        let n = match usize::try_from(request.page_size) {
            Ok(0) => page.len(),
            Ok(n) => n.min(page.len()),
            Err(_) => return Err(Status::invalid_argument("page_size must not be negative")),
        };
        let page = Arc::clone(page);
        let stream = futures::stream::iter(0..n).map(move |i| Ok(page[i].clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_product(
        &self,
        _request: Request<CreateProductRequest>,
    ) -> Result<Response<ProductResponse>, Status> {
        Err(Status::unimplemented("bare-grpc only reads"))
    }

    async fn batch_get_products(
        &self,
        _request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        Err(Status::unimplemented("bare-grpc only reads"))
    }
}

/// Product 1 and every page, as Brigade sends them.
pub async fn fetch(from: &str) -> anyhow::Result<Canned> {
    let channel = Channel::from_shared(from.to_owned())
        .with_context(|| format!("{from} is not a URL"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {from}"))?;
    let mut client = ProductServiceClient::new(channel);
    let one = client
        .get_product(ProductRequest { product_id: 1 })
        .await
        .with_context(|| format!("GetProduct(1) on {from}"))?
        .into_inner();
    let pages = super::pages::crawl(&mut client, PAGE, from).await?;
    if pages.first().is_none_or(|(_, page)| page.len() != PAGE) {
        bail!("ListProducts(page_size {PAGE}) on {from} did not stream a whole first page");
    }
    Ok(Canned {
        one,
        pages: pages.into_iter().collect(),
    })
}
