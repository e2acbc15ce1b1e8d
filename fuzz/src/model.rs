//! A model of the session state machine, written from docs/semantics.md alone: plain maps,
//! one function per operation, no code shared with `sessiond_state` beyond its data types
//! (ids, tokens, hashes, the policy) and the derivations the document names (a request id's
//! key, a token's hash and seal).
//!
//! It answers every command with an [`Answer`], the comparable part of what apply returns,
//! so the differential target can hold the two side by side after every command.

use sessiond_state::command::{Outcome, Reply, SessionError, SessionView, Successor};
use sessiond_state::record::{CapPolicy, Policy, ReusePolicy};
use sessiond_state::token::TokenHash;
use sessiond_state::token::{RequestId, RequestKey, SealKey, SealedToken, SessionId, Token};
use std::collections::BTreeMap;

/// The cluster's seal key in every differential run.
pub fn seal_key() -> SealKey {
    SealKey::from_bytes([0x5e; 32])
}

/// Principals the commands are sent by (§6: request ids are scoped to one).
pub const PRINCIPALS: [&str; 2] = ["app", "other-app"];

/// Reason of a revocation that gives none (§4.5).
const LOGOUT: &str = "logout";
/// Reason of a revocation for reuse (§3.4).
const REUSE: &str = "reuse_detected";
/// Reason of an eviction by the per-user cap (§4.1).
const EVICTED: &str = "evicted";

/// A token the fuzzer made: its 32 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tok(pub [u8; 32]);

impl Tok {
    pub fn token(&self) -> Token {
        Token::from_bytes(self.0)
    }

    pub fn hash(&self) -> TokenHash {
        self.token().hash()
    }
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "T{}",
            u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
        )
    }
}

/// A session named by token or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    Token(Tok),
    Id(SessionId),
}

/// Who sends a mutation and under which request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Req {
    pub principal: usize,
    pub rid: [u8; 16],
}

impl Req {
    pub fn request_id(&self) -> RequestId {
        RequestId::from_bytes(self.rid)
    }

    pub fn key(&self) -> RequestKey {
        self.request_id().key(PRINCIPALS[self.principal])
    }
}

/// One command as the fuzzer chose it. `id`, `token` and `successor` are what the leader
/// draws afresh per attempt; everything else is what the client sent.
#[derive(Debug, Clone)]
pub enum Op {
    Configure(Policy),
    Create {
        req: Req,
        id: SessionId,
        token: Tok,
        user: String,
        data: Vec<u8>,
        attributes: BTreeMap<String, String>,
        idle: Option<u64>,
        absolute: Option<u64>,
    },
    Rotate {
        req: Req,
        token: Tok,
        successor: Tok,
    },
    Update {
        req: Req,
        by: By,
        expected_version: u64,
        data: Option<Vec<u8>>,
        attributes: Option<BTreeMap<String, String>>,
    },
    Touch {
        token: Tok,
    },
    Revoke {
        req: Req,
        by: By,
        reason: String,
    },
    RevokeUser {
        req: Req,
        user: String,
        except: Option<SessionId>,
        reason: String,
    },
    ReportReuse {
        token: Tok,
    },
    Expire {
        limit: u32,
    },
    /// A new leader's first entry (§7, entries committed late).
    LeaderCommitted {
        from_index: u64,
    },
}

/// Refusals, as far as the document tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Expired,
    Revoked(String),
    TokenReused,
    VersionConflict(u64),
    InvalidArgument,
    ResourceExhausted,
}

