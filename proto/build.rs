fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from a crate, so building needs no system install.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let files = [
        "proto/sessiond/v1/sessions.proto",
        "proto/sessiond/v1/cluster.proto",
        "proto/sessiond/v1/raft.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("sessiond_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(&files, &["proto"])?;
    // Canonical proto3 JSON for the HTTP/JSON API, generated from the same descriptors, so
    // the JSON form of every message follows the .proto files without hand-written serde.
    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".sessiond.v1"])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
