//! The client-port API: the cores that hold its behaviour and the adapters that expose them.
//!
//! - [`sessions`]: the sessions core — every `Sessions` operation as a function of the caller
//!   and a typed request, routing leader-only calls to the leader; no transport types.
//! - [`grpc`]: the gRPC adapter of the sessions core, and `ApiError` ↔ gRPC status.
//! - [`json`]: the HTTP/JSON adapter of the same core, on the same port, and `ApiError` ↔
//!   HTTP status + JSON `ErrorDetail`.
//! - [`openapi`]: the OpenAPI description of the JSON adapter, derived from the descriptors.
//! - [`cluster`]: the `Cluster` operator service (operator role only).
//! - [`caller`]: the authenticated caller and the one role check.
//! - [`error`]: `ApiError`: a failure kind plus the machine-readable `ErrorDetail`.
//! - [`convert`]: state-machine types ↔ wire types.
//! - [`route`]: who serves a request: this node, or the leader it is forwarded to.

pub mod caller;
pub mod cluster;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod json;
pub mod openapi;
pub mod route;
pub mod sessions;
