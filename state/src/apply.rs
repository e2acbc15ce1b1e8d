//! Applying one log entry: the dispatcher, and the commands that need no module of their own.

use crate::command::{Batch, Command, Outcome, Reply, SessionError, Target};
use crate::dedup;
use crate::expiry;
use crate::keys;
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::limits;
use crate::record::{CapPolicy, Policy, ReusePolicy, SessionRecord, TokenRow};
use crate::rotation::{self, Accepted};
use crate::tables;
use crate::token::{SessionId, TokenHash};
use crate::tombstone::{self, Feed};

/// Reason recorded when a reused token revokes its session.
pub const REASON_REUSE: &str = "reuse_detected";
/// Reason recorded when the per-user cap evicts a session.
pub const REASON_EVICTED: &str = "evicted";
/// Reason recorded for a revoke that gives none.
pub const REASON_LOGOUT: &str = "logout";

/// Apply `batch`, the payload of log entry `index`, inside `txn`. Returns one outcome per
/// command, in order. The caller commits `txn`'s writes atomically together with its own
/// bookkeeping (last applied log id).
pub fn apply_batch<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    index: u64,
    batch: &Batch,
) -> Result<Vec<Outcome>, StorageError> {
    let now = tables::clock(txn)?.max(batch.stamp_ms);
    tables::set_clock(txn, now);
    let mut ctx = Ctx {
        now,
        policy: tables::policy(txn)?,
        feed: Feed { index, seq: 0 },
    };
    batch.commands.iter().map(|c| ctx.apply(txn, c)).collect()
}

struct Ctx {
    now: u64,
    policy: Policy,
    feed: Feed,
}