/// What a command answers, in a form both sides can be turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Refused(Refusal),
    Configured,
    Created {
        session: SessionView,
        sealed: SealedToken,
        evicted: Vec<SessionId>,
        replayed: bool,
    },
    /// `successor`: the hash of the token handed out, `None` when the presented one stays.
    Rotated {
        session: SessionView,
        successor: Option<TokenHash>,
        replayed: bool,
    },
    Updated {
        session: SessionView,
        replayed: bool,
    },
    Touched {
        session: SessionView,
        written: bool,
        superseded: bool,
    },
    Revoked {
        id: SessionId,
        already: bool,
        replayed: bool,
    },
    /// Ids sorted: the document does not order them.
    RevokedUser {
        ids: Vec<SessionId>,
        replayed: bool,
    },
    ReuseHandled {
        revoked: bool,
    },
    Expired {
        sessions: u32,
        tombstones: u32,
        dedup: u32,
    },
    LeaderCommitted,
    /// A reply the model has no counterpart for.
    Other(String),
}

impl Answer {
    /// The comparable part of what apply returned for `op`.
    pub fn of(op: &Op, outcome: &Outcome) -> Answer {
        let reply = match outcome {
            Err(e) => {
                return Answer::Refused(match e {
                    SessionError::NotFound => Refusal::NotFound,
                    SessionError::Expired => Refusal::Expired,
                    SessionError::Revoked { reason } => Refusal::Revoked(reason.clone()),
                    SessionError::TokenReused => Refusal::TokenReused,
                    SessionError::VersionConflict { current } => Refusal::VersionConflict(*current),
                    SessionError::InvalidArgument(_) => Refusal::InvalidArgument,
                    SessionError::ResourceExhausted(_) => Refusal::ResourceExhausted,
                })
            }
            Ok(r) => r.clone(),
        };
        match reply {
            Reply::Configured => Answer::Configured,
            Reply::Created {
                session,
                sealed_token,
                evicted,
                replayed,
            } => Answer::Created {
                session,
                sealed: sealed_token,
                evicted,
                replayed,
            },
            Reply::Rotated {
                session,
                successor,
                replayed,
            } => Answer::Rotated {
                session,
                successor: match (successor, op) {
                    (Successor::Unchanged, _) => None,
                    (Successor::Sealed(s), Op::Rotate { token, .. }) => {
                        Some(token.token().open(&s).hash())
                    }
                    // A rotation answer to another command: keep something that differs.
                    (Successor::Sealed(s), _) => Some(TokenHash(s.0)),
                },
                replayed,
            },
            Reply::Updated { session, replayed } => Answer::Updated { session, replayed },
            Reply::Touched {
                session,
                written,
                superseded,
            } => Answer::Touched {
                session,
                written,
                superseded,
            },
            Reply::Revoked {
                id,
                already,
                replayed,
            } => Answer::Revoked {
                id,
                already,
                replayed,
            },
            Reply::RevokedUser { mut ids, replayed } => {
                ids.sort();
                Answer::RevokedUser { ids, replayed }
            }
            Reply::ReuseHandled { revoked } => Answer::ReuseHandled { revoked },
            Reply::Expired {
                sessions,
                tombstones,
                dedup,
            } => Answer::Expired {
                sessions,
                tombstones,
                dedup,
            },
            Reply::LeaderCommitted => Answer::LeaderCommitted,
            // Replies of commands the model does not send.
            #[allow(unreachable_patterns)]
            other => Answer::Other(format!("{other:?}")),
        }
    }
}

/// A live (not revoked, not swept) session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub user: String,
    pub generation: u64,
    pub version: u64,
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub created_at: u64,
    pub last_active_at: u64,
    pub idle_timeout_ms: u64,
    pub absolute_expires_at: u64,
    pub token: TokenHash,
    pub last_rotated_at: Option<u64>,
    /// Rotated-away generations, oldest first (§2).
    pub retired: Vec<Retired>,
    /// Which create made this record: an id the sweeper removed can be created again (the
    /// state machine refuses only ids it still holds), and that is another session.
    pub incarnation: u64,
}

#[derive(Debug, Clone)]
pub struct Retired {
    pub generation: u64,
    pub token: TokenHash,
    pub retired_at: u64,
    /// The log index of the entry that held the rotation.
    pub retired_index: u64,
    pub successor: Option<TokenHash>,
}

