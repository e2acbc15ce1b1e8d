//! Typed access to the state machine's tables, and the index rows that go with each record.

use crate::codec::{decode, encode};
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::record::{LateCommit, Policy, SessionRecord, TokenRow, Tombstone};
use crate::token::{SessionId, TokenHash};
use serde::de::DeserializeOwned;

/// Decode the value under `key`, if any.
pub(crate) fn get<T: DeserializeOwned, R: KvRead + ?Sized>(
    kv: &R,
    cf: Cf,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    match kv.get(cf, key)? {
        Some(b) => Ok(Some(decode(&b)?)),
        None => Ok(None),
    }
}

pub(crate) fn session<R: KvRead + ?Sized>(
    kv: &R,
    id: &SessionId,
) -> Result<Option<SessionRecord>, StorageError> {
    get(kv, Cf::Sessions, &keys::session(id))
}

pub(crate) fn tombstone<R: KvRead + ?Sized>(
    kv: &R,
    id: &SessionId,
) -> Result<Option<Tombstone>, StorageError> {
    get(kv, Cf::Tombstones, &keys::session(id))
}

pub(crate) fn token_row<R: KvRead + ?Sized>(
    kv: &R,
    h: &TokenHash,
) -> Result<Option<TokenRow>, StorageError> {
    get(kv, Cf::Tokens, &keys::token(h))
}

/// State-machine time (0 before the first entry).
pub(crate) fn clock<R: KvRead + ?Sized>(kv: &R) -> Result<u64, StorageError> {
    match kv.get(Cf::Meta, keys::CLOCK)? {
        Some(b) => {
            let arr: [u8; 8] = b
                .as_slice()
                .try_into()
                .map_err(|_| StorageError("clock is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(arr))
        }
        None => Ok(0),
    }
}

pub(crate) fn set_clock<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, now: u64) {
    txn.put(Cf::Meta, keys::CLOCK.to_vec(), now.to_be_bytes().to_vec());
}

/// The policy in force (the default before any `Configure`).
pub(crate) fn policy<R: KvRead + ?Sized>(kv: &R) -> Result<Policy, StorageError> {
    Ok(get(kv, Cf::Meta, keys::POLICY)?.unwrap_or_default())
}

pub(crate) fn set_policy<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, p: &Policy) {
    txn.put(Cf::Meta, keys::POLICY.to_vec(), encode(p));
}

/// The recent late commits, oldest first.
pub(crate) fn late_commits<R: KvRead + ?Sized>(kv: &R) -> Result<Vec<LateCommit>, StorageError> {
    Ok(get(kv, Cf::Meta, keys::LATE_COMMITS)?.unwrap_or_default())
}

/// Record a late commit, keeping the newest [`LateCommit::KEPT`].
pub(crate) fn push_late_commit<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    late: LateCommit,
) -> Result<(), StorageError> {
    let mut all = late_commits(txn)?;
    all.push(late);
    if all.len() > LateCommit::KEPT {
        let drop = all.len() - LateCommit::KEPT;
        all.drain(..drop);
    }
    txn.put(Cf::Meta, keys::LATE_COMMITS.to_vec(), encode(&all));
    Ok(())
}

pub(crate) fn put_token<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, h: &TokenHash, row: TokenRow) {
    txn.put(Cf::Tokens, keys::token(h), encode(&row));
}

/// Write a record and keep its expiry row and its `users` row (whose value is the deadline)
/// at its current deadline. `old` is the record as it was (None for a new one, which
/// [`insert_session`] writes), whose rows are replaced.
pub(crate) fn put_session<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    old: Option<&SessionRecord>,
    new: &SessionRecord,
) {
    let moved = old.is_none_or(|old| old.expires_at() != new.expires_at());
    if let Some(old) = old.filter(|_| moved) {
        txn.delete(
            Cf::Expiry,
            keys::expiry(ExpiryKind::Session, old.expires_at(), &old.id.0),
        );
    }
    if moved {
        // The key (user, created_at, id) never changes; only the deadline in the value does.
        txn.put(
            Cf::Users,
            keys::user(&new.user_id, new.created_at, &new.id),
            new.expires_at().to_be_bytes().to_vec(),
        );
    }
    txn.put(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Session, new.expires_at(), &new.id.0),
        Vec::new(),
    );
    txn.put(Cf::Sessions, keys::session(&new.id), encode(new));
}

