//! Wire types of sessiond: the `Sessions` client API, the `Cluster` operator API and the
//! internal `Raft` peer service, generated from `proto/sessiond/v1/*.proto`.
//!
//! This crate holds types only; behaviour lives in the server and client crates.

#![allow(clippy::all, missing_docs)]

/// Package `sessiond.v1`.
pub mod v1 {
    tonic::include_proto!("sessiond.v1");
    include!(concat!(env!("OUT_DIR"), "/sessiond.v1.serde.rs"));
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sessiond_descriptor");

/// Largest message either end of the client port sends or accepts: servers and the client
/// crate use the same limit, so nothing a server may send is refused by its client. Session
/// data is at most 64 KiB by default; list pages stay below 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Name of the binary gRPC metadata entry that carries an encoded [`v1::ErrorDetail`].
pub const ERROR_DETAIL_KEY: &str = "sessiond-error-bin";

/// Name of the response metadata entry by which a node that forwarded a call to the leader
/// names the leader's advertised client address, so that clients send the next leader-only
/// call there. [`LEADER_ID_KEY`] accompanies it.
pub const LEADER_KEY: &str = "sessiond-leader";

/// Name of the response metadata entry that accompanies [`LEADER_KEY`] with the leader's node
/// id (decimal). A client finds the leader among its endpoints by this id (learnt from
/// [`NODE_KEY`]), whatever names it reaches the nodes by; the address is only a fallback.
pub const LEADER_ID_KEY: &str = "sessiond-leader-id";

/// Name of the response metadata entry by which every answer of a node's client port,
/// success or error, names the node that answered: its node id (decimal). A client learns
/// from it which node each of its endpoints reaches.
pub const NODE_KEY: &str = "sessiond-node";
