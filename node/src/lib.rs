//! The sessiond server: Raft (openraft) over RocksDB, the `Sessions` and `Cluster` gRPC
//! services on the client port, the `Raft` service on the peer port, and `sessiond dev`.

pub mod raft_types;
pub mod store;
