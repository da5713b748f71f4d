//! Compiles `proto/ecommerce/v1/*.proto` with protox (pure Rust, so a fresh machine needs
//! no `protoc`), generates the tonic servers and clients, and writes the descriptor set
//! that server reflection serves.

use std::path::PathBuf;

use prost::Message;

const FILES: [&str; 6] = [
    "ecommerce/v1/product.proto",
    "ecommerce/v1/review.proto",
    "ecommerce/v1/user.proto",
    "ecommerce/v1/inventory.proto",
    "ecommerce/v1/order.proto",
    "ecommerce/v1/operations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_transport(false)
        .codec_path("crate::codec::BrigadeCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
