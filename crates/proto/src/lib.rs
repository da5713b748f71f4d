//! Brigade's gRPC contracts, generated from `proto/ecommerce/v1/*.proto` at build time:
//! messages, servers and clients for `ProductService`, `ReviewService`, `UserService`,
//! `InventoryService`, `OrderService` and `OperationsService`, plus the descriptor set
//! server reflection serves.
#![forbid(unsafe_code)]

pub mod codec;

pub mod ecommerce {
    pub mod v1 {
        // Generated code: its lints are prost's and tonic's business.
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ecommerce.v1");
    }
}

pub use ecommerce::v1;

/// The encoded `FileDescriptorSet` of every Brigade proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
