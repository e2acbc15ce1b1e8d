//! sessiond's chaos harness: simulated browsers (several tabs sharing a cookie jar) drive a
//! cluster while a seeded nemesis partitions, kills, pauses and reconfigures it; the
//! recorded history is then checked against a model of the semantics written here, apart
//! from the node's own state machine, so a bug shared by both cannot pass unnoticed.
//!
//! - [`history`]: the JSONL history format and the run's clock.
//! - [`cluster`]: the faults a layer offers; [`inproc`] implements them in-process,
//!   [`docker`] with containers, iptables and the Docker API.
//! - [`check`]: the checker (linearizability per session and direct invariants).
//! - [`policy`]: the session policy chaos clusters run with.
//! - [`browser`]: the workload; [`nemesis`]: the faults; [`run`]: a run of schedules.
//! - [`probe`]: a scripted stale-read scenario (the planted-bug proof that cannot miss).

pub mod browser;
pub mod check;
pub mod cluster;
pub mod docker;
pub mod history;
pub mod inproc;
pub mod nemesis;
pub mod policy;
pub mod probe;
pub mod run;
pub mod secure;
