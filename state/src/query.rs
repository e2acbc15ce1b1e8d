//! The read side: answers computed from applied state without writing.

use crate::codec::decode;
use crate::command::{SessionError, SessionView};
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError};
use crate::record::{Policy, RevocationEvent, SessionRecord};
use crate::rotation::{self, Accepted};
use crate::tables;
use crate::token::{SessionId, TokenHash};

/// A token that validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub session: SessionRecord,
    /// The token is the previous generation, inside its grace window.
    pub superseded: bool,
    /// `GetSession(touch)` should write a `Touch`: the last activity is older than the
    /// touch interval.
    pub touch_due: bool,
}

/// State-machine time: the largest leader stamp applied so far.
pub fn clock<R: KvRead + ?Sized>(kv: &R) -> Result<u64, StorageError> {
    tables::clock(kv)
}

/// The cluster policy in force.
pub fn policy<R: KvRead + ?Sized>(kv: &R) -> Result<Policy, StorageError> {
    tables::policy(kv)
}

/// Validate a presented token at time `now_ms` (the caller passes
/// `max(local clock, clock(kv))`).
pub fn by_token<R: KvRead + ?Sized>(
    kv: &R,
    token: &TokenHash,
    now_ms: u64,
) -> Result<Result<Lookup, SessionError>, StorageError> {
    let policy = tables::policy(kv)?;
    let p = rotation::classify(kv, &policy, token, now_ms)?;
    Ok(match rotation::accept(p) {
        Accepted::Ok(session, superseded) => {
            let interval = policy.touch_interval_for(session.idle_timeout_ms);
            let touch_due = now_ms.saturating_sub(session.last_active_at) >= interval;
            Ok(Lookup {
                session,
                superseded,
                touch_due,
            })
        }
        Accepted::Reused(_) => Err(SessionError::TokenReused),
        Accepted::Refused(e) => Err(e),
    })
}

/// A live session by id (`REVOKED`/`EXPIRED`/`NOT_FOUND` otherwise).
pub fn by_id<R: KvRead + ?Sized>(
    kv: &R,
    id: &SessionId,
    now_ms: u64,
) -> Result<Result<SessionRecord, SessionError>, StorageError> {
    if let Some(t) = tables::tombstone(kv, id)? {
        return Ok(Err(SessionError::Revoked { reason: t.reason }));
    }
    Ok(match tables::session(kv, id)? {
        None => Err(SessionError::NotFound),
        Some(r) if r.expires_at() <= now_ms => Err(SessionError::Expired),
        Some(r) => Ok(r),
    })
}

/// Where a page of a user's sessions ends: the (created_at, session id) of its last session;
/// the next page starts after it.
pub type PageCursor = (u64, SessionId);

/// One page of a user's live sessions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    pub sessions: Vec<SessionView>,
    /// Set when more sessions may follow.
    pub next: Option<PageCursor>,
}

/// Bytes a session counts towards a page's byte budget: its data and attributes, plus a
/// fixed allowance for ids and times.
pub fn page_bytes(v: &SessionView) -> usize {
    let attrs: usize = v
        .attributes
        .iter()
        .map(|(k, a)| k.len() + a.len() + 4)
        .sum();
    v.data.len() + attrs + v.user_id.len() + 128
}

