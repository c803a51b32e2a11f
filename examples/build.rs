//! Compiles `proto/tools.proto` without a system `protoc`: protox parses it
//! into a `FileDescriptorSet`, tonic-prost-build generates the messages,
//! client and server from that set, and the encoded set is written next to
//! them (`tools_descriptor.bin`) for `capnagent_examples::grpc::pb::FILE_DESCRIPTOR_SET`,
//! which the capability layer decodes request messages with.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tools.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tools_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
