//! Whole-state consistency checks used by tests: every index row is implied by a record or a
//! tombstone, and every record or tombstone has all of its index rows.

use crate::codec::decode;
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, Pairs, StorageError};
use crate::record::{DedupRow, SessionRecord, TokenRow, Tombstone};
use crate::token::SessionId;
use std::collections::{BTreeMap, BTreeSet};

fn all<R: KvRead + ?Sized>(kv: &R, cf: Cf) -> Result<Pairs, StorageError> {
    kv.scan(cf, &[], None, usize::MAX)
}

/// Ok when the `tokens`, `users` and `expiry` indexes equal what the records and tombstones
/// imply; otherwise a description of the first difference found.
pub fn check<R: KvRead + ?Sized>(kv: &R) -> Result<Result<(), String>, StorageError> {
    let mut sessions = BTreeMap::new();
    for (_, v) in all(kv, Cf::Sessions)? {
        let r: SessionRecord = decode(&v)?;
        sessions.insert(r.id, r);
    }
    let mut tombstones = BTreeMap::new();
    for (_, v) in all(kv, Cf::Tombstones)? {
        let t: Tombstone = decode(&v)?;
        tombstones.insert(t.id, t);
    }
    // What the indexes must hold.
    let mut tokens = BTreeMap::new();
    let mut users = BTreeSet::new();
    let mut expiry = BTreeSet::new();
    let mut feed = BTreeSet::new();
    for r in sessions.values() {
        if tombstones.contains_key(&r.id) {
            return Ok(Err(format!("{:?} is both live and tombstoned", r.id)));
        }
        tokens.insert(
            r.token_hash.0.to_vec(),
            TokenRow {
                id: r.id,
                generation: r.generation,
            },
        );
        for t in &r.retired {
            tokens.insert(
                t.hash.0.to_vec(),
                TokenRow {
                    id: r.id,
                    generation: t.generation,
                },
            );
        }
        users.insert(keys::user(&r.user_id, &r.id));
        expiry.insert(keys::expiry(ExpiryKind::Session, r.expires_at(), &r.id.0));
    }
    let mut tomb_tokens: BTreeMap<Vec<u8>, SessionId> = BTreeMap::new();
    for t in tombstones.values() {
        for h in &t.token_hashes {
            tomb_tokens.insert(h.0.to_vec(), t.id);
        }
        expiry.insert(keys::expiry(ExpiryKind::Tombstone, t.expires_at, &t.id.0));
        feed.insert(t.feed_key.clone());
    }
    for (k, v) in all(kv, Cf::Dedup)? {
        let d: DedupRow = decode(&v)?;
        if k != d.request_id.0 {
            return Ok(Err("dedup row under the wrong key".into()));
        }
        expiry.insert(keys::expiry(
            ExpiryKind::Dedup,
            d.expires_at,
            &d.request_id.0,
        ));
    }

    for (k, v) in all(kv, Cf::Tokens)? {
        let row: TokenRow = decode(&v)?;
        match (tokens.remove(&k), tomb_tokens.remove(&k)) {
            (Some(want), _) if want == row => {}
            (None, Some(id)) if id == row.id => {}
            _ => return Ok(Err(format!("token row for {:?} is not implied", row.id))),
        }
    }
    if let Some((_, row)) = tokens.into_iter().next() {
        return Ok(Err(format!("{:?} lacks a token row", row.id)));
    }
    if let Some((_, id)) = tomb_tokens.into_iter().next() {
        return Ok(Err(format!("tombstone {id:?} lacks a token row")));
    }
    let have_users: BTreeSet<Vec<u8>> = all(kv, Cf::Users)?.into_iter().map(|(k, _)| k).collect();
    if have_users != users {
        return Ok(Err("users index differs from the records".into()));
    }
    let have_expiry: BTreeSet<Vec<u8>> = all(kv, Cf::Expiry)?.into_iter().map(|(k, _)| k).collect();
    if have_expiry != expiry {
        return Ok(Err("expiry index differs from the records".into()));
    }
    let have_feed: BTreeSet<Vec<u8>> = all(kv, Cf::Revocations)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if !feed.is_subset(&have_feed) {
        return Ok(Err("a tombstone's revocation event is missing".into()));
    }
    Ok(Ok(()))
}