impl Session {
    pub fn expires_at(&self) -> u64 {
        self.last_active_at
            .saturating_add(self.idle_timeout_ms)
            .min(self.absolute_expires_at)
    }

    fn view(&self) -> SessionView {
        SessionView {
            id: self.id,
            user_id: self.user.clone(),
            generation: self.generation,
            version: self.version,
            data: self.data.clone(),
            attributes: self.attributes.clone(),
            created_at: self.created_at,
            last_active_at: self.last_active_at,
            idle_timeout_ms: self.idle_timeout_ms,
            absolute_expires_at: self.absolute_expires_at,
            expires_at: self.expires_at(),
        }
    }
}

/// What a revocation leaves (§5).
#[derive(Debug, Clone)]
pub struct Tombstone {
    pub user: String,
    pub reason: String,
    pub expires_at: u64,
    pub tokens: Vec<TokenHash>,
}

/// The operations that carry a request id (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Rotate,
    Update,
    Revoke,
    RevokeUser,
}

/// Every field the client chose, for the fingerprint comparison of §6.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fields {
    Create(
        String,
        Vec<u8>,
        BTreeMap<String, String>,
        Option<u64>,
        Option<u64>,
    ),
    Rotate(TokenHash),
    Update(By, u64, Option<Vec<u8>>, Option<BTreeMap<String, String>>),
    Revoke(By, String),
    RevokeUser(String, Option<SessionId>, String),
}

/// A remembered answer (§6).
#[derive(Debug, Clone)]
struct Memo {
    kind: Kind,
    fields: Fields,
    answer: Answer,
    expires_at: u64,
    /// The session content the request carried, which a replay hands back.
    data: Option<Vec<u8>>,
    attributes: Option<BTreeMap<String, String>>,
    /// The incarnation of the session the first answer reported, if it reported one.
    incarnation: Option<u64>,
}

/// How a presented token stands, before time is taken into account.
enum Found {
    Unknown,
    Revoked {
        id: SessionId,
        reason: String,
    },
    Current(SessionId),
    /// The newest retired generation, its rotation visible since `at`.
    Previous {
        id: SessionId,
        at: u64,
    },
    Older(SessionId),
}

/// A token accepted for an operation: the session and whether it is superseded.
type Accepted = Result<(SessionId, bool), Refusal>;

/// The model's whole state.
#[derive(Debug, Clone)]
pub struct Model {
    pub now: u64,
    /// The log index of the entry being applied.
    pub index: u64,
    /// Ranges of entries a new leader committed late: `(from, to, at)`, entries
    /// `from..to` became visible at `at` (§7).
    late: Vec<(u64, u64, u64)>,
    pub policy: Policy,
    pub sessions: BTreeMap<SessionId, Session>,
    pub tombstones: BTreeMap<SessionId, Tombstone>,
    dedup: BTreeMap<RequestKey, Memo>,
    /// Creates applied so far, numbering incarnations.
    creates: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    pub fn new() -> Model {
        Model {
            now: 0,
            index: 0,
            late: Vec::new(),
            policy: Policy::default(),
            sessions: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            dedup: BTreeMap::new(),
            creates: 0,
        }
    }

    /// Remembered request ids, swept or not.
    pub fn dedup_rows(&self) -> usize {
        self.dedup.len()
    }

    /// The start of entry `index`, stamped `stamp` (§7: time only moves forward).
    pub fn begin(&mut self, index: u64, stamp: u64) {
        self.index = index;
        self.now = self.now.max(stamp);
    }

    /// When a change made at `at` by entry `index` became visible: at `at`, unless a new
    /// leader committed that entry late, then at the first such leader's entry (§7).
    fn visible(&self, index: u64, at: u64) -> u64 {
        self.late
            .iter()
            .filter(|(from, to, _)| *from <= index && index < *to)
            .map(|(_, _, t)| *t)
            .min()
            .map_or(at, |t| t.max(at))
    }

