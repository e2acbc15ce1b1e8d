//! Revocation: a session is deleted and leaves a tombstone that answers `REVOKED` for the
//! session and every one of its tokens until the session's absolute expiry, after which none
//! of them could be valid anyway. Nothing can write to or re-create a tombstoned id.

use crate::codec::encode;
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::record::{RevocationEvent, SessionRecord, Tombstone};
use crate::tables;

/// Where the current log entry's revocations go in the feed.
pub(crate) struct Feed {
    pub index: u64,
    pub seq: u32,
}

/// Revoke `rec` for `reason` at `now`.
pub(crate) fn revoke<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    feed: &mut Feed,
    rec: &SessionRecord,
    reason: &str,
    now: u64,
) -> Result<(), StorageError> {
    tables::delete_session(txn, rec)?;
    let feed_key = keys::revocation(feed.index, feed.seq);
    feed.seq = feed.seq.wrapping_add(1);
    let event = RevocationEvent {
        index: feed.index,
        id: rec.id,
        user_id: rec.user_id.clone(),
        reason: reason.to_string(),
        revoked_at: now,
    };
    txn.put(Cf::Revocations, feed_key.clone(), encode(&event));
    let t = Tombstone {
        id: rec.id,
        user_id: rec.user_id.clone(),
        reason: reason.to_string(),
        revoked_at: now,
        expires_at: rec.absolute_expires_at,
        token_hashes: tables::token_hashes(rec),
        feed_key,
    };
    txn.put(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Tombstone, t.expires_at, &t.id.0),
        Vec::new(),
    );
    txn.put(Cf::Tombstones, keys::session(&rec.id), encode(&t));
    Ok(())
}

/// Remove a finished tombstone with its token rows and feed entry.
pub(crate) fn remove<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, t: &Tombstone) {
    for h in &t.token_hashes {
        txn.delete(Cf::Tokens, keys::token(h));
    }
    txn.delete(Cf::Revocations, t.feed_key.clone());
    txn.delete(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Tombstone, t.expires_at, &t.id.0),
    );
    txn.delete(Cf::Tombstones, keys::session(&t.id));
}
