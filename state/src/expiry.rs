//! Sweeping due rows of the expiry index: sessions past their deadline (with their tokens and
//! user row), finished tombstones, and dedup rows past their window.

use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::record::DedupRow;
use crate::token::{RequestKey, SessionId};
use crate::{tables, tombstone};

/// Counts of swept rows by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    pub sessions: u32,
    pub tombstones: u32,
    pub dedup: u32,
}

/// Due rows of one kind at `now`, at most `limit`.
pub(crate) fn due<R: KvRead + ?Sized>(
    kv: &R,
    kind: ExpiryKind,
    now: u64,
    limit: usize,
) -> Result<Vec<(u64, [u8; 16])>, StorageError> {
    let start = [kind as u8];
    let mut end = vec![kind as u8];
    end.extend_from_slice(&now.saturating_add(1).to_be_bytes());
    let rows = kv.scan(Cf::Expiry, &start, Some(&end), limit)?;
    Ok(rows
        .iter()
        .filter_map(|(k, _)| keys::parse_expiry(k))
        .filter(|(k, due, _)| *k == kind && *due <= now)
        .map(|(_, due, key)| (due, key))
        .collect())
}

/// Sweep up to `limit` due rows at `now`.
pub(crate) fn sweep<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    now: u64,
    limit: u32,
) -> Result<Swept, StorageError> {
    let mut left = limit as usize;
    let mut swept = Swept::default();
    for kind in ExpiryKind::ALL {
        if left == 0 {
            break;
        }
        for (due_at, key) in due(txn, kind, now, left)? {
            left -= 1;
            // The due row goes in every case: either its owner goes with it, or the row is
            // stale (its owner moved or is gone) and must not be scanned again.
            txn.delete(Cf::Expiry, keys::expiry(kind, due_at, &key));
            match kind {
                ExpiryKind::Session => {
                    let id = SessionId(key);
                    if let Some(rec) = tables::session(txn, &id)? {
                        if rec.expires_at() <= now {
                            for h in tables::token_hashes(&rec) {
                                txn.delete(Cf::Tokens, keys::token(&h));
                            }
                            tables::delete_session(txn, &rec)?;
                            swept.sessions += 1;
                        }
                    }
                }
                ExpiryKind::Tombstone => {
                    if let Some(t) = tables::tombstone(txn, &SessionId(key))? {
                        if t.expires_at <= now {
                            tombstone::remove(txn, &t);
                            swept.tombstones += 1;
                        }
                    }
                }
                ExpiryKind::Dedup => {
                    let dk = keys::dedup(&RequestKey(key));
                    if let Some(d) = tables::get::<DedupRow, _>(txn, Cf::Dedup, &dk)? {
                        if d.expires_at <= now {
                            txn.delete(Cf::Dedup, dk);
                            swept.dedup += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(swept)
}
