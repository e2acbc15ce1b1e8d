//! Fuzz targets of sessiond.
//!
//! Every decoder that reads bytes from outside the process, and the state machine itself, as
//! functions of one input that panic on a finding ([`targets`]). The test files in `tests/`
//! run each under bolero: as ordinary tests (random inputs for a bounded time, after
//! replaying the target's corpus in `tests/__fuzz__/<target>/corpus/`), or for as long as
//! wanted with `scripts/fuzz.sh TARGET SECONDS`.
//!
//! | target (test) | what it feeds |
//! |---|---|
//! | `grpc_requests` | client-port request messages, then the handlers' checks ([`targets::grpc`]) |
//! | `peer_envelopes` | Raft envelopes and openraft messages from peers ([`targets::peer`]) |
//! | `log_entries` | log entry payloads, applied to a populated state ([`targets::log`]) |
//! | `snapshot_streams` | snapshot streams and files, installed into RocksDB ([`targets::snapshot`]) |
//! | `config_toml` | the configuration file ([`targets::config`]) |
//! | `differential` | command sequences, state machine against [`model`] ([`targets::differential`]) |

pub mod alloc;
pub mod arbitrary;
pub mod input;
pub mod model;
pub mod seeds;
pub mod targets;

use std::time::Duration;

/// How long each target runs as an ordinary test: bounded, so that the test suite (and CI)
/// ends. `BOLERO_RANDOM_TEST_TIME_MS` (bolero's own variable) overrides it, and
/// `BOLERO_RANDOM_ITERATIONS` bounds the run by inputs instead.
pub const TEST_TIME: Duration = Duration::from_secs(12);