/// The user's live sessions after `after` (from the oldest when `None`): at most `max_count`,
/// and no more than `max_bytes` by [`page_bytes`] (always at least one). Reads the index from
/// the cursor on, and only the records it returns or skips as expired.
pub fn list_user_page<R: KvRead + ?Sized>(
    kv: &R,
    user_id: &str,
    now_ms: u64,
    after: Option<PageCursor>,
    max_count: usize,
    max_bytes: usize,
) -> Result<SessionPage, StorageError> {
    let prefix = keys::user_sessions(user_id);
    let end = keys::prefix_end(&prefix);
    let mut start = match after {
        // The key right after the cursor's own row.
        Some((created_at, id)) => {
            let mut k = keys::user(user_id, created_at, &id);
            k.push(0);
            k
        }
        None => prefix.clone(),
    };
    let (mut sessions, mut bytes) = (Vec::<SessionView>::new(), 0usize);
    const SCAN: usize = 256;
    loop {
        let rows = kv.scan(Cf::Users, &start, end.as_deref(), SCAN)?;
        for (k, _) in &rows {
            let (_, id) =
                keys::parse_user(k).ok_or_else(|| StorageError("malformed users row".into()))?;
            let Some(r) = tables::session(kv, &id)? else {
                continue;
            };
            if r.expires_at() <= now_ms {
                continue;
            }
            let view = SessionView::from(&r);
            let size = page_bytes(&view);
            if !sessions.is_empty() && (sessions.len() >= max_count || bytes + size > max_bytes) {
                let next = sessions.last().map(|v| (v.created_at, v.id));
                return Ok(SessionPage { sessions, next });
            }
            bytes += size;
            sessions.push(view);
        }
        match rows.last() {
            Some((k, _)) if rows.len() == SCAN => {
                start = k.clone();
                start.push(0);
            }
            _ => {
                return Ok(SessionPage {
                    sessions,
                    next: None,
                })
            }
        }
    }
}

/// The user's live sessions, oldest first.
pub fn list_user<R: KvRead + ?Sized>(
    kv: &R,
    user_id: &str,
    now_ms: u64,
) -> Result<Vec<SessionView>, StorageError> {
    let mut out = Vec::new();
    for id in tables::user_ids(kv, user_id)? {
        if let Some(r) = tables::session(kv, &id)? {
            if r.expires_at() > now_ms {
                out.push(r);
            }
        }
    }
    out.sort_by_key(|r| (r.created_at, r.id));
    Ok(out.iter().map(SessionView::from).collect())
}

/// True when the expiry index holds a row due at `now_ms`: the leader then proposes `Expire`.
pub fn expiry_due<R: KvRead + ?Sized>(kv: &R, now_ms: u64) -> Result<bool, StorageError> {
    for kind in ExpiryKind::ALL {
        if !crate::expiry::due(kv, kind, now_ms, 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A position in the revocation feed: the next event to read. One log entry can hold more
/// events than a page (a user's whole cap revoked at once), so a position names the event
/// inside its entry, not only the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub index: u64,
    pub seq: u32,
}

impl FeedCursor {
    /// The first event of entry `index`.
    pub fn at(index: u64) -> FeedCursor {
        FeedCursor { index, seq: 0 }
    }

    /// The position right after the event at (`index`, `seq`).
    fn after(index: u64, seq: u32) -> FeedCursor {
        match seq.checked_add(1) {
            Some(seq) => FeedCursor { index, seq },
            None => FeedCursor::at(index.saturating_add(1)),
        }
    }
}

/// Revocation events from `cursor` on, at most `limit`, in log order, and the position after
/// the last one returned (`cursor` itself when there is none).
pub fn revocations_page<R: KvRead + ?Sized>(
    kv: &R,
    cursor: FeedCursor,
    limit: usize,
) -> Result<(Vec<RevocationEvent>, FeedCursor), StorageError> {
    let rows = kv.scan(
        Cf::Revocations,
        &keys::revocation(cursor.index, cursor.seq),
        None,
        limit,
    )?;
    let mut next = cursor;
    let mut events = Vec::with_capacity(rows.len());
    for (k, v) in &rows {
        let (index, seq) = keys::parse_revocation(k)
            .ok_or_else(|| StorageError("malformed revocations key".into()))?;
        next = FeedCursor::after(index, seq);
        events.push(decode(v)?);
    }
    Ok((events, next))
}

/// Revocation events with `index >= from_index`, at most `limit`, in log order.
pub fn revocations_from<R: KvRead + ?Sized>(
    kv: &R,
    from_index: u64,
    limit: usize,
) -> Result<Vec<RevocationEvent>, StorageError> {
    Ok(revocations_page(kv, FeedCursor::at(from_index), limit)?.0)
}
