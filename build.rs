//! Compiles the etcd v3 protos in `proto/` for client and server use, with the pure-Rust
//! `protox` parser so no system `protoc` is needed.

const PROTOS: &[&str] = &[
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/authpb/auth.proto",
    "etcd/api/etcdserverpb/rpc.proto",
    "etcd/api/v3lockpb/v3lock.proto",
    "etcd/api/v3electionpb/v3election.proto",
    "etcdc/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The shared library's soname carries the ABI version: the crate's major version.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR")?;
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libetcdc.so.{major}");
    let fds = protox::compile(PROTOS, ["proto"])?;
    // etcd's gRPC gateway JSON (grpc-gateway's JSONPb with OrigName): proto field names,
    // 64-bit integers as strings, bytes as base64, enums by name, defaults left out.
    pbjson_build::Builder::new()
        .register_descriptors(&prost::Message::encode_to_vec(&fds))?
        .preserve_proto_field_names()
        // grpc-gateway's decoder, as etcd runs it, takes requests with fields it does not know.
        .ignore_unknown_fields()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
