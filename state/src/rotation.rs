//! What a presented token means, and rotating it.
//!
//! A token is the current generation, the previous one inside its grace window (accepted,
//! "superseded"), or a reuse of a rotated-away generation. Racing rotations of one token all
//! receive the successor the first one produced, which the previous generation keeps sealed
//! for exactly that purpose.

use crate::apply::Applied;
use crate::command::{Reply, SessionError, Successor};
use crate::kv::{KvRead, StorageError, Txn};
use crate::record::{LateCommit, Policy, RetiredToken, SessionRecord, TokenRow, Tombstone};
use crate::tables;
use crate::token::{SealedToken, TokenHash};

/// How a presented token relates to its session's generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generation {
    Current,
    /// The previous generation, inside its grace window.
    Superseded,
    /// Any other rotated-away generation, or the previous one after its grace window.
    Reused,
}

/// What the store knows about a presented token.
pub(crate) enum Presented {
    Unknown,
    Revoked(Tombstone),
    Known {
        rec: SessionRecord,
        generation: Generation,
        expired: bool,
    },
}

/// Classify `hash` at time `now`, without writing.
pub(crate) fn classify<R: KvRead + ?Sized>(
    kv: &R,
    policy: &Policy,
    hash: &TokenHash,
    now: u64,
) -> Result<Presented, StorageError> {
    let Some(TokenRow { id, generation }) = tables::token_row(kv, hash)? else {
        return Ok(Presented::Unknown);
    };
    if let Some(t) = tables::tombstone(kv, &id)? {
        return Ok(Presented::Revoked(t));
    }
    let Some(rec) = tables::session(kv, &id)? else {
        return Ok(Presented::Unknown);
    };
    let expired = rec.expires_at() <= now;
    let previous = generation.checked_add(1) == Some(rec.generation);
    let generation = if generation == rec.generation {
        Generation::Current
    } else if previous && in_grace(kv, policy, &rec, generation, now)? {
        Generation::Superseded
    } else {
        Generation::Reused
    };
    Ok(Presented::Known {
        rec,
        generation,
        expired,
    })
}

/// Whether retired `generation` of `rec` is inside its grace window at `now`, counted from
/// when its rotation became visible.
fn in_grace<R: KvRead + ?Sized>(
    kv: &R,
    policy: &Policy,
    rec: &SessionRecord,
    generation: u64,
    now: u64,
) -> Result<bool, StorageError> {
    match rec
        .retired
        .iter()
        .rev()
        .find(|r| r.generation == generation)
    {
        Some(r) => since_rotation(kv, r, policy.grace_window_ms, now),
        None => Ok(false),
    }
}

/// Whether `now` is less than `window` after the rotation that retired `r` became visible:
/// at the rotation's own time, unless a new leader committed it late ([`LateCommit`]). The
/// late commits are read only when they could change the answer.
fn since_rotation<R: KvRead + ?Sized>(
    kv: &R,
    r: &RetiredToken,
    window: u64,
    now: u64,
) -> Result<bool, StorageError> {
    if r.retired_at.saturating_add(window) > now {
        return Ok(true);
    }
    let late = tables::late_commits(kv)?;
    let visible = LateCommit::visible_at(&late, r.retired_index, r.retired_at);
    Ok(visible.saturating_add(window) > now)
}

/// A token that may be used: the record and whether the token is superseded.
pub(crate) enum Accepted {
    Ok(SessionRecord, bool),
    /// A reuse: the caller decides what it costs (revocation under the `revoke` policy).
    Reused(SessionRecord),
    Refused(SessionError),
}

/// The answer any operation gives for a presented token.
pub(crate) fn accept(p: Presented) -> Accepted {
    match p {
        Presented::Unknown => Accepted::Refused(SessionError::NotFound),
        Presented::Revoked(t) => Accepted::Refused(SessionError::Revoked { reason: t.reason }),
        Presented::Known { expired: true, .. } => Accepted::Refused(SessionError::Expired),
        Presented::Known {
            rec, generation, ..
        } => match generation {
            Generation::Current => Accepted::Ok(rec, false),
            Generation::Superseded => Accepted::Ok(rec, true),
            Generation::Reused => Accepted::Reused(rec),
        },
    }
}

/// Rotate `rec` (presented with `presented`, already accepted) at `now`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rotate<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    policy: &Policy,
    rec: SessionRecord,
    superseded: bool,
    presented: &TokenHash,
    new_hash: &TokenHash,
    sealed: SealedToken,
    now: u64,
    index: u64,
) -> Applied {
    if superseded {
        // A racing (or retried) rotation of the previous generation: hand back the successor
        // the first rotation produced.
        let stored = rec
            .retired
            .iter()
            .rev()
            .find(|r| r.hash == *presented)
            .and_then(|r| r.sealed_successor);
        return match stored {
            Some(s) => Ok(Reply::Rotated {
                session: (&rec).into(),
                successor: Successor::Sealed(s),
                replayed: true,
            }),
            None => Err(SessionError::TokenReused.into()),
        };
    }
    if let Some(last) = rec.retired.last() {
        // Counted from when the last rotation became visible, as the grace window is: the two
        // are equal under the default policy, so a token is never two generations behind
        // inside its window.
        if since_rotation(txn, last, policy.rotation_min_interval_ms, now)? {
            return Ok(Reply::Rotated {
                session: (&rec).into(),
                successor: Successor::Unchanged,
                replayed: false,
            });
        }
    }
    if tables::token_row(txn, new_hash)?.is_some() {
        return Err(SessionError::InvalidArgument(
            "successor token collides with a known token".into(),
        )
        .into());
    }
    let old = rec.clone();
    let mut next = rec;
    for r in &mut next.retired {
        r.sealed_successor = None;
    }
    next.retired.push(RetiredToken {
        generation: next.generation,
        hash: next.token_hash,
        retired_at: now,
        retired_index: index,
        sealed_successor: Some(sealed),
    });
    let keep = policy.retired_generations as usize;
    if next.retired.len() > keep {
        let drop = next.retired.len() - keep;
        for r in next.retired.drain(..drop) {
            txn.delete(crate::kv::Cf::Tokens, crate::keys::token(&r.hash));
        }
    }
    next.generation += 1;
    next.version += 1;
    next.token_hash = *new_hash;
    next.last_rotated_at = Some(now);
    next.last_active_at = now;
    tables::put_token(
        txn,
        new_hash,
        TokenRow {
            id: next.id,
            generation: next.generation,
        },
    );
    tables::put_session(txn, Some(&old), &next);
    Ok(Reply::Rotated {
        session: (&next).into(),
        successor: Successor::Sealed(sealed),
        replayed: false,
    })
}
