//! What a presented token means, and rotating it.
//!
//! A token is the current generation, the previous one inside its grace window (accepted,
//! "superseded"), or a reuse of a rotated-away generation. Racing rotations of one token all
//! receive the successor the first one produced, which the previous generation keeps sealed
//! for exactly that purpose.

use crate::apply::Applied;
use crate::command::{Reply, SessionError, Successor};
use crate::kv::{KvRead, StorageError, Txn};
use crate::record::{Policy, RetiredToken, SessionRecord, TokenRow, Tombstone};
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
    let generation = if generation == rec.generation {
        Generation::Current
    } else if generation.checked_add(1) == Some(rec.generation)
        && rec
            .retired
            .iter()
            .rev()
            .find(|r| r.generation == generation)
            .is_some_and(|r| r.retired_at.saturating_add(policy.grace_window_ms) > now)
    {
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
    if let Some(t) = rec.last_rotated_at {
        if now < t.saturating_add(policy.rotation_min_interval_ms) {
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
