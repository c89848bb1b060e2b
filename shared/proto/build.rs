//! Generates the gRPC code from proto/orrery_agent_v1.proto with a protoc
//! binary from crates.io, so building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/orrery_agent_v1.proto");
    tonic_build::configure().compile_protos(&["proto/orrery_agent_v1.proto"], &["proto"])?;
    Ok(())
}
