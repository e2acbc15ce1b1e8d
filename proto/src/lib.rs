//! Wire types of sessiond: the `Sessions` client API, the `Cluster` operator API and the
//! internal `Raft` peer service, generated from `proto/sessiond/v1/*.proto`.
//!
//! This crate holds types only; behaviour lives in the server and client crates.

#![allow(clippy::all, missing_docs)]

/// Package `sessiond.v1`.
pub mod v1 {
    tonic::include_proto!("sessiond.v1");
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sessiond_descriptor");

/// Name of the binary gRPC metadata entry that carries an encoded [`v1::ErrorDetail`].
pub const ERROR_DETAIL_KEY: &str = "sessiond-error-bin";

/// Name of the response metadata entry by which a node that forwarded a call to the leader
/// names the leader's client address, so that clients send the next leader-only call there.
pub const LEADER_KEY: &str = "sessiond-leader";
