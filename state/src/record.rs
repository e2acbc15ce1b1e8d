//! What the state machine stores: session records, token rows, tombstones, dedup rows,
//! revocation events, and the cluster-wide policy. All are encoded with [`crate::codec`].

use crate::token::{RequestKey, SealedToken, SessionId, TokenHash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A live session. Tokens appear only as hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
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
    /// Hash of the current generation's token.
    pub token_hash: TokenHash,
    /// When the current generation was produced by a rotation; `None` before the first one.
    pub last_rotated_at: Option<u64>,
    /// Retired generations, oldest first, at most `Policy::retired_generations` of them.
    pub retired: Vec<RetiredToken>,
}

impl SessionRecord {
    /// `min(last_active_at + idle_timeout_ms, absolute_expires_at)`.
    pub fn expires_at(&self) -> u64 {
        self.last_active_at
            .saturating_add(self.idle_timeout_ms)
            .min(self.absolute_expires_at)
    }
}

/// A generation that was rotated away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredToken {
    pub generation: u64,
    pub hash: TokenHash,
    /// State-machine time of the rotation that retired it: its grace window starts here,
    /// unless the rotation was committed late (see [`LateCommit`]).
    pub retired_at: u64,
    /// Log index of the entry that held the rotation.
    pub retired_index: u64,
    /// The successor sealed with this token; kept only for the newest retired generation.
    pub sealed_successor: Option<SealedToken>,
}

/// Log entries `from_index..to_index` that a new leader committed without having been told
/// they were committed (they are of earlier terms: their stamps are from when they were
/// proposed). What they did became visible only at `at`, the time of the new leader's first
/// entry `to_index`. A rotation among them would otherwise start its grace window in the past,
/// by as long as the cluster took to elect that leader (or was down): a tab presenting the
/// previous token right after the rotation became visible would be judged a reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateCommit {
    pub from_index: u64,
    pub to_index: u64,
    pub at: u64,
}

impl LateCommit {
    /// How many are kept: the newest, one per leader change. A rotation older than all of
    /// them is long past any grace window.
    pub const KEPT: usize = 32;

    /// When a change applied at state-machine time `at`, from the entry at `index`, became
    /// visible: `at`, or the time of the first late commit that covers `index`.
    pub fn visible_at(late: &[LateCommit], index: u64, at: u64) -> u64 {
        late.iter()
            .filter(|l| l.from_index <= index && index < l.to_index)
            .map(|l| l.at)
            .min()
            .map_or(at, |l| l.max(at))
    }
}

/// Row of the `tokens` index: which session and generation a token hash belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    pub id: SessionId,
    pub generation: u64,
}

/// What remains of a revoked session: enough to answer `REVOKED` for it and every one of its
/// tokens until it could never have been valid anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: SessionId,
    pub user_id: String,
    pub reason: String,
    pub revoked_at: u64,
    /// The session's `absolute_expires_at`: the tombstone is swept then.
    pub expires_at: u64,
    /// Token rows that still point at this id, removed with the tombstone.
    pub token_hashes: Vec<TokenHash>,
    /// Key of this revocation in the `revocations` feed, removed with the tombstone.
    #[serde(with = "serde_bytes")]
    pub feed_key: Vec<u8>,
}

/// One entry of the revocation feed served by `WatchRevocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvent {
    pub index: u64,
    pub id: SessionId,
    pub user_id: String,
    pub reason: String,
    pub revoked_at: u64,
}

/// A remembered response, so that a retried mutation gets the first answer. Small whatever the
/// session holds: the outcome's session views are kept without data and attributes, which a
/// replay puts back (see [`crate::dedup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRow {
    pub request_id: RequestKey,
    /// Which operation the id was first used for; a reuse for another operation is refused.
    pub op: OpKind,
    /// [`crate::dedup::fingerprint`] of the first request: a reuse of the id for a request
    /// that differs in anything the client chose is refused instead of answered.
    #[serde(with = "serde_bytes")]
    pub fingerprint: [u8; 32],
    pub expires_at: u64,
    /// The first outcome, every session view in it with empty `data` and `attributes`.
    pub outcome: crate::command::Outcome,
}

/// Mutation kinds that carry a request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    Create,
    Rotate,
    Update,
    Revoke,
    RevokeUser,
}

/// What to do with a token presented after it was rotated away and its grace window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReusePolicy {
    /// Revoke the whole session (reason `reuse_detected`) and answer `TOKEN_REUSED`.
    Revoke,
    /// Only answer `TOKEN_REUSED`.
    Reject,
}

/// What to do when a user already holds `max_sessions_per_user` live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapPolicy {
    /// Revoke the oldest (reason `evicted`) to make room.
    EvictOldest,
    /// Refuse the create with `RESOURCE_EXHAUSTED`.
    Refuse,
}

/// Cluster-wide rules. Part of the replicated state (set by a `Configure` command), because
/// every replica must apply the same rules to stay identical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub grace_window_ms: u64,
    pub rotation_min_interval_ms: u64,
    pub reuse_policy: ReusePolicy,
    /// At least [`MIN_RETIRED_GENERATIONS`].
    pub retired_generations: u32,
    pub max_sessions_per_user: u32,
    pub cap_policy: CapPolicy,
    pub dedup_window_ms: u64,
    pub default_idle_timeout_ms: u64,
    pub default_absolute_timeout_ms: u64,
    pub max_idle_timeout_ms: u64,
    pub max_absolute_timeout_ms: u64,
    pub max_data_bytes: u32,
    /// Sum of key and value lengths.
    pub max_attributes_bytes: u32,
    /// `None`: `min(60 s, idle_timeout / 10)` per session.
    pub touch_interval_ms: Option<u64>,
}

/// Lower bound on the number of retired generations kept for reuse detection.
pub const MIN_RETIRED_GENERATIONS: u32 = 64;
/// Longest accepted `user_id`, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Longest accepted revoke reason, in bytes.
pub const MAX_REASON_BYTES: usize = 128;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace_window_ms: 30_000,
            rotation_min_interval_ms: 30_000,
            reuse_policy: ReusePolicy::Revoke,
            retired_generations: MIN_RETIRED_GENERATIONS,
            max_sessions_per_user: 1000,
            cap_policy: CapPolicy::EvictOldest,
            dedup_window_ms: 10 * 60_000,
            default_idle_timeout_ms: 24 * 3_600_000,
            default_absolute_timeout_ms: 30 * 24 * 3_600_000,
            max_idle_timeout_ms: 400 * 24 * 3_600_000,
            max_absolute_timeout_ms: 400 * 24 * 3_600_000,
            max_data_bytes: 64 * 1024,
            max_attributes_bytes: 4096,
            touch_interval_ms: None,
        }
    }
}

impl Policy {
    /// The touch interval for a session with this idle timeout.
    pub fn touch_interval_for(&self, idle_timeout_ms: u64) -> u64 {
        self.touch_interval_ms
            .unwrap_or_else(|| (idle_timeout_ms / 10).min(60_000))
    }
}
