fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from a crate, so building needs no system install.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let files = [
        "proto/sessiond/v1/sessions.proto",
        "proto/sessiond/v1/cluster.proto",
        "proto/sessiond/v1/raft.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("sessiond_descriptor.bin"))
        .compile_protos(&files, &["proto"])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
