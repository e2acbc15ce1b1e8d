//! The log's payload: commands built by the leader (with every random value already drawn and
//! every token already hashed) and the outcomes apply produces for them.

use crate::record::{Policy, SessionRecord};
use crate::token::{RequestKey, SealedToken, SessionId, TokenHash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One Raft log entry's payload: a batch of commands stamped with the leader's wall clock.
/// The state machine's time becomes `max(previous, stamp_ms)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub stamp_ms: u64,
    pub commands: Vec<Command>,
}

/// Names a session for operations that accept either form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Token(TokenHash),
    Id(SessionId),
}

/// A state-machine command. Deterministic to apply: it carries everything random.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Replace the cluster policy.
    Configure { policy: Policy },
    Create {
        request_id: RequestKey,
        id: SessionId,
        token_hash: TokenHash,
        /// The new token sealed with the cluster's seal key and the request id
        /// ([`crate::token::RequestId::seal`]), kept in the dedup row so that a retried create
        /// can hand the same token back to the client that made it.
        sealed_token: SealedToken,
        user_id: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        attributes: BTreeMap<String, String>,
        /// `None`: the policy default.
        idle_timeout_ms: Option<u64>,
        /// `None`: the policy default.
        absolute_timeout_ms: Option<u64>,
    },
    Rotate {
        request_id: RequestKey,
        token_hash: TokenHash,
        /// Hash of the successor the leader drew for this request.
        new_token_hash: TokenHash,
        /// That successor sealed with the presented token.
        sealed_successor: SealedToken,
    },
    Update {
        request_id: RequestKey,
        target: Target,
        /// 0: unconditional.
        expected_version: u64,
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
        attributes: Option<BTreeMap<String, String>>,
    },
    /// Slide the idle deadline, if the last activity is older than the touch interval.
    Touch { token_hash: TokenHash },
    Revoke {
        request_id: RequestKey,
        target: Target,
        reason: String,
    },
    RevokeUser {
        request_id: RequestKey,
        user_id: String,
        except: Option<SessionId>,
        reason: String,
    },
    /// A read saw a reused token; apply re-evaluates it and, under `ReusePolicy::Revoke`,
    /// revokes the session.
    ReportReuse { token_hash: TokenHash },
    /// Sweep up to `limit` due rows of the expiry index (sessions, tombstones, dedup rows).
    Expire { limit: u32 },
    /// A new leader's first entry. The entries from `from_index` up to this one are of earlier
    /// terms and this leader was never told they were committed: it committed them itself, so
    /// what they did became visible only now, although they carry their proposer's older
    /// stamps. A rotation among them has its grace window (and its rotation interval) counted
    /// from this entry's time (see [`crate::record::LateCommit`]).
    LeaderCommitted { from_index: u64 },
}

/// A session as clients see it: the record without any token material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: SessionId,
    pub user_id: String,
    pub generation: u64,
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub created_at: u64,
    pub last_active_at: u64,
    pub idle_timeout_ms: u64,
    pub absolute_expires_at: u64,
    pub expires_at: u64,
}

impl From<&SessionRecord> for SessionView {
    fn from(r: &SessionRecord) -> Self {
        SessionView {
            id: r.id,
            user_id: r.user_id.clone(),
            generation: r.generation,
            version: r.version,
            data: r.data.clone(),
            attributes: r.attributes.clone(),
            created_at: r.created_at,
            last_active_at: r.last_active_at,
            idle_timeout_ms: r.idle_timeout_ms,
            absolute_expires_at: r.absolute_expires_at,
            expires_at: r.expires_at(),
        }
    }
}

/// What a rotation handed back for the presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Successor {
    /// The presented token's successor, sealed with the presented token: every request that
    /// presents that token opens the same one.
    Sealed(SealedToken),
    /// Inside `rotation_min_interval`: the presented (current) token stays.
    Unchanged,
}

/// A successful command's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Configured,
    Created {
        session: SessionView,
        /// The token, sealed with the seal key and the request id (see `Command::Create`).
        sealed_token: SealedToken,
        /// Sessions of the same user revoked to respect the per-user cap.
        evicted: Vec<SessionId>,
        replayed: bool,
    },
    Rotated {
        session: SessionView,
        successor: Successor,
        /// The rotation had already happened (a retry, or a racing request got there first).
        replayed: bool,
    },
    Updated {
        session: SessionView,
        replayed: bool,
    },
    Touched {
        session: SessionView,
        /// The touch was due and was written.
        written: bool,
        superseded: bool,
    },
    Revoked {
        id: SessionId,
        already: bool,
        replayed: bool,
    },
    RevokedUser {
        ids: Vec<SessionId>,
        replayed: bool,
    },
    /// `ReportReuse` handled: whether the session was revoked by it.
    ReuseHandled {
        revoked: bool,
    },
    Expired {
        sessions: u32,
        tombstones: u32,
        dedup: u32,
    },
    /// `LeaderCommitted` recorded.
    LeaderCommitted,
}

impl Reply {
    /// The same reply as a dedup replay hands it back: flagged `replayed` where the reply
    /// kind carries the flag, unchanged otherwise.
    pub fn into_replayed(self) -> Reply {
        match self {
            Reply::Created {
                session,
                sealed_token,
                evicted,
                ..
            } => Reply::Created {
                session,
                sealed_token,
                evicted,
                replayed: true,
            },
            Reply::Rotated {
                session, successor, ..
            } => Reply::Rotated {
                session,
                successor,
                replayed: true,
            },
            Reply::Updated { session, .. } => Reply::Updated {
                session,
                replayed: true,
            },
            Reply::Revoked { id, already, .. } => Reply::Revoked {
                id,
                already,
                replayed: true,
            },
            Reply::RevokedUser { ids, .. } => Reply::RevokedUser {
                ids,
                replayed: true,
            },
            other => other,
        }
    }
}

/// Why a command was refused. Every refusal leaves the state unchanged, except that a reused
/// token under `ReusePolicy::Revoke` revokes its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SessionError {
    #[error("session not found")]
    NotFound,
    #[error("session expired")]
    Expired,
    #[error("session revoked ({reason})")]
    Revoked { reason: String },
    #[error("token was already rotated away: reuse detected")]
    TokenReused,
    #[error("version conflict: session is at version {current}")]
    VersionConflict { current: u64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
}

/// The result of one command, as remembered by the dedup table and returned to the client.
pub type Outcome = Result<Reply, SessionError>;
