//! Whole-state consistency checks used by tests: every index row is implied by a record or a
//! tombstone, and every record or tombstone has all of its index rows. The `users` index
//! holds, per session, a row keyed (user, created_at, id) whose value is the record's
//! deadline, and per user with sessions a count row equal to the number of those rows.

use crate::codec::decode;
use crate::command::Reply;
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
    let mut per_user = BTreeMap::new();
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
            keys::user(&r.user_id, r.created_at, &r.id),
            r.expires_at().to_be_bytes().to_vec(),
        );
        *per_user.entry(r.user_id.as_str()).or_insert(0u64) += 1;
        expiry.insert(keys::expiry(ExpiryKind::Session, r.expires_at(), &r.id.0));
    }
    for (user, n) in per_user {
        users.insert(keys::user_count(user), n.to_be_bytes().to_vec());
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
        if let Ok(reply) = &d.outcome {
            if keeps_content(reply) {
                return Ok(Err("dedup row keeps session content".into()));
            }
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

/// Whether a remembered reply still carries a session's data or attributes, which dedup rows
/// leave out (see [`crate::dedup`]).
fn keeps_content(reply: &Reply) -> bool {
    match reply {
        Reply::Created { session, .. }
        | Reply::Rotated { session, .. }
        | Reply::Updated { session, .. }
        | Reply::Touched { session, .. } => {
            !session.data.is_empty() || !session.attributes.is_empty()
        }
        Reply::Configured
        | Reply::Revoked { .. }
        | Reply::RevokedUser { .. }
        | Reply::ReuseHandled { .. }
        | Reply::Expired { .. }
        | Reply::LeaderCommitted => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::apply_batch;
    use crate::codec::encode;
    use crate::command::{Batch, Command, Target};
    use crate::kv::{MemKv, Txn, WriteSet};
    use crate::token::{RequestId, SealKey, Token};

    const T0: u64 = 1_000_000;
    const PRINCIPAL: &str = "app";

    fn apply(kv: &mut MemKv, index: u64, stamp_ms: u64, commands: Vec<Command>) {
        let mut txn = Txn::new(&*kv);
        apply_batch(&mut txn, index, &Batch { stamp_ms, commands }).unwrap();
        let w = txn.into_writes();
        kv.commit(&w);
    }

    /// A live session rotated twice, a revoked one, and dedup rows.
    fn state() -> (MemKv, SessionRecord, Tombstone) {
        let mut kv = MemKv::new();
        let rid = |n: u8| RequestId::from_bytes([n; 16]);
        let tok = |n: u8| Token::from_bytes([n; 32]);
        let create = |n: u8| Command::Create {
            request_id: rid(n).key(PRINCIPAL),
            id: SessionId([n; 16]),
            token_hash: tok(n).hash(),
            sealed_token: rid(n).seal(&SealKey::from_bytes([7; 32]), &SessionId([n; 16]), &tok(n)),
            user_id: "u".into(),
            data: vec![],
            attributes: BTreeMap::new(),
            idle_timeout_ms: None,
            absolute_timeout_ms: None,
        };
        let rotate = |n: u8, from: u8, to: u8| Command::Rotate {
            request_id: rid(n).key(PRINCIPAL),
            token_hash: tok(from).hash(),
            new_token_hash: tok(to).hash(),
            sealed_successor: tok(from).seal(&tok(to)),
        };
        apply(&mut kv, 1, T0, vec![create(1), create(2)]);
        apply(&mut kv, 2, T0 + 60_000, vec![rotate(3, 1, 11)]);
        apply(&mut kv, 3, T0 + 120_000, vec![rotate(4, 11, 12)]);
        apply(
            &mut kv,
            4,
            T0 + 120_000,
            vec![Command::Revoke {
                request_id: rid(5).key(PRINCIPAL),
                target: Target::Id(SessionId([2; 16])),
                reason: String::new(),
            }],
        );
        assert_eq!(check(&kv).unwrap(), Ok(()));
        let rec: SessionRecord = crate::tables::session(&kv, &SessionId([1; 16]))
            .unwrap()
            .unwrap();
        assert_eq!(rec.retired.len(), 2);
        let t = crate::tables::tombstone(&kv, &SessionId([2; 16]))
            .unwrap()
            .unwrap();
        (kv, rec, t)
    }

    fn damaged(edit: impl FnOnce(&mut WriteSet, &SessionRecord, &Tombstone)) -> String {
        let (mut kv, rec, t) = state();
        let mut w = WriteSet::default();
        edit(&mut w, &rec, &t);
        kv.commit(&w);
        check(&kv).unwrap().expect_err("damage must be found")
    }

    #[test]
    fn every_kind_of_damage_is_found() {
        let user_row = |r: &SessionRecord| keys::user(&r.user_id, r.created_at, &r.id);
        damaged(|w, r, _| w.delete(Cf::Users, user_row(r)));
        // A row whose deadline is not the record's.
        damaged(|w, r, _| w.put(Cf::Users, user_row(r), vec![0; 8]));
        damaged(|w, r, _| {
            let due = r.expires_at() + 1;
            w.put(Cf::Users, user_row(r), due.to_be_bytes().to_vec())
        });
        // Under another creation time, or another user.
        damaged(|w, r, _| {
            let due = r.expires_at().to_be_bytes().to_vec();
            w.delete(Cf::Users, user_row(r));
            w.put(
                Cf::Users,
                keys::user(&r.user_id, r.created_at + 1, &r.id),
                due,
            )
        });
        damaged(|w, r, _| {
            let due = r.expires_at().to_be_bytes().to_vec();
            w.put(Cf::Users, keys::user("v", r.created_at, &r.id), due)
        });
        // A count off by one, missing, or left for a user without sessions.
        damaged(|w, r, _| {
            w.put(
                Cf::Users,
                keys::user_count(&r.user_id),
                2u64.to_be_bytes().to_vec(),
            )
        });
        damaged(|w, r, _| w.delete(Cf::Users, keys::user_count(&r.user_id)));
        damaged(|w, _, _| {
            w.put(
                Cf::Users,
                keys::user_count("v"),
                0u64.to_be_bytes().to_vec(),
            )
        });
        damaged(|w, r, _| {
            w.delete(
                Cf::Expiry,
                keys::expiry(ExpiryKind::Session, r.expires_at(), &r.id.0),
            )
        });
        damaged(|w, r, _| {
            w.put(
                Cf::Expiry,
                keys::expiry(ExpiryKind::Session, r.expires_at() + 1, &r.id.0),
                vec![],
            )
        });
        damaged(|w, r, _| w.delete(Cf::Tokens, keys::token(&r.retired[0].hash)));
        damaged(|w, r, _| {
            let row = TokenRow {
                id: r.id,
                generation: 0,
            };
            w.put(Cf::Tokens, keys::token(&r.token_hash), encode(&row))
        });
        damaged(|w, _, _| {
            let row = TokenRow {
                id: SessionId([9; 16]),
                generation: 0,
            };
            w.put(Cf::Tokens, vec![9; 32], encode(&row))
        });
        damaged(|w, _, t| w.delete(Cf::Tokens, keys::token(&t.token_hashes[0])));
        damaged(|w, _, t| w.delete(Cf::Revocations, t.feed_key.clone()));
        damaged(|w, _, _| w.put(Cf::Revocations, keys::revocation(99, 0), vec![]));
        damaged(|w, _, t| {
            w.delete(
                Cf::Expiry,
                keys::expiry(ExpiryKind::Tombstone, t.expires_at, &t.id.0),
            )
        });
        damaged(|w, r, _| {
            let mut t = r.clone();
            t.id = SessionId([2; 16]);
            w.put(Cf::Sessions, keys::session(&t.id), encode(&t))
        });
        damaged(|w, _, _| {
            let k = RequestId::from_bytes([1; 16]).key(PRINCIPAL);
            let due = T0 + crate::record::Policy::default().dedup_window_ms;
            w.delete(Cf::Expiry, keys::expiry(ExpiryKind::Dedup, due, &k.0))
        });
        damaged(|w, _, _| {
            // The rotation's remembered answer, with the session's data kept in it.
            let k = RequestId::from_bytes([3; 16]).key(PRINCIPAL);
            let (kv, _, _) = state();
            let mut row: DedupRow = crate::tables::get(&kv, Cf::Dedup, &keys::dedup(&k))
                .unwrap()
                .unwrap();
            if let Ok(Reply::Rotated { session, .. }) = &mut row.outcome {
                session.data = vec![1];
            }
            w.put(Cf::Dedup, keys::dedup(&k), encode(&row))
        });
        let broken = |f: fn(&mut SessionRecord)| {
            damaged(|w, r, _| {
                let mut r = r.clone();
                f(&mut r);
                w.put(Cf::Sessions, keys::session(&r.id), encode(&r))
            })
        };
        broken(|r| r.retired.swap(0, 1));
        broken(|r| r.retired[0].sealed_successor = r.retired[1].sealed_successor);
        broken(|r| r.last_rotated_at = None);
        broken(|r| r.version = 0);
    }
}
