//! The session state machine of sessiond.
//!
//! Apply is a deterministic function of (state, log index, batch of commands stamped with the
//! leader's clock): no clock, no randomness, no I/O beyond the [`kv::KvRead`] seam. Every
//! replica, the unit tests and the property tests run the same code, so the same log gives
//! byte-identical state everywhere.
//!
//! - [`command`]: what the log carries and what apply answers.
//! - [`apply`]: the entry point that applies one batch.
//! - [`query`]: the read side used by `GetSession`, `ListUserSessions` and the expiry sweeper.
//! - [`dedup`]: exactly-once mutations, scoped to a principal and bound to the request.
//! - [`invariants`]: checks that every index equals what the records imply.
//! - Inside: `rotation` (token states, rotating), `tombstone` (revocation), `expiry`
//!   (sweeping), `tables` and `keys` (storage layout).

pub mod apply;
pub mod codec;
pub mod command;
pub mod dedup;
mod expiry;
pub mod invariants;
pub mod keys;
pub mod kv;
pub mod limits;
pub mod query;
pub mod record;
mod rotation;
mod tables;
pub mod token;
mod tombstone;
