//! Applying one log entry: the dispatcher, one function per command, and the error type that
//! lets those functions use `?` on both client refusals and storage failures.

use crate::command::{Batch, Command, Outcome, Reply, SessionError, Target};
use crate::dedup;
use crate::expiry;
use crate::keys::ExpiryKind;
use crate::kv::{KvRead, StorageError, Txn};
use crate::limits;
use crate::record::{CapPolicy, LateCommit, Policy, ReusePolicy, SessionRecord, TokenRow};
use crate::rotation::{self, Accepted, Generation, Presented};
use crate::tables;
use crate::token::{SealedToken, SessionId, TokenHash};
use crate::tombstone::{self, Feed};
use std::collections::BTreeMap;

/// Reason recorded when a reused token revokes its session.
pub const REASON_REUSE: &str = "reuse_detected";
/// Reason recorded when the per-user cap evicts a session.
pub const REASON_EVICTED: &str = "evicted";
/// Reason recorded for a revoke that gives none.
pub const REASON_LOGOUT: &str = "logout";

/// Why applying one command stopped early. The two cases end differently: a refusal is the
/// command's outcome (remembered for replays, returned to the client, the entry goes on),
/// while a storage failure aborts the whole entry. One type for both lets every step use `?`.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The command is refused; the client gets this error.
    Session(SessionError),
    /// The store failed underneath; nothing of the entry may be committed.
    Storage(StorageError),
}

impl From<SessionError> for ApplyError {
    fn from(e: SessionError) -> Self {
        ApplyError::Session(e)
    }
}

impl From<StorageError> for ApplyError {
    fn from(e: StorageError) -> Self {
        ApplyError::Storage(e)
    }
}

/// The result of applying one command, before it is split into outcome and storage failure.
pub(crate) type Applied = Result<Reply, ApplyError>;

