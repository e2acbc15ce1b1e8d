//! Typed access to the state machine's tables, and the index rows that go with each record.

use crate::codec::{decode, encode};
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::record::{Policy, SessionRecord, TokenRow, Tombstone};
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

pub(crate) fn put_token<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, h: &TokenHash, row: TokenRow) {
    txn.put(Cf::Tokens, keys::token(h), encode(&row));
}

/// Write a record and keep its expiry row at its current deadline. `old` is the record as it
/// was (None for a new one), whose expiry row is replaced.
pub(crate) fn put_session<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    old: Option<&SessionRecord>,
    new: &SessionRecord,
) {
    if let Some(old) = old {
        if old.expires_at() != new.expires_at() {
            txn.delete(
                Cf::Expiry,
                keys::expiry(ExpiryKind::Session, old.expires_at(), &old.id.0),
            );
        }
    }
    txn.put(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Session, new.expires_at(), &new.id.0),
        Vec::new(),
    );
    txn.put(Cf::Sessions, keys::session(&new.id), encode(new));
}

/// Every token hash a record knows: current first, then retired generations.
pub(crate) fn token_hashes(rec: &SessionRecord) -> Vec<TokenHash> {
    std::iter::once(rec.token_hash)
        .chain(rec.retired.iter().map(|r| r.hash))
        .collect()
}

/// Remove a record with its user row and expiry row (token rows are the caller's choice).
pub(crate) fn delete_session<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, rec: &SessionRecord) {
    txn.delete(Cf::Sessions, keys::session(&rec.id));
    txn.delete(Cf::Users, keys::user(&rec.user_id, &rec.id));
    txn.delete(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Session, rec.expires_at(), &rec.id.0),
    );
}

/// The session ids listed for a user, in key order.
pub(crate) fn user_ids<R: KvRead + ?Sized>(
    kv: &R,
    user_id: &str,
) -> Result<Vec<SessionId>, StorageError> {
    let prefix = keys::user_prefix(user_id);
    let end = keys::prefix_end(&prefix);
    let rows = kv.scan(Cf::Users, &prefix, end.as_deref(), usize::MAX)?;
    Ok(rows
        .iter()
        .filter(|(k, _)| k.len() == prefix.len() + 16)
        .filter_map(|(k, _)| keys::user_key_id(k))
        .collect())
}