impl Ctx {
    fn apply<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        c: &Command,
    ) -> Result<Outcome, StorageError> {
        if let Some(req) = dedup::request(c) {
            // A remembered id answers without executing or writing anything: a retry gets the
            // first outcome, a different request under the same id a refusal that leaves the
            // first outcome in place.
            if let Some(answer) = dedup::replay(txn, &req, self.now)? {
                return Ok(answer);
            }
            let outcome = self.execute(txn, c)?;
            dedup::remember(txn, &req, &outcome, self.now, self.policy.dedup_window_ms)?;
            return Ok(outcome);
        }
        self.execute(txn, c)
    }

    fn execute<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        c: &Command,
    ) -> Result<Outcome, StorageError> {
        match c {
            Command::Configure { policy } => Ok(self.configure(txn, policy)),
            Command::Create {
                id,
                token_hash,
                sealed_token,
                user_id,
                data,
                attributes,
                idle_timeout_ms,
                absolute_timeout_ms,
                ..
            } => {
                let checked = (|| {
                    limits::user_id(user_id)?;
                    limits::data(&self.policy, data)?;
                    limits::attributes(&self.policy, attributes)?;
                    limits::timeouts(&self.policy, *idle_timeout_ms, *absolute_timeout_ms)
                })();
                let (idle, absolute) = match checked {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                if tables::session(txn, id)?.is_some() || tables::tombstone(txn, id)?.is_some() {
                    return Ok(Err(SessionError::InvalidArgument(
                        "session id already used".into(),
                    )));
                }
                if tables::token_row(txn, token_hash)?.is_some() {
                    return Ok(Err(SessionError::InvalidArgument(
                        "token collides with a known token".into(),
                    )));
                }
                let evicted = match self.make_room(txn, user_id)? {
                    Ok(e) => e,
                    Err(e) => return Ok(Err(e)),
                };
                let rec = SessionRecord {
                    id: *id,
                    user_id: user_id.clone(),
                    generation: 0,
                    version: 1,
                    data: data.clone(),
                    attributes: attributes.clone(),
                    created_at: self.now,
                    last_active_at: self.now,
                    idle_timeout_ms: idle,
                    absolute_expires_at: self.now.saturating_add(absolute),
                    token_hash: *token_hash,
                    last_rotated_at: None,
                    retired: Vec::new(),
                };
                tables::put_token(
                    txn,
                    token_hash,
                    TokenRow {
                        id: *id,
                        generation: 0,
                    },
                );
                txn.put(
                    Cf::Users,
                    keys::user(user_id, id),
                    self.now.to_be_bytes().to_vec(),
                );
                tables::put_session(txn, None, &rec);
                Ok(Ok(Reply::Created {
                    session: (&rec).into(),
                    sealed_token: *sealed_token,
                    evicted,
                    replayed: false,
                }))
            }
            Command::Rotate {
                token_hash,
                new_token_hash,
                sealed_successor,
                ..
            } => {
                let (rec, superseded) = match self.presented(txn, token_hash)? {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                rotation::rotate(
                    txn,
                    &self.policy,
                    rec,
                    superseded,
                    token_hash,
                    new_token_hash,
                    *sealed_successor,
                    self.now,
                )
            }
            Command::Update {
                target,
                expected_version,
                data,
                attributes,
                ..
            } => {
                let checked = (|| {
                    if let Some(d) = data {
                        limits::data(&self.policy, d)?;
                    }
                    if let Some(a) = attributes {
                        limits::attributes(&self.policy, a)?;
                    }
                    Ok(())
                })();
                if let Err(e) = checked {
                    return Ok(Err(e));
                }
                let rec = match self.target(txn, target)? {
                    Ok((rec, _)) => rec,
                    Err(e) => return Ok(Err(e)),
                };
                if *expected_version != 0 && *expected_version != rec.version {
                    return Ok(Err(SessionError::VersionConflict {
                        current: rec.version,
                    }));
                }
                let mut next = rec.clone();
                if let Some(d) = data {
                    next.data = d.clone();
                }
                if let Some(a) = attributes {
                    next.attributes = a.clone();
                }
                next.version += 1;
                next.last_active_at = self.now;
                tables::put_session(txn, Some(&rec), &next);
                Ok(Ok(Reply::Updated {
                    session: (&next).into(),
                    replayed: false,
                }))
            }
            Command::Touch { token_hash } => {
                let (rec, superseded) = match self.presented(txn, token_hash)? {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                let interval = self.policy.touch_interval_for(rec.idle_timeout_ms);
                if self.now.saturating_sub(rec.last_active_at) < interval {
                    return Ok(Ok(Reply::Touched {
                        session: (&rec).into(),
                        written: false,
                        superseded,
                    }));
                }
                let mut next = rec.clone();
                next.last_active_at = self.now;
                next.version += 1;
                tables::put_session(txn, Some(&rec), &next);
                Ok(Ok(Reply::Touched {
                    session: (&next).into(),
                    written: true,
                    superseded,
                }))
            }
            Command::Revoke { target, reason, .. } => {
                if let Err(e) = limits::reason(reason) {
                    return Ok(Err(e));
                }
                let reason = if reason.is_empty() {
                    REASON_LOGOUT
                } else {
                    reason.as_str()
                };
                self.revoke(txn, target, reason)
            }
            Command::RevokeUser {
                user_id,
                except,
                reason,
                ..
            } => {
                if let Err(e) = limits::user_id(user_id).and_then(|_| limits::reason(reason)) {
                    return Ok(Err(e));
                }
                let reason = if reason.is_empty() {
                    REASON_LOGOUT
                } else {
                    reason.as_str()
                };
                let mut ids = Vec::new();
                for id in tables::user_ids(txn, user_id)? {
                    if Some(id) == *except {
                        continue;
                    }
                    if let Some(rec) = tables::session(txn, &id)? {
                        tombstone::revoke(txn, &mut self.feed, &rec, reason, self.now);
                        ids.push(id);
                    }
                }
                Ok(Ok(Reply::RevokedUser {
                    ids,
                    replayed: false,
                }))
            }
            Command::ReportReuse { token_hash } => {
                let p = rotation::classify(txn, &self.policy, token_hash, self.now)?;
                let revoked = match rotation::accept(p) {
                    Accepted::Reused(rec) if self.policy.reuse_policy == ReusePolicy::Revoke => {
                        tombstone::revoke(txn, &mut self.feed, &rec, REASON_REUSE, self.now);
                        true
                    }
                    _ => false,
                };
                Ok(Ok(Reply::ReuseHandled { revoked }))
            }
            Command::Expire { limit } => {
                let s = expiry::sweep(txn, self.now, *limit)?;
                Ok(Ok(Reply::Expired {
                    sessions: s.sessions,
                    tombstones: s.tombstones,
                    dedup: s.dedup,
                }))
            }
        }
    }

    fn configure<R: KvRead + ?Sized>(&mut self, txn: &mut Txn<'_, R>, p: &Policy) -> Outcome {
        limits::policy(p)?;
        tables::set_policy(txn, p);
        self.policy = p.clone();
        Ok(Reply::Configured)
    }

    /// Accept a presented token for a mutation; a reuse revokes under the `revoke` policy.
    fn presented<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        hash: &TokenHash,
    ) -> Result<Result<(SessionRecord, bool), SessionError>, StorageError> {
        let p = rotation::classify(txn, &self.policy, hash, self.now)?;
        Ok(match rotation::accept(p) {
            Accepted::Ok(rec, superseded) => Ok((rec, superseded)),
            Accepted::Refused(e) => Err(e),
            Accepted::Reused(rec) => {
                if self.policy.reuse_policy == ReusePolicy::Revoke {
                    tombstone::revoke(txn, &mut self.feed, &rec, REASON_REUSE, self.now);
                }
                Err(SessionError::TokenReused)
            }
        })
    }

    /// A live session named by token or id.
    fn target<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        target: &Target,
    ) -> Result<Result<(SessionRecord, bool), SessionError>, StorageError> {
        match target {
            Target::Token(h) => self.presented(txn, h),
            Target::Id(id) => crate::query::by_id(txn, id, self.now).map(|r| r.map(|s| (s, false))),
        }
    }

    fn revoke<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        target: &Target,
        reason: &str,
    ) -> Result<Outcome, StorageError> {
        let rec = match target {
            Target::Id(id) => {
                if tables::tombstone(txn, id)?.is_some() {
                    return Ok(Ok(Reply::Revoked {
                        id: *id,
                        already: true,
                        replayed: false,
                    }));
                }
                match tables::session(txn, id)? {
                    Some(rec) => rec,
                    None => return Ok(Err(SessionError::NotFound)),
                }
            }
            Target::Token(h) => match rotation::classify(txn, &self.policy, h, self.now)? {
                rotation::Presented::Unknown => return Ok(Err(SessionError::NotFound)),
                rotation::Presented::Revoked(t) => {
                    return Ok(Ok(Reply::Revoked {
                        id: t.id,
                        already: true,
                        replayed: false,
                    }))
                }
                rotation::Presented::Known {
                    rec, generation, ..
                } => {
                    if generation == rotation::Generation::Reused {
                        if self.policy.reuse_policy == ReusePolicy::Revoke {
                            tombstone::revoke(txn, &mut self.feed, &rec, REASON_REUSE, self.now);
                        }
                        return Ok(Err(SessionError::TokenReused));
                    }
                    rec
                }
            },
        };
        tombstone::revoke(txn, &mut self.feed, &rec, reason, self.now);
        Ok(Ok(Reply::Revoked {
            id: rec.id,
            already: false,
            replayed: false,
        }))
    }

    /// Make room for one more session of `user_id` under the per-user cap.
    fn make_room<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        user_id: &str,
    ) -> Result<Result<Vec<SessionId>, SessionError>, StorageError> {
        let cap = self.policy.max_sessions_per_user as usize;
        let ids = tables::user_ids(txn, user_id)?;
        if ids.len() < cap {
            return Ok(Ok(Vec::new()));
        }
        let mut live = Vec::new();
        for id in ids {
            if let Some(rec) = tables::session(txn, &id)? {
                if rec.expires_at() > self.now {
                    live.push(rec);
                }
            }
        }
        if live.len() < cap {
            return Ok(Ok(Vec::new()));
        }
        if self.policy.cap_policy == CapPolicy::Refuse {
            return Ok(Err(SessionError::ResourceExhausted(format!(
                "user already has {} live sessions",
                live.len()
            ))));
        }
        live.sort_by_key(|r| (r.created_at, r.id));
        let excess = live.len() + 1 - cap;
        let mut evicted = Vec::new();
        for rec in live.into_iter().take(excess) {
            tombstone::revoke(txn, &mut self.feed, &rec, REASON_EVICTED, self.now);
            evicted.push(rec.id);
        }
        Ok(Ok(evicted))
    }
}