/// Split an [`Applied`] into the command's outcome and a storage failure for the entry.
fn settle(r: Applied) -> Result<Outcome, StorageError> {
    match r {
        Ok(reply) => Ok(Ok(reply)),
        Err(ApplyError::Session(e)) => Ok(Err(e)),
        Err(ApplyError::Storage(e)) => Err(e),
    }
}

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
            if let Some(answer) = dedup::replay(txn, &req, c, self.now)? {
                return Ok(answer);
            }
            let outcome = settle(self.execute(txn, c))?;
            dedup::remember(txn, &req, &outcome, self.now, self.policy.dedup_window_ms)?;
            return Ok(outcome);
        }
        settle(self.execute(txn, c))
    }

    /// Run one command: a dispatch to its function. Every field is named, so a new field does
    /// not compile until it is handed on (or marked unused, as the request id is: `apply`
    /// has dealt with it).
    fn execute<R: KvRead + ?Sized>(&mut self, txn: &mut Txn<'_, R>, c: &Command) -> Applied {
        match c {
            Command::Configure { policy } => self.configure(txn, policy),
            Command::Create {
                request_id: _,
                id,
                token_hash,
                sealed_token,
                user_id,
                data,
                attributes,
                idle_timeout_ms,
                absolute_timeout_ms,
            } => self.create(
                txn,
                NewSession {
                    id,
                    token_hash,
                    sealed_token,
                    user_id,
                    data,
                    attributes,
                    idle_timeout_ms: *idle_timeout_ms,
                    absolute_timeout_ms: *absolute_timeout_ms,
                },
            ),
            Command::Rotate {
                request_id: _,
                token_hash,
                new_token_hash,
                sealed_successor,
            } => self.rotate(txn, token_hash, new_token_hash, *sealed_successor),
            Command::Update {
                request_id: _,
                target,
                expected_version,
                data,
                attributes,
            } => self.update(
                txn,
                target,
                *expected_version,
                data.as_deref(),
                attributes.as_ref(),
            ),
            Command::Touch { token_hash } => self.touch(txn, token_hash),
            Command::Revoke {
                request_id: _,
                target,
                reason,
            } => self.revoke(txn, target, reason),
            Command::RevokeUser {
                request_id: _,
                user_id,
                except,
                reason,
            } => self.revoke_user(txn, user_id, except.as_ref(), reason),
            Command::ReportReuse { token_hash } => self.report_reuse(txn, token_hash),
            Command::Expire { limit } => self.expire(txn, *limit),
            Command::LeaderCommitted { from_index } => self.leader_committed(txn, *from_index),
        }
    }

    fn configure<R: KvRead + ?Sized>(&mut self, txn: &mut Txn<'_, R>, p: &Policy) -> Applied {
        limits::policy(p)?;
        tables::set_policy(txn, p);
        self.policy = p.clone();
        Ok(Reply::Configured)
    }

    /// A new session, after making room for it under the per-user cap.
    fn create<R: KvRead + ?Sized>(&mut self, txn: &mut Txn<'_, R>, new: NewSession<'_>) -> Applied {
        limits::user_id(new.user_id)?;
        limits::data(&self.policy, new.data)?;
        limits::attributes(&self.policy, new.attributes)?;
        let (idle, absolute) =
            limits::timeouts(&self.policy, new.idle_timeout_ms, new.absolute_timeout_ms)?;
        if tables::session(txn, new.id)?.is_some() || tables::tombstone(txn, new.id)?.is_some() {
            return Err(invalid("session id already used"));
        }
        if tables::token_row(txn, new.token_hash)?.is_some() {
            return Err(invalid("token collides with a known token"));
        }
        let evicted = self.make_room(txn, new.user_id)?;
        let rec = SessionRecord {
            id: *new.id,
            user_id: new.user_id.to_string(),
            generation: 0,
            version: 1,
            data: new.data.to_vec(),
            attributes: new.attributes.clone(),
            created_at: self.now,
            last_active_at: self.now,
            idle_timeout_ms: idle,
            absolute_expires_at: self.now.saturating_add(absolute),
            token_hash: *new.token_hash,
            last_rotated_at: None,
            retired: Vec::new(),
        };
        tables::put_token(
            txn,
            new.token_hash,
            TokenRow {
                id: *new.id,
                generation: 0,
            },
        );
        tables::insert_session(txn, &rec)?;
        Ok(Reply::Created {
            session: (&rec).into(),
            sealed_token: *new.sealed_token,
            evicted,
            replayed: false,
        })
    }

    fn rotate<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        presented: &TokenHash,
        new_hash: &TokenHash,
        sealed: SealedToken,
    ) -> Applied {
        let (rec, superseded) = self.presented(txn, presented)?;
        rotation::rotate(
            txn,
            &self.policy,
            rec,
            superseded,
            presented,
            new_hash,
            sealed,
            self.now,
            self.feed.index,
        )
    }

    fn update<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        target: &Target,
        expected_version: u64,
        data: Option<&[u8]>,
        attributes: Option<&BTreeMap<String, String>>,
    ) -> Applied {
        if let Some(d) = data {
            limits::data(&self.policy, d)?;
        }
        if let Some(a) = attributes {
            limits::attributes(&self.policy, a)?;
        }
        let (rec, _) = self.target(txn, target)?;
        if expected_version != 0 && expected_version != rec.version {
            return Err(SessionError::VersionConflict {
                current: rec.version,
            }
            .into());
        }
        let mut next = rec.clone();
        if let Some(d) = data {
            next.data = d.to_vec();
        }
        if let Some(a) = attributes {
            next.attributes = a.clone();
        }
        next.version += 1;
        next.last_active_at = self.now;
        tables::put_session(txn, Some(&rec), &next);
        Ok(Reply::Updated {
            session: (&next).into(),
            replayed: false,
        })
    }

    /// Slide the idle deadline, written only when the touch interval has passed.
    fn touch<R: KvRead + ?Sized>(&mut self, txn: &mut Txn<'_, R>, hash: &TokenHash) -> Applied {
        let (rec, superseded) = self.presented(txn, hash)?;
        let interval = self.policy.touch_interval_for(rec.idle_timeout_ms);
        if self.now.saturating_sub(rec.last_active_at) < interval {
            return Ok(Reply::Touched {
                session: (&rec).into(),
                written: false,
                superseded,
            });
        }
        let mut next = rec.clone();
        next.last_active_at = self.now;
        next.version += 1;
        tables::put_session(txn, Some(&rec), &next);
        Ok(Reply::Touched {
            session: (&next).into(),
            written: true,
            superseded,
        })
    }

    /// Logout: revoke one session, named by id or token.
    fn revoke<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        target: &Target,
        reason: &str,
    ) -> Applied {
        limits::reason(reason)?;
        let reason = or_logout(reason);
        let already = |id| {
            Ok(Reply::Revoked {
                id,
                already: true,
                replayed: false,
            })
        };
        let rec = match target {
            Target::Id(id) => {
                if tables::tombstone(txn, id)?.is_some() {
                    return already(*id);
                }
                tables::session(txn, id)?.ok_or(SessionError::NotFound)?
            }
            // Unlike the other token operations, an expired session can still be logged out,
            // and a revoked one answers `already` rather than `REVOKED`.
            Target::Token(h) => match rotation::classify(txn, &self.policy, h, self.now)? {
                Presented::Unknown => return Err(SessionError::NotFound.into()),
                Presented::Revoked(t) => return already(t.id),
                Presented::Known {
                    rec,
                    generation: Generation::Reused,
                    ..
                } => {
                    self.punish_reuse(txn, &rec)?;
                    return Err(SessionError::TokenReused.into());
                }
                Presented::Known { rec, .. } => rec,
            },
        };
        tombstone::revoke(txn, &mut self.feed, &rec, reason, self.now)?;
        Ok(Reply::Revoked {
            id: rec.id,
            already: false,
            replayed: false,
        })
    }

    /// Revoke every session of a user but `except`.
    fn revoke_user<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        user_id: &str,
        except: Option<&SessionId>,
        reason: &str,
    ) -> Applied {
        limits::user_id(user_id)?;
        limits::reason(reason)?;
        let reason = or_logout(reason);
        let mut ids = Vec::new();
        for id in tables::user_ids(txn, user_id)? {
            if Some(&id) == except {
                continue;
            }
            if let Some(rec) = tables::session(txn, &id)? {
                tombstone::revoke(txn, &mut self.feed, &rec, reason, self.now)?;
                ids.push(id);
            }
        }
        Ok(Reply::RevokedUser {
            ids,
            replayed: false,
        })
    }

    /// Re-evaluate a reuse a read saw; the session pays as for any other reuse.
    fn report_reuse<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        hash: &TokenHash,
    ) -> Applied {
        let p = rotation::classify(txn, &self.policy, hash, self.now)?;
        let revoked = match rotation::accept(p) {
            Accepted::Reused(rec) => self.punish_reuse(txn, &rec)?,
            Accepted::Ok(..) | Accepted::Refused(_) => false,
        };
        Ok(Reply::ReuseHandled { revoked })
    }

    /// Record that entries `from_index..` (up to this one) became visible only now.
    fn leader_committed<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        from_index: u64,
    ) -> Applied {
        let to_index = self.feed.index;
        if from_index < to_index {
            let late = LateCommit {
                from_index,
                to_index,
                at: self.now,
            };
            tables::push_late_commit(txn, late)?;
        }
        Ok(Reply::LeaderCommitted)
    }

    fn expire<R: KvRead + ?Sized>(&mut self, txn: &mut Txn<'_, R>, limit: u32) -> Applied {
        let s = expiry::sweep(txn, self.now, limit)?;
        Ok(Reply::Expired {
            sessions: s.sessions,
            tombstones: s.tombstones,
            dedup: s.dedup,
        })
    }

    /// What a reused token costs, the one place that decides it: under
    /// `ReusePolicy::Revoke` its session is revoked (reason [`REASON_REUSE`]), under `Reject`
    /// nothing is written. Returns whether the session was revoked. A command that presented
    /// the token answers `TOKEN_REUSED` either way.
    fn punish_reuse<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        rec: &SessionRecord,
    ) -> Result<bool, StorageError> {
        let revoke = self.policy.reuse_policy == ReusePolicy::Revoke;
        if revoke {
            tombstone::revoke(txn, &mut self.feed, rec, REASON_REUSE, self.now)?;
        }
        Ok(revoke)
    }

    /// Accept a presented token for a mutation: the record and whether the token is
    /// superseded. A reuse is refused, at the cost [`Ctx::punish_reuse`] decides.
    fn presented<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        hash: &TokenHash,
    ) -> Result<(SessionRecord, bool), ApplyError> {
        let p = rotation::classify(txn, &self.policy, hash, self.now)?;
        match rotation::accept(p) {
            Accepted::Ok(rec, superseded) => Ok((rec, superseded)),
            Accepted::Refused(e) => Err(e.into()),
            Accepted::Reused(rec) => {
                self.punish_reuse(txn, &rec)?;
                Err(SessionError::TokenReused.into())
            }
        }
    }

    /// A live session named by token or id.
    fn target<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        target: &Target,
    ) -> Result<(SessionRecord, bool), ApplyError> {
        match target {
            Target::Token(h) => self.presented(txn, h),
            Target::Id(id) => Ok((crate::query::by_id(txn, id, self.now)??, false)),
        }
    }

    /// Make room for one more session of `user_id` under the per-user cap: the ids evicted.
    ///
    /// The cap counts live sessions only; a session past its deadline that the sweeper has
    /// not removed yet holds no place. Decided from the `users` index alone: the user's count
    /// row says whether the cap is reached at all (one point read), and when no session
    /// anywhere is past its deadline (one seek in the expiry index) every row is live and the
    /// oldest are the first rows of the user's prefix. Only while the sweeper lags are the
    /// user's index rows scanned, for the deadlines their values carry. Either way the only
    /// records read are the evicted ones.
    fn make_room<R: KvRead + ?Sized>(
        &mut self,
        txn: &mut Txn<'_, R>,
        user_id: &str,
    ) -> Result<Vec<SessionId>, ApplyError> {
        let cap = u64::from(self.policy.max_sessions_per_user);
        let held = tables::user_count(txn, user_id)?;
        if held < cap {
            return Ok(Vec::new());
        }
        let none_expired = expiry::due(txn, ExpiryKind::Session, self.now, 1)?.is_empty();
        let (live, oldest) = if none_expired {
            (held, None)
        } else {
            let rows: Vec<_> = tables::user_rows(txn, user_id, usize::MAX)?
                .into_iter()
                .filter(|r| r.expires_at > self.now)
                .collect();
            (rows.len() as u64, Some(rows))
        };
        if live < cap {
            return Ok(Vec::new());
        }
        if self.policy.cap_policy == CapPolicy::Refuse {
            return Err(SessionError::ResourceExhausted(format!(
                "user already has {live} live sessions"
            ))
            .into());
        }
        // More than one only after the cap was lowered.
        let excess = usize::try_from(live + 1 - cap).unwrap_or(usize::MAX);
        let oldest = match oldest {
            Some(rows) => rows,
            None => tables::user_rows(txn, user_id, excess)?,
        };
        let mut evicted = Vec::new();
        for row in oldest.into_iter().take(excess) {
            let rec = tables::session(txn, &row.id)?.ok_or_else(|| {
                StorageError(format!("users index names a missing session {:?}", row.id))
            })?;
            tombstone::revoke(txn, &mut self.feed, &rec, REASON_EVICTED, self.now)?;
            evicted.push(rec.id);
        }
        Ok(evicted)
    }
}

/// A `Create` command's fields, borrowed.
struct NewSession<'a> {
    id: &'a SessionId,
    token_hash: &'a TokenHash,
    sealed_token: &'a SealedToken,
    user_id: &'a str,
    data: &'a [u8],
    attributes: &'a BTreeMap<String, String>,
    idle_timeout_ms: Option<u64>,
    absolute_timeout_ms: Option<u64>,
}

fn invalid(msg: &str) -> ApplyError {
    SessionError::InvalidArgument(msg.into()).into()
}

/// The reason recorded for a revoke: the one given, or [`REASON_LOGOUT`].
fn or_logout(reason: &str) -> &str {
    if reason.is_empty() {
        REASON_LOGOUT
    } else {
        reason
    }
}
