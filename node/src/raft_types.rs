//! openraft type configuration shared by storage, network and services.

use serde::{Deserialize, Serialize};
use sessiond_state::command::{Batch, Outcome};
use std::io::Cursor;

/// Raft node id.
pub type NodeId = u64;

/// What the cluster membership records about a node: where clients and peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub client_addr: String,
    pub peer_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client={} peer={}", self.client_addr, self.peer_addr)
    }
}

/// Response of one applied log entry: one outcome per command of its batch (empty for blank
/// and membership entries).
pub type BatchResponse = Vec<Outcome>;

openraft::declare_raft_types!(
    /// sessiond's Raft types: log entries carry a [`Batch`] of session commands.
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a node.
pub type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
