//! The sessiond server: Raft (openraft) over RocksDB, the `Sessions` and `Cluster` gRPC
//! services on the client port, the `Raft` service on the peer port, and `sessiond dev`.
//!
//! - [`store`]: RocksDB log store, state-machine store, snapshots, read views.
//! - [`network`]: Raft traffic between nodes.
//! - [`batcher`]: coalesces concurrent commands into one log entry.
//! - [`reads`]: linearizable reads with shared leadership checks.
//! - [`api`]: the client-port services.
//! - [`sweeper`]: expiry by log entries.
//! - [`node`]: wiring and bootstrap; [`config`]: flags, env and TOML; [`dev`]: local cluster.

pub mod api;
pub mod batcher;
pub mod clock;
pub mod config;
pub mod dev;
pub mod freshness;
pub mod http;
pub mod metrics;
pub mod network;
pub mod node;
pub mod observe;
pub mod raft_types;
pub mod reads;
pub mod store;
pub mod sweeper;
