//! The client-port gRPC services and what they share.
//!
//! - [`sessions`]: the `Sessions` API (DESIGN §2).
//! - [`cluster`]: the `Cluster` operator API.
//! - [`error`]: statuses with machine-readable `ErrorDetail`s.
//! - [`convert`]: state-machine types ↔ wire types.
//! - [`route`]: who serves a request: this node, or the leader it is forwarded to.

pub mod cluster;
pub mod convert;
pub mod error;
pub mod route;
pub mod sessions;
