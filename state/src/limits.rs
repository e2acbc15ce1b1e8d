//! Size and range limits on client input, checked by the server before proposing (so bad input
//! costs no write) and again by apply (so the log can never carry it into the state).

use crate::command::SessionError;
use crate::record::Policy;
use std::collections::BTreeMap;

/// Check a user id: 1..=256 bytes.
pub fn user_id(user_id: &str) -> Result<(), SessionError> {
    let _ = user_id;
    todo!()
}

/// Check session data against the policy limit.
pub fn data(policy: &Policy, data: &[u8]) -> Result<(), SessionError> {
    let _ = (policy, data);
    todo!()
}

/// Check attributes: total key + value bytes within the policy limit, no empty keys.
pub fn attributes(policy: &Policy, attrs: &BTreeMap<String, String>) -> Result<(), SessionError> {
    let _ = (policy, attrs);
    todo!()
}

/// Resolve and check timeouts: `None` takes the policy default; 0 and values above the policy
/// maximum are refused. Returns (idle_timeout_ms, absolute_timeout_ms).
pub fn timeouts(
    policy: &Policy,
    idle_timeout_ms: Option<u64>,
    absolute_timeout_ms: Option<u64>,
) -> Result<(u64, u64), SessionError> {
    let _ = (policy, idle_timeout_ms, absolute_timeout_ms);
    todo!()
}

/// Check a revoke reason: at most 128 bytes.
pub fn reason(reason: &str) -> Result<(), SessionError> {
    let _ = reason;
    todo!()
}
