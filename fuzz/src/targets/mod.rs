//! The fuzz targets. Each is a function of one input's bytes that panics on a finding; the
//! test files in `tests/` run them under bolero.

pub mod config;
pub mod differential;
pub mod grpc;
pub mod log;
pub mod peer;
pub mod snapshot;
