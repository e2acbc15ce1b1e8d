//! The sessiond server: Raft (openraft) over RocksDB, the `Sessions` and `Cluster` gRPC
//! services on the client port, the `Raft` service on the peer port, and `sessiond dev`.
//!
//! - [`store`]: RocksDB log store, state-machine store, snapshots, read views.
//! - [`network`]: Raft traffic between nodes.
//! - [`batcher`]: coalesces concurrent commands into one log entry.
//! - [`reads`]: linearizable reads with shared leadership checks.
//! - [`api`]: the client-port API: the sessions core and its gRPC adapter, the Cluster service.
//! - [`auth`]: the authentication layer in front of the client port.
//! - [`credentials`]: TLS material, access list and seal key of a node, reloadable.
//! - [`tls`]: serving over TLS.
//! - [`sweeper`]: expiry by log entries.
//! - [`node`]: wiring and bootstrap; [`config`]: flags, env and TOML; [`dev`]: local cluster;
//!   [`certs`]: `sessiond certs`.

pub mod api;
pub mod auth;
pub mod batcher;
pub mod certs;
pub mod clock;
pub mod config;
pub mod credentials;
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
pub mod tls;