/// Write a new record with all of its index rows, counting it in its user's session count.
pub(crate) fn insert_session<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    rec: &SessionRecord,
) -> Result<(), StorageError> {
    let n = user_count(txn, &rec.user_id)?;
    set_user_count(txn, &rec.user_id, n.saturating_add(1));
    put_session(txn, None, rec);
    Ok(())
}

/// Every token hash a record knows: current first, then retired generations.
pub(crate) fn token_hashes(rec: &SessionRecord) -> Vec<TokenHash> {
    std::iter::once(rec.token_hash)
        .chain(rec.retired.iter().map(|r| r.hash))
        .collect()
}

/// Remove a record with its user row and expiry row, uncounting it from its user's session
/// count (token rows are the caller's choice).
pub(crate) fn delete_session<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    rec: &SessionRecord,
) -> Result<(), StorageError> {
    let n = user_count(txn, &rec.user_id)?;
    set_user_count(txn, &rec.user_id, n.saturating_sub(1));
    txn.delete(Cf::Sessions, keys::session(&rec.id));
    txn.delete(Cf::Users, keys::user(&rec.user_id, rec.created_at, &rec.id));
    txn.delete(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Session, rec.expires_at(), &rec.id.0),
    );
    Ok(())
}

/// How many session rows (live or expired but not yet swept) a user has.
pub(crate) fn user_count<R: KvRead + ?Sized>(kv: &R, user_id: &str) -> Result<u64, StorageError> {
    match kv.get(Cf::Users, &keys::user_count(user_id))? {
        Some(b) => {
            let arr: [u8; 8] = b
                .as_slice()
                .try_into()
                .map_err(|_| StorageError("user session count is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(arr))
        }
        None => Ok(0),
    }
}

/// Store a user's session count; a count of 0 is no row, so a user without sessions leaves
/// nothing behind.
fn set_user_count<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, user_id: &str, n: u64) {
    if n == 0 {
        txn.delete(Cf::Users, keys::user_count(user_id));
    } else {
        txn.put(
            Cf::Users,
            keys::user_count(user_id),
            n.to_be_bytes().to_vec(),
        );
    }
}

/// One session row of the `users` index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub id: SessionId,
    /// The record's `expires_at()`, kept in step by [`put_session`].
    pub expires_at: u64,
}

/// Up to `limit` of a user's session rows, oldest first (by created_at, then id). Reads only
/// the index, no record.
pub(crate) fn user_rows<R: KvRead + ?Sized>(
    kv: &R,
    user_id: &str,
    limit: usize,
) -> Result<Vec<UserRow>, StorageError> {
    let prefix = keys::user_sessions(user_id);
    let end = keys::prefix_end(&prefix);
    let rows = kv.scan(Cf::Users, &prefix, end.as_deref(), limit)?;
    rows.iter()
        .map(|(k, v)| {
            let bad = || StorageError("malformed users row".into());
            let (_, id) = keys::parse_user(k).ok_or_else(bad)?;
            let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| bad())?;
            Ok(UserRow {
                id,
                expires_at: u64::from_be_bytes(arr),
            })
        })
        .collect()
}

/// The session ids listed for a user, oldest first.
pub(crate) fn user_ids<R: KvRead + ?Sized>(
    kv: &R,
    user_id: &str,
) -> Result<Vec<SessionId>, StorageError> {
    Ok(user_rows(kv, user_id, usize::MAX)?
        .into_iter()
        .map(|r| r.id)
        .collect())
}