    /// Apply one command at the current time.
    pub fn apply(&mut self, op: &Op) -> Answer {
        match op {
            Op::Configure(p) => {
                self.policy = p.clone();
                Answer::Configured
            }
            Op::Create {
                req,
                id,
                token,
                user,
                data,
                attributes,
                idle,
                absolute,
            } => {
                let fields = Fields::Create(
                    user.clone(),
                    data.clone(),
                    attributes.clone(),
                    *idle,
                    *absolute,
                );
                let content = (Some(data.clone()), Some(attributes.clone()));
                self.once(req, Kind::Create, fields, content, |m| {
                    m.create(*req, *id, *token, user, data, attributes, *idle, *absolute)
                })
            }
            Op::Rotate {
                req,
                token,
                successor,
            } => self.once(
                req,
                Kind::Rotate,
                Fields::Rotate(token.hash()),
                (None, None),
                |m| m.rotate(token.hash(), successor.hash()),
            ),
            Op::Update {
                req,
                by,
                expected_version,
                data,
                attributes,
            } => {
                let fields = Fields::Update(
                    by.clone(),
                    *expected_version,
                    data.clone(),
                    attributes.clone(),
                );
                let content = (data.clone(), attributes.clone());
                self.once(req, Kind::Update, fields, content, |m| {
                    m.update(by, *expected_version, data.as_deref(), attributes.as_ref())
                })
            }
            Op::Touch { token } => self.touch(token.hash()),
            Op::Revoke { req, by, reason } => self.once(
                req,
                Kind::Revoke,
                Fields::Revoke(by.clone(), reason.clone()),
                (None, None),
                |m| m.revoke(by, reason),
            ),
            Op::RevokeUser {
                req,
                user,
                except,
                reason,
            } => self.once(
                req,
                Kind::RevokeUser,
                Fields::RevokeUser(user.clone(), *except, reason.clone()),
                (None, None),
                |m| m.revoke_user(user, except.as_ref(), reason),
            ),
            Op::ReportReuse { token } => self.report_reuse(token.hash()),
            Op::Expire { limit } => self.expire(*limit),
            Op::LeaderCommitted { from_index } => {
                self.late.push((*from_index, self.index, self.now));
                Answer::LeaderCommitted
            }
        }
    }

    /// §6: answer a remembered request id within its window, or run the command and
    /// remember its outcome, whatever it is.
    fn once(
        &mut self,
        req: &Req,
        kind: Kind,
        fields: Fields,
        content: (Option<Vec<u8>>, Option<BTreeMap<String, String>>),
        run: impl FnOnce(&mut Model) -> Answer,
    ) -> Answer {
        let key = req.key();
        if let Some(memo) = self.dedup.get(&key) {
            if self.now < memo.expires_at {
                if memo.kind != kind || memo.fields != fields {
                    return Answer::Refused(Refusal::InvalidArgument);
                }
                return self.replay(memo);
            }
        }
        let answer = run(self);
        let reported = match &answer {
            Answer::Created { session, .. }
            | Answer::Rotated { session, .. }
            | Answer::Updated { session, .. } => Some(session.id),
            _ => None,
        };
        let incarnation = reported.and_then(|id| self.sessions.get(&id).map(|s| s.incarnation));
        self.dedup.insert(
            key,
            Memo {
                kind,
                fields,
                answer: answer.clone(),
                expires_at: self.now.saturating_add(self.policy.dedup_window_ms),
                data: content.0,
                attributes: content.1,
                incarnation,
            },
        );
        answer
    }

