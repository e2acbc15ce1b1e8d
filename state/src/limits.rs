//! Size and range limits on client input, checked by the server before proposing (so bad input
//! costs no write) and again by apply (so the log can never carry it into the state).

use crate::command::SessionError;
use crate::record::{Policy, MAX_REASON_BYTES, MAX_USER_ID_BYTES, MIN_RETIRED_GENERATIONS};
use std::collections::BTreeMap;

fn invalid(msg: impl Into<String>) -> SessionError {
    SessionError::InvalidArgument(msg.into())
}

/// Check a user id: 1..=256 bytes.
pub fn user_id(user_id: &str) -> Result<(), SessionError> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(invalid(format!(
            "user_id must be 1 to {MAX_USER_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Check session data against the policy limit.
pub fn data(policy: &Policy, data: &[u8]) -> Result<(), SessionError> {
    if data.len() > policy.max_data_bytes as usize {
        return Err(invalid(format!(
            "data is {} bytes; the limit is {}",
            data.len(),
            policy.max_data_bytes
        )));
    }
    Ok(())
}

/// Check attributes: total key + value bytes within the policy limit, no empty keys.
pub fn attributes(policy: &Policy, attrs: &BTreeMap<String, String>) -> Result<(), SessionError> {
    if attrs.keys().any(|k| k.is_empty()) {
        return Err(invalid("attribute names must not be empty"));
    }
    let total: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > policy.max_attributes_bytes as usize {
        return Err(invalid(format!(
            "attributes are {total} bytes; the limit is {}",
            policy.max_attributes_bytes
        )));
    }
    Ok(())
}

/// Resolve and check timeouts: `None` takes the policy default; 0 and values above the policy
/// maximum are refused. Returns (idle_timeout_ms, absolute_timeout_ms).
pub fn timeouts(
    policy: &Policy,
    idle_timeout_ms: Option<u64>,
    absolute_timeout_ms: Option<u64>,
) -> Result<(u64, u64), SessionError> {
    let idle = idle_timeout_ms.unwrap_or(policy.default_idle_timeout_ms);
    let absolute = absolute_timeout_ms.unwrap_or(policy.default_absolute_timeout_ms);
    if idle == 0 || idle > policy.max_idle_timeout_ms {
        return Err(invalid(format!(
            "idle_timeout_ms must be 1 to {}",
            policy.max_idle_timeout_ms
        )));
    }
    if absolute == 0 || absolute > policy.max_absolute_timeout_ms {
        return Err(invalid(format!(
            "absolute_timeout_ms must be 1 to {}",
            policy.max_absolute_timeout_ms
        )));
    }
    Ok((idle, absolute))
}

/// Check a revoke reason: at most 128 bytes.
pub fn reason(reason: &str) -> Result<(), SessionError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(invalid(format!(
            "reason must be at most {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Check a policy before it becomes the cluster's.
pub fn policy(p: &Policy) -> Result<(), SessionError> {
    if p.retired_generations < MIN_RETIRED_GENERATIONS {
        return Err(invalid(format!(
            "retired_generations must be at least {MIN_RETIRED_GENERATIONS}"
        )));
    }
    if p.max_sessions_per_user == 0 {
        return Err(invalid("max_sessions_per_user must be at least 1"));
    }
    if p.max_idle_timeout_ms == 0 || p.max_absolute_timeout_ms == 0 {
        return Err(invalid("maximum timeouts must be positive"));
    }
    if p.dedup_window_ms == 0 {
        // A zero window would answer every retry by applying it again: no exactly-once.
        return Err(invalid("dedup_window_ms must be positive"));
    }
    timeouts(p, None, None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_out_of_range_input() {
        let p = Policy::default();
        assert!(user_id("").is_err());
        assert!(user_id(&"u".repeat(257)).is_err());
        assert!(user_id(&"u".repeat(256)).is_ok());
        assert!(data(&p, &vec![0; 64 * 1024]).is_ok());
        assert!(data(&p, &vec![0; 64 * 1024 + 1]).is_err());
        let mut a = BTreeMap::new();
        a.insert("k".to_string(), "v".repeat(4095));
        assert!(attributes(&p, &a).is_ok());
        a.insert("x".to_string(), String::new());
        assert!(attributes(&p, &a).is_err());
        let mut e = BTreeMap::new();
        e.insert(String::new(), "v".into());
        assert!(attributes(&p, &e).is_err());
        assert_eq!(
            timeouts(&p, None, None).unwrap(),
            (p.default_idle_timeout_ms, p.default_absolute_timeout_ms)
        );
        assert!(timeouts(&p, Some(0), None).is_err());
        assert!(timeouts(&p, None, Some(p.max_absolute_timeout_ms + 1)).is_err());
        assert!(reason(&"r".repeat(129)).is_err());
        assert!(policy(&p).is_ok());
        assert!(policy(&Policy {
            retired_generations: 3,
            ..Policy::default()
        })
        .is_err());
        assert!(policy(&Policy {
            dedup_window_ms: 0,
            ..Policy::default()
        })
        .is_err());
        assert!(policy(&Policy {
            max_sessions_per_user: 0,
            ..Policy::default()
        })
        .is_err());
        assert!(policy(&Policy {
            default_idle_timeout_ms: p.max_idle_timeout_ms + 1,
            ..Policy::default()
        })
        .is_err());
    }
}
