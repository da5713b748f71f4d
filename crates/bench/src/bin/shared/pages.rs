//! Every page of a catalog's `ListProducts`, for `bare-grpc` (which serves them from
//! memory) and `grpc-load` (which spreads its calls over them).

use std::sync::Arc;

use anyhow::Context;
use proto::v1::product_service_client::ProductServiceClient;
use proto::v1::{ListProductsRequest, ProductResponse};
use tonic::Status;
use tonic::transport::Channel;

/// Every page of `size` products with its `page_token`, from the first to the last (which
/// may be empty, when the catalog fills its pages exactly): the
/// token of the page after one is the REST cursor after its last product (the catalog
/// takes the same opaque cursor on both faces).
pub async fn crawl(
    client: &mut ProductServiceClient<Channel>,
    size: usize,
    from: &str,
) -> anyhow::Result<Vec<(String, Arc<[ProductResponse]>)>> {
    let page_size = i32::try_from(size).context("page size")?;
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(client, page_size, &token).await.with_context(|| {
            format!("ListProducts(page_size {size}, page_token {token:?}) on {from}")
        })?;
        let next = match page.last() {
            Some(last) if page.len() == size => server::rest::encode_cursor(i64::from(last.id)),
            _ => String::new(),
        };
        // The last page too, even empty: a client that crawls a copy asks for it.
        pages.push((token, page.into()));
        if next.is_empty() {
            return Ok(pages);
        }
        token = next;
    }
}

/// One `ListProducts` call's messages.
pub async fn list(
    client: &mut ProductServiceClient<Channel>,
    page_size: i32,
    page_token: &str,
) -> Result<Vec<ProductResponse>, Status> {
    let mut stream = client
        .list_products(ListProductsRequest {
            page_size,
            page_token: page_token.to_owned(),
        })
        .await?
        .into_inner();
    let mut page = Vec::new();
    while let Some(product) = stream.message().await? {
        page.push(product);
    }
    Ok(page)
}
