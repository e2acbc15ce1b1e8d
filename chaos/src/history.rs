//! The recorded history: one JSON object per line, one line per completed operation or
//! nemesis event.
//!
//! Times are nanoseconds since the Unix epoch read from a monotonic clock anchored to the wall
//! clock once when the run starts, so they order correctly and compare directly with the
//! millisecond wall-clock stamps the cluster puts in records (`expires_at_ms`, …).
//!
//! Secrets never appear: tokens and session data are recorded as [`fingerprint`]s.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How an operation ended, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The store answered and the operation took effect (or, for reads, observed `value`).
    Ok,
    /// The store answered with a definite refusal (`value.error`); nothing changed.
    Fail,
    /// Unknown: a timeout, a reset connection or a deliberately dropped response. The
    /// operation may have taken effect at any point after its invocation, or never.
    Info,
}

/// Operation names used in [`Event::op`].
pub mod op {
    pub const CREATE: &str = "create";
    pub const GET: &str = "get";
    pub const ROTATE: &str = "rotate";
    pub const UPDATE: &str = "update";
    pub const REVOKE: &str = "revoke";
    pub const REVOKE_USER: &str = "revoke_user";
    pub const NEMESIS: &str = "nemesis";
}

/// Error names used in [`Value::error`] for `fail` outcomes (the store's error codes), and
/// the reasons recorded for `info` outcomes.
pub mod error {
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const EXPIRED: &str = "EXPIRED";
    pub const REVOKED: &str = "REVOKED";
    pub const TOKEN_REUSED: &str = "TOKEN_REUSED";
    pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const RESOURCE_EXHAUSTED: &str = "RESOURCE_EXHAUSTED";
    /// `info`: the client gave up (timeouts / unavailable after every retry).
    pub const TIMEOUT: &str = "timeout";
    /// `info`: the harness threw the response away after the store answered.
    pub const DROPPED: &str = "dropped";
}

/// What the operation was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Args {
    /// The user (create, revoke_user; also set on session ops for reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fingerprint of the token presented (get, rotate, update, revoke by token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The operation names its session by id rather than token (update, revoke).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_id: bool,
    /// update: the compare-and-swap version (0 = unconditional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// create/update: fingerprint of the data written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Mutations: the request id (hex). A retry of one logical mutation carries the same id
    /// and must receive the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// revoke_user: the session id spared ("log out everywhere but here").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
    /// get: "linearizable" (default when absent) or "stale".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// The tab deliberately presented a token it knows is old (a replay, as an attacker
    /// would): a TOKEN_REUSED answer to it is expected, not a spurious logout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// A read done after the final heal, to find lost writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_read: bool,
    /// nemesis: what was done, e.g. "partition [1,2] [3]" or "kill 2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nemesis: Option<String>,
}

/// What the operation returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// create: the new token; rotate: the token to hold from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Fingerprint of the session data in the returned record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_expires_at_ms: Option<u64>,
    /// revoke: the session was already revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub already_revoked: Option<bool>,
    /// revoke_user: the ids revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ids: Option<Vec<String>>,
    /// fail: the store's error code ([`error`]); info: why the outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// fail with REVOKED: the revocation reason ("logout", "reuse_detected", "evicted", …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// fail with VERSION_CONFLICT: the version the store holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Who issued it: a tab ("u3.t1"), "nemesis" or "final".
    pub process: String,
    /// The session's public id, when known (absent for a create whose answer was lost, for
    /// revoke_user, and for nemesis events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// One of [`op`].
    pub op: String,
    #[serde(default)]
    pub args: Args,
    pub result: Outcome,
    #[serde(default)]
    pub value: Value,
    pub invoke_ns: u64,
    pub complete_ns: u64,
}

/// The policy the cluster ran with, as far as the checker needs it. Written beside the
/// history as `run.json`; `check` falls back to [`RunInfo::default`] without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub seed: u64,
    pub grace_window_ms: u64,
    pub rotation_min_interval_ms: u64,
    /// "revoke" or "reject".
    pub reuse_policy: String,
    /// Documented bound on clock skew between nodes, and between nodes and the harness.
    pub clock_skew_ms: u64,
    /// How old a state a STALE read may return (the nodes' `--stale-read-bound-ms`).
    #[serde(default = "default_stale_bound")]
    pub stale_read_bound_ms: u64,
}

fn default_stale_bound() -> u64 {
    crate::policy::STALE_READ_BOUND_MS
}

impl Default for RunInfo {
    fn default() -> Self {
        RunInfo {
            seed: 0,
            grace_window_ms: crate::policy::GRACE_WINDOW_MS,
            rotation_min_interval_ms: crate::policy::GRACE_WINDOW_MS,
            reuse_policy: "revoke".into(),
            clock_skew_ms: crate::policy::CLOCK_SKEW_MS,
            stale_read_bound_ms: crate::policy::STALE_READ_BOUND_MS,
        }
    }
}

/// A short, stable, non-reversible name for a secret or a blob: the first 8 bytes of its
/// SHA-256 in hex.
pub fn fingerprint(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    hex::encode(&d[..8])
}

/// The run's clock: monotonic, expressed as nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl Clock {
    /// Anchor a new clock to the wall clock now.
    pub fn start() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            origin: Instant::now(),
            origin_unix_ns: unix,
        }
    }

    /// Now, in nanoseconds since the Unix epoch (monotonic).
    pub fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }
}

/// Write a history as JSON lines.
pub fn write(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Read a history written by [`write`]; blank lines are skipped, a malformed line is an
/// error naming its line number.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for (i, line) in f.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&line)
            .map_err(|err| anyhow::anyhow!("{}:{}: {err}", path.display(), i + 1))?;
        out.push(e);
    }
    Ok(out)
}
