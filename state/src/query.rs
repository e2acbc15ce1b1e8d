//! The read side: answers computed from applied state without writing.

use crate::command::{SessionError, SessionView};
use crate::kv::{KvRead, StorageError};
use crate::record::{Policy, RevocationEvent, SessionRecord};
use crate::token::{SessionId, TokenHash};

/// A token that validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub session: SessionRecord,
    /// The token is the previous generation, inside its grace window.
    pub superseded: bool,
    /// `GetSession(touch)` should write a `Touch`: the last activity is older than the
    /// touch interval.
    pub touch_due: bool,
}

/// State-machine time: the largest leader stamp applied so far.
pub fn clock<R: KvRead + ?Sized>(kv: &R) -> Result<u64, StorageError> {
    let _ = kv;
    todo!()
}

/// The cluster policy in force.
pub fn policy<R: KvRead + ?Sized>(kv: &R) -> Result<Policy, StorageError> {
    let _ = kv;
    todo!()
}

/// Validate a presented token at time `now_ms` (the caller passes
/// `max(local clock, clock(kv))`).
pub fn by_token<R: KvRead + ?Sized>(
    kv: &R,
    token: &TokenHash,
    now_ms: u64,
) -> Result<Result<Lookup, SessionError>, StorageError> {
    let _ = (kv, token, now_ms);
    todo!()
}

/// A live session by id (`REVOKED`/`EXPIRED`/`NOT_FOUND` otherwise).
pub fn by_id<R: KvRead + ?Sized>(
    kv: &R,
    id: &SessionId,
    now_ms: u64,
) -> Result<Result<SessionRecord, SessionError>, StorageError> {
    let _ = (kv, id, now_ms);
    todo!()
}

/// The user's live sessions, oldest first.
pub fn list_user<R: KvRead + ?Sized>(
    kv: &R,
    user_id: &str,
    now_ms: u64,
) -> Result<Vec<SessionView>, StorageError> {
    let _ = (kv, user_id, now_ms);
    todo!()
}

/// True when the expiry index holds a row due at `now_ms`: the leader then proposes `Expire`.
pub fn expiry_due<R: KvRead + ?Sized>(kv: &R, now_ms: u64) -> Result<bool, StorageError> {
    let _ = (kv, now_ms);
    todo!()
}

/// Revocation events with `index >= from_index`, at most `limit`, in log order.
pub fn revocations_from<R: KvRead + ?Sized>(
    kv: &R,
    from_index: u64,
    limit: usize,
) -> Result<Vec<RevocationEvent>, StorageError> {
    let _ = (kv, from_index, limit);
    todo!()
}
