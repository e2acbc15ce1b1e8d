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
pub mod leadership;
pub mod metrics;
pub mod network;
pub mod node;
pub mod observe;
pub mod raft_types;
pub mod reads;
pub mod recovery;
pub mod signal;
pub mod store;
pub mod sweeper;
pub mod tls;

/// The deliberately planted bugs compiled into this build (Cargo features used only by the
/// chaos harness to prove it catches them). A node of such a build refuses to start unless the
/// harness allows it explicitly (see [`node::NodeHooks`] and [`ALLOW_PLANTED_BUGS_ENV`]).
pub const PLANTED_BUGS: &[&str] = &[
    #[cfg(feature = "planted-stale-reads")]
    "planted-stale-reads",
    #[cfg(feature = "planted-lagging-follower")]
    "planted-lagging-follower",
    #[cfg(feature = "planted-wall-clock-stamp")]
    "planted-wall-clock-stamp",
];

/// Set to `1` to let a binary with [`PLANTED_BUGS`] serve (tests of the harness only).
pub const ALLOW_PLANTED_BUGS_ENV: &str = "SESSIOND_TEST_ALLOW_PLANTED_BUGS";
