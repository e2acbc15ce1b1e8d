//! Exactly-once mutations: the outcome of every request id is remembered for the dedup
//! window, and a replay gets it back. Refusals are remembered too, so a retry can never turn
//! a refused request into an applied one.

use crate::codec::encode;
use crate::command::{Outcome, Reply, SessionError};
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::record::{DedupRow, OpKind};
use crate::tables;
use crate::token::RequestKey;

/// The remembered answer for `key`, if it is still inside its window.
pub(crate) fn replay<R: KvRead + ?Sized>(
    kv: &R,
    key: &RequestKey,
    op: OpKind,
    now: u64,
) -> Result<Option<Outcome>, StorageError> {
    let Some(row) = tables::get::<DedupRow, _>(kv, Cf::Dedup, &keys::dedup(key))? else {
        return Ok(None);
    };
    if row.expires_at <= now {
        return Ok(None);
    }
    if row.op != op {
        return Ok(Some(Err(SessionError::InvalidArgument(
            "request_id was already used for a different operation".into(),
        ))));
    }
    Ok(Some(mark_replayed(row.outcome)))
}

/// Remember `outcome` for `key` until `now + window`.
pub(crate) fn remember<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    key: &RequestKey,
    op: OpKind,
    outcome: &Outcome,
    now: u64,
    window: u64,
) -> Result<(), StorageError> {
    let k = keys::dedup(key);
    if let Some(old) = tables::get::<DedupRow, _>(txn, Cf::Dedup, &k)? {
        txn.delete(
            Cf::Expiry,
            keys::expiry(ExpiryKind::Dedup, old.expires_at, &key.0),
        );
    }
    let row = DedupRow {
        request_id: *key,
        op,
        expires_at: now.saturating_add(window),
        outcome: outcome.clone(),
    };
    txn.put(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Dedup, row.expires_at, &key.0),
        Vec::new(),
    );
    txn.put(Cf::Dedup, k, encode(&row));
    Ok(())
}

fn mark_replayed(outcome: Outcome) -> Outcome {
    outcome.map(Reply::into_replayed)
}