    /// The first answer again, flagged replayed, its session content put back from the
    /// request or from the record still at the reported version, else empty (§6).
    fn replay(&self, memo: &Memo) -> Answer {
        let restore = |v: &SessionView| {
            // "While it is still at the version the first answer reported": the same
            // session, not swept since, at that version.
            let record = self
                .sessions
                .get(&v.id)
                .filter(|s| Some(s.incarnation) == memo.incarnation && s.version == v.version);
            let mut v = v.clone();
            v.data = match (&memo.data, record) {
                (Some(d), _) => d.clone(),
                (None, Some(s)) => s.data.clone(),
                (None, None) => Vec::new(),
            };
            v.attributes = match (&memo.attributes, record) {
                (Some(a), _) => a.clone(),
                (None, Some(s)) => s.attributes.clone(),
                (None, None) => BTreeMap::new(),
            };
            v
        };
        match &memo.answer {
            Answer::Created {
                session,
                sealed,
                evicted,
                ..
            } => Answer::Created {
                session: restore(session),
                sealed: *sealed,
                evicted: evicted.clone(),
                replayed: true,
            },
            Answer::Rotated {
                session, successor, ..
            } => Answer::Rotated {
                session: restore(session),
                successor: *successor,
                replayed: true,
            },
            Answer::Updated { session, .. } => Answer::Updated {
                session: restore(session),
                replayed: true,
            },
            Answer::Revoked { id, already, .. } => Answer::Revoked {
                id: *id,
                already: *already,
                replayed: true,
            },
            Answer::RevokedUser { ids, .. } => Answer::RevokedUser {
                ids: ids.clone(),
                replayed: true,
            },
            other => other.clone(),
        }
    }

    fn find(&self, token: &TokenHash) -> Found {
        for (id, t) in &self.tombstones {
            if t.tokens.contains(token) {
                return Found::Revoked {
                    id: *id,
                    reason: t.reason.clone(),
                };
            }
        }
        for (id, s) in &self.sessions {
            if s.token == *token {
                return Found::Current(*id);
            }
            if let Some(pos) = s.retired.iter().position(|r| r.token == *token) {
                let r = &s.retired[pos];
                return if pos + 1 == s.retired.len() && r.generation + 1 == s.generation {
                    Found::Previous {
                        id: *id,
                        at: self.visible(r.retired_index, r.retired_at),
                    }
                } else {
                    Found::Older(*id)
                };
            }
        }
        Found::Unknown
    }

    fn expired(&self, id: &SessionId) -> bool {
        self.sessions[id].expires_at() <= self.now
    }

    /// §3.2 in its order: unknown, revoked, expired, current, superseded, reused. A reused
    /// token comes back as `Err(TokenReused)` with nothing written; see [`Model::accept`].
    fn judge(&self, token: &TokenHash) -> (Accepted, Option<SessionId>) {
        match self.find(token) {
            Found::Unknown => (Err(Refusal::NotFound), None),
            Found::Revoked { reason, .. } => (Err(Refusal::Revoked(reason)), None),
            Found::Current(id) | Found::Previous { id, .. } | Found::Older(id)
                if self.expired(&id) =>
            {
                (Err(Refusal::Expired), None)
            }
            Found::Current(id) => (Ok((id, false)), None),
            Found::Previous { id, at }
                if self.now.saturating_sub(at) < self.policy.grace_window_ms =>
            {
                (Ok((id, true)), None)
            }
            Found::Previous { id, .. } | Found::Older(id) => (Err(Refusal::TokenReused), Some(id)),
        }
    }

    /// [`Model::judge`] for a command: a reused token costs its session under the revoke
    /// policy (§3.4).
    fn accept(&mut self, token: &TokenHash) -> Accepted {
        let (accepted, reused) = self.judge(token);
        if let Some(id) = reused {
            self.punish(&id);
        }
        accepted
    }

    fn punish(&mut self, id: &SessionId) -> bool {
        if self.policy.reuse_policy == ReusePolicy::Revoke {
            self.revoke_session(id, REUSE);
            true
        } else {
            false
        }
    }

    /// §5: the record goes, a tombstone with every token of the session stays.
    fn revoke_session(&mut self, id: &SessionId, reason: &str) {
        let s = self.sessions.remove(id).expect("revoking a live session");
        let mut tokens: Vec<TokenHash> = s.retired.iter().map(|r| r.token).collect();
        tokens.push(s.token);
        self.tombstones.insert(
            *id,
            Tombstone {
                user: s.user,
                reason: reason.to_string(),
                expires_at: s.absolute_expires_at,
                tokens,
            },
        );
    }

