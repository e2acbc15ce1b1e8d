//! Whole-state consistency checks used by tests: every index row is implied by a record or a
//! tombstone, and every record or tombstone has all of its index rows.

use crate::codec::decode;
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, Pairs, StorageError};
use crate::record::{DedupRow, RevocationEvent, SessionRecord, TokenRow, Tombstone};
use crate::token::SessionId;
use std::collections::{BTreeMap, BTreeSet};

fn all<R: KvRead + ?Sized>(kv: &R, cf: Cf) -> Result<Pairs, StorageError> {
    kv.scan(cf, &[], None, usize::MAX)
}

/// Ok when the `tokens`, `users`, `expiry` and `revocations` tables hold exactly what the
/// records, tombstones and dedup rows imply (and each record is well formed); otherwise a
/// description of the first difference found. Reads everything: for tests and diagnostics.
pub fn check<R: KvRead + ?Sized>(kv: &R) -> Result<Result<(), String>, StorageError> {
    let mut sessions = BTreeMap::new();
    for (k, v) in all(kv, Cf::Sessions)? {
        let r: SessionRecord = decode(&v)?;
        if k != keys::session(&r.id) {
            return Ok(Err(format!("session {:?} stored under another key", r.id)));
        }
        if let Err(e) = well_formed(&r) {
            return Ok(Err(format!("session {:?}: {e}", r.id)));
        }
        sessions.insert(r.id, r);
    }
    let mut tombstones = BTreeMap::new();
    for (k, v) in all(kv, Cf::Tombstones)? {
        let t: Tombstone = decode(&v)?;
        if k != keys::session(&t.id) {
            return Ok(Err(format!(
                "tombstone {:?} stored under another key",
                t.id
            )));
        }
        tombstones.insert(t.id, t);
    }
    // What the indexes must hold.
    let mut tokens = BTreeMap::new();
    let mut users = BTreeMap::new();
    let mut expiry = BTreeSet::new();
    let mut feed = BTreeMap::new();
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
        users.insert(
            keys::user(&r.user_id, &r.id),
            r.created_at.to_be_bytes().to_vec(),
        );
        expiry.insert(keys::expiry(ExpiryKind::Session, r.expires_at(), &r.id.0));
    }
    let mut tomb_tokens: BTreeMap<Vec<u8>, SessionId> = BTreeMap::new();
    for t in tombstones.values() {
        for h in &t.token_hashes {
            let k = h.0.to_vec();
            if tokens.contains_key(&k) || tomb_tokens.insert(k, t.id).is_some() {
                return Ok(Err(format!("{:?} claims a token hash owned twice", t.id)));
            }
        }
        expiry.insert(keys::expiry(ExpiryKind::Tombstone, t.expires_at, &t.id.0));
        if feed.insert(t.feed_key.clone(), t.id).is_some() {
            return Ok(Err(format!(
                "{:?} shares a feed key with another tombstone",
                t.id
            )));
        }
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
    let have_users: BTreeMap<Vec<u8>, Vec<u8>> = all(kv, Cf::Users)?.into_iter().collect();
    if have_users != users {
        return Ok(Err("users index differs from the records".into()));
    }
    let have_expiry: BTreeSet<Vec<u8>> = all(kv, Cf::Expiry)?.into_iter().map(|(k, _)| k).collect();
    if have_expiry != expiry {
        return Ok(Err("expiry index differs from the records".into()));
    }
    // Every feed entry belongs to a live tombstone (it is removed with it), and names it.
    let have_feed = all(kv, Cf::Revocations)?;
    if have_feed.len() != feed.len() {
        return Ok(Err("revocation feed differs from the tombstones".into()));
    }
    for (k, v) in have_feed {
        let event: RevocationEvent = decode(&v)?;
        if feed.get(&k) != Some(&event.id) {
            return Ok(Err(format!(
                "revocation event of {:?} is not its tombstone's",
                event.id
            )));
        }
    }
    Ok(Ok(()))
}

/// A record's own consistency: generations below the current one, oldest first, and only the
/// newest retired generation still holding a sealed successor.
fn well_formed(r: &SessionRecord) -> Result<(), &'static str> {
    if r.version == 0 {
        return Err("version 0");
    }
    let mut next = None;
    for t in r.retired.iter().rev() {
        if t.generation >= next.unwrap_or(r.generation) {
            return Err("retired generations out of order");
        }
        if next.is_some() && t.sealed_successor.is_some() {
            return Err("an older retired generation keeps a sealed successor");
        }
        next = Some(t.generation);
    }
    if r.retired
        .last()
        .is_some_and(|t| t.generation + 1 != r.generation || t.sealed_successor.is_none())
    {
        return Err("the previous generation is not retired with its successor");
    }
    if r.generation > 0 && r.retired.is_empty() {
        return Err("rotated, but no retired generation kept");
    }
    if r.last_rotated_at.is_some() != (r.generation > 0) {
        return Err("last_rotated_at disagrees with the generation");
    }
    Ok(())
}