    fn limits_ok(
        &self,
        data: Option<&[u8]>,
        attributes: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let data_ok = data.is_none_or(|d| d.len() <= self.policy.max_data_bytes as usize);
        let attributes_ok = attributes.is_none_or(|a| {
            !a.keys().any(String::is_empty)
                && a.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                    <= self.policy.max_attributes_bytes as usize
        });
        data_ok && attributes_ok
    }

    fn user_ok(user: &str) -> bool {
        (1..=256).contains(&user.len())
    }

    fn reason_ok(reason: &str) -> bool {
        reason.len() <= 128
    }

    fn or_logout(reason: &str) -> &str {
        if reason.is_empty() {
            LOGOUT
        } else {
            reason
        }
    }

    /// §4.1.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        req: Req,
        id: SessionId,
        token: Tok,
        user: &str,
        data: &[u8],
        attributes: &BTreeMap<String, String>,
        idle: Option<u64>,
        absolute: Option<u64>,
    ) -> Answer {
        let idle = idle.unwrap_or(self.policy.default_idle_timeout_ms);
        let absolute = absolute.unwrap_or(self.policy.default_absolute_timeout_ms);
        if !Self::user_ok(user)
            || !self.limits_ok(Some(data), Some(attributes))
            || !(1..=self.policy.max_idle_timeout_ms).contains(&idle)
            || !(1..=self.policy.max_absolute_timeout_ms).contains(&absolute)
        {
            return Answer::Refused(Refusal::InvalidArgument);
        }
        // §5: an id is never used twice; a token belongs to one session.
        if self.sessions.contains_key(&id) || self.tombstones.contains_key(&id) {
            return Answer::Refused(Refusal::InvalidArgument);
        }
        if !matches!(self.find(&token.hash()), Found::Unknown) {
            return Answer::Refused(Refusal::InvalidArgument);
        }
        let now = self.now;
        let mut live: Vec<(u64, SessionId)> = self
            .sessions
            .values()
            .filter(|s| s.user == user && s.expires_at() > now)
            .map(|s| (s.created_at, s.id))
            .collect();
        live.sort();
        let cap = self.policy.max_sessions_per_user as usize;
        let mut evicted = Vec::new();
        if live.len() >= cap {
            if self.policy.cap_policy == CapPolicy::Refuse {
                return Answer::Refused(Refusal::ResourceExhausted);
            }
            for (_, old) in live.iter().take(live.len() + 1 - cap) {
                self.revoke_session(old, EVICTED);
                evicted.push(*old);
            }
        }
        self.creates += 1;
        let s = Session {
            id,
            user: user.to_string(),
            generation: 0,
            version: 1,
            data: data.to_vec(),
            attributes: attributes.clone(),
            created_at: now,
            last_active_at: now,
            idle_timeout_ms: idle,
            absolute_expires_at: now.saturating_add(absolute),
            token: token.hash(),
            last_rotated_at: None,
            retired: Vec::new(),
            incarnation: self.creates,
        };
        let session = s.view();
        self.sessions.insert(id, s);
        Answer::Created {
            session,
            sealed: req.request_id().seal(&seal_key(), &id, &token.token()),
            evicted,
            replayed: false,
        }
    }

    /// §3.3.
    fn rotate(&mut self, presented: TokenHash, successor: TokenHash) -> Answer {
        let (id, superseded) = match self.accept(&presented) {
            Ok(a) => a,
            Err(r) => return Answer::Refused(r),
        };
        let now = self.now;
        let index = self.index;
        let policy = self.policy.clone();
        if superseded {
            let s = &self.sessions[&id];
            let first = s.retired.last().and_then(|r| r.successor);
            return Answer::Rotated {
                session: s.view(),
                successor: first,
                replayed: true,
            };
        }
        let s = &self.sessions[&id];
        // §3.3 and §7: the interval counts from when the last rotation became visible.
        let last = s
            .retired
            .last()
            .map(|r| self.visible(r.retired_index, r.retired_at));
        if last.is_some_and(|at| now.saturating_sub(at) < policy.rotation_min_interval_ms) {
            return Answer::Rotated {
                session: s.view(),
                successor: None,
                replayed: false,
            };
        }
        if !matches!(self.find(&successor), Found::Unknown) {
            // A successor that is already some session's token would belong to two.
            return Answer::Refused(Refusal::InvalidArgument);
        }
        let s = self.sessions.get_mut(&id).expect("accepted");
        for r in &mut s.retired {
            r.successor = None;
        }
        s.retired.push(Retired {
            generation: s.generation,
            token: s.token,
            retired_at: now,
            retired_index: index,
            successor: Some(successor),
        });
        while s.retired.len() > policy.retired_generations as usize {
            s.retired.remove(0);
        }
        s.token = successor;
        s.generation += 1;
        s.version += 1;
        s.last_active_at = now;
        s.last_rotated_at = Some(now);
        Answer::Rotated {
            session: s.view(),
            successor: Some(successor),
            replayed: false,
        }
    }

    /// A live session by id (§4.4).
    fn live_by_id(&self, id: &SessionId) -> Result<SessionId, Refusal> {
        if let Some(t) = self.tombstones.get(id) {
            return Err(Refusal::Revoked(t.reason.clone()));
        }
        match self.sessions.get(id) {
            None => Err(Refusal::NotFound),
            Some(_) if self.expired(id) => Err(Refusal::Expired),
            Some(_) => Ok(*id),
        }
    }

    /// §4.4.
    fn update(
        &mut self,
        by: &By,
        expected_version: u64,
        data: Option<&[u8]>,
        attributes: Option<&BTreeMap<String, String>>,
    ) -> Answer {
        if !self.limits_ok(data, attributes) {
            return Answer::Refused(Refusal::InvalidArgument);
        }
        let id = match by {
            By::Token(t) => self.accept(&t.hash()).map(|(id, _)| id),
            By::Id(id) => self.live_by_id(id),
        };
        let id = match id {
            Ok(id) => id,
            Err(r) => return Answer::Refused(r),
        };
        let now = self.now;
        let s = self.sessions.get_mut(&id).expect("accepted");
        if expected_version != 0 && expected_version != s.version {
            return Answer::Refused(Refusal::VersionConflict(s.version));
        }
        if let Some(d) = data {
            s.data = d.to_vec();
        }
        if let Some(a) = attributes {
            s.attributes = a.clone();
        }
        s.version += 1;
        s.last_active_at = now;
        Answer::Updated {
            session: s.view(),
            replayed: false,
        }
    }

    /// The touch interval of a session (§4.2).
    fn touch_interval(&self, idle: u64) -> u64 {
        self.policy
            .touch_interval_ms
            .unwrap_or((idle / 10).min(60_000))
    }

    /// §4.2.
    fn touch(&mut self, token: TokenHash) -> Answer {
        let (id, superseded) = match self.accept(&token) {
            Ok(a) => a,
            Err(r) => return Answer::Refused(r),
        };
        let now = self.now;
        let interval = self.touch_interval(self.sessions[&id].idle_timeout_ms);
        let s = self.sessions.get_mut(&id).expect("accepted");
        if now.saturating_sub(s.last_active_at) < interval {
            return Answer::Touched {
                session: s.view(),
                written: false,
                superseded,
            };
        }
        s.last_active_at = now;
        s.version += 1;
        Answer::Touched {
            session: s.view(),
            written: true,
            superseded,
        }
    }

    /// §4.5: ignores expiry; an already revoked session answers success.
    fn revoke(&mut self, by: &By, reason: &str) -> Answer {
        if !Self::reason_ok(reason) {
            return Answer::Refused(Refusal::InvalidArgument);
        }
        let reason = Self::or_logout(reason);
        let already = |id: SessionId| Answer::Revoked {
            id,
            already: true,
            replayed: false,
        };
        let id = match by {
            By::Id(id) => {
                if self.tombstones.contains_key(id) {
                    return already(*id);
                }
                if !self.sessions.contains_key(id) {
                    return Answer::Refused(Refusal::NotFound);
                }
                *id
            }
            By::Token(t) => match self.find(&t.hash()) {
                Found::Unknown => return Answer::Refused(Refusal::NotFound),
                Found::Revoked { id, .. } => return already(id),
                Found::Current(id) => id,
                Found::Previous { id, at }
                    if self.now.saturating_sub(at) < self.policy.grace_window_ms =>
                {
                    id
                }
                Found::Previous { id, .. } | Found::Older(id) => {
                    self.punish(&id);
                    return Answer::Refused(Refusal::TokenReused);
                }
            },
        };
        self.revoke_session(&id, reason);
        Answer::Revoked {
            id,
            already: false,
            replayed: false,
        }
    }

    /// §4.6: every session in the user's index, expired or not, but `except`.
    fn revoke_user(&mut self, user: &str, except: Option<&SessionId>, reason: &str) -> Answer {
        if !Self::user_ok(user) || !Self::reason_ok(reason) {
            return Answer::Refused(Refusal::InvalidArgument);
        }
        let reason = Self::or_logout(reason);
        let mut ids: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.user == user && Some(&s.id) != except)
            .map(|s| s.id)
            .collect();
        for id in &ids {
            self.revoke_session(id, reason);
        }
        ids.sort();
        Answer::RevokedUser {
            ids,
            replayed: false,
        }
    }

    /// §3.4: a read saw a reused token; judged again now.
    fn report_reuse(&mut self, token: TokenHash) -> Answer {
        let revoked = match self.judge(&token) {
            (_, Some(id)) => self.punish(&id),
            _ => false,
        };
        Answer::ReuseHandled { revoked }
    }

    /// §7: due rows in expiry-index order — kind (sessions, tombstones, request ids), then
    /// deadline, then key — at most `limit` of them.
    fn expire(&mut self, limit: u32) -> Answer {
        let now = self.now;
        let mut due: Vec<(u8, u64, [u8; 16])> = Vec::new();
        for s in self.sessions.values() {
            if s.expires_at() <= now {
                due.push((0, s.expires_at(), s.id.0));
            }
        }
        for (id, t) in &self.tombstones {
            if t.expires_at <= now {
                due.push((1, t.expires_at, id.0));
            }
        }
        for (k, m) in &self.dedup {
            if m.expires_at <= now {
                due.push((2, m.expires_at, k.0));
            }
        }
        due.sort();
        let (mut sessions, mut tombstones, mut dedup) = (0, 0, 0);
        for (kind, _, key) in due.into_iter().take(limit as usize) {
            match kind {
                0 => {
                    self.sessions.remove(&SessionId(key));
                    sessions += 1;
                }
                1 => {
                    self.tombstones.remove(&SessionId(key));
                    tombstones += 1;
                }
                _ => {
                    self.dedup.remove(&RequestKey(key));
                    dedup += 1;
                }
            }
        }
        Answer::Expired {
            sessions,
            tombstones,
            dedup,
        }
    }

    /// What `GetSession` answers for `token` now, without the write a reuse would cause:
    /// the session, whether the token is superseded, and whether a touch is due.
    pub fn get(&self, token: &TokenHash) -> Result<(SessionView, bool, bool), Refusal> {
        let (id, superseded) = self.judge(token).0?;
        let s = &self.sessions[&id];
        let due =
            self.now.saturating_sub(s.last_active_at) >= self.touch_interval(s.idle_timeout_ms);
        Ok((s.view(), superseded, due))
    }
}
