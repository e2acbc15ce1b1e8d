//! Key layouts of the state machine's column families.

use crate::token::{RequestKey, SessionId, TokenHash};

/// Expiry index kinds; the kind is the first key byte, so one family serves all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryKind {
    Session = 0,
    Tombstone = 1,
    Dedup = 2,
}

impl ExpiryKind {
    /// Every kind, in key order.
    pub const ALL: [ExpiryKind; 3] = [
        ExpiryKind::Session,
        ExpiryKind::Tombstone,
        ExpiryKind::Dedup,
    ];

    fn from_byte(b: u8) -> Option<ExpiryKind> {
        ExpiryKind::ALL.into_iter().find(|k| *k as u8 == b)
    }
}

/// Meta key of the state-machine clock.
pub const CLOCK: &[u8] = b"clock";
/// Meta key of the policy.
pub const POLICY: &[u8] = b"policy";
/// Meta key of the recent [`crate::record::LateCommit`]s.
pub const LATE_COMMITS: &[u8] = b"late_commits";

/// `sessions` key.
pub fn session(id: &SessionId) -> Vec<u8> {
    id.0.to_vec()
}

/// `tokens` key.
pub fn token(h: &TokenHash) -> Vec<u8> {
    h.0.to_vec()
}

/// `dedup` key.
pub fn dedup(k: &RequestKey) -> Vec<u8> {
    k.0.to_vec()
}

/// Prefix of one user's rows in `users`: u16 BE length ‖ user id. Length-prefixed, so no
/// user's range contains another's.
pub fn user_prefix(user_id: &str) -> Vec<u8> {
    let b = user_id.as_bytes();
    let mut k = Vec::with_capacity(2 + b.len() + 1 + 24);
    k.extend_from_slice(&(b.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(b);
    k
}

/// Tag after the user prefix of the user's session count row.
const USER_COUNT: u8 = 0;
/// Tag after the user prefix of the user's session rows.
const USER_SESSION: u8 = 1;

/// `users` key of a user's session count (value: u64 BE, the number of session rows; the row
/// exists only while that number is positive). Lets a create learn whether the user is at the
/// cap with one point read.
pub fn user_count(user_id: &str) -> Vec<u8> {
    let mut k = user_prefix(user_id);
    k.push(USER_COUNT);
    k
}

/// Prefix of a user's session rows in `users`, which sort by (created_at, session id): the
/// oldest session is the first row of a scan of this prefix.
pub fn user_sessions(user_id: &str) -> Vec<u8> {
    let mut k = user_prefix(user_id);
    k.push(USER_SESSION);
    k
}

/// `users` key of one session: [`user_sessions`] ‖ created_at (u64 BE) ‖ session id
/// (value: the session's expires_at, u64 BE, so the cap can tell live rows from expired ones
/// without decoding records).
pub fn user(user_id: &str, created_at: u64, id: &SessionId) -> Vec<u8> {
    let mut k = user_sessions(user_id);
    k.extend_from_slice(&created_at.to_be_bytes());
    k.extend_from_slice(&id.0);
    k
}

/// The exclusive end of a prefix range (the prefix with its last byte incremented, carrying).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// (created_at, session id) from the tail of a `users` session key.
pub fn parse_user(key: &[u8]) -> Option<(u64, SessionId)> {
    let tail = key.get(key.len().checked_sub(24)?..)?;
    let created_at = u64::from_be_bytes(tail.get(..8)?.try_into().ok()?);
    Some((created_at, SessionId(tail.get(8..)?.try_into().ok()?)))
}

/// `expiry` key: kind ‖ due_at (u64 BE) ‖ 16-byte key.
pub fn expiry(kind: ExpiryKind, due_at: u64, key: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(kind as u8);
    k.extend_from_slice(&due_at.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Parts of an `expiry` key.
pub fn parse_expiry(key: &[u8]) -> Option<(ExpiryKind, u64, [u8; 16])> {
    if key.len() != 25 {
        return None;
    }
    let kind = ExpiryKind::from_byte(key[0])?;
    let due = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let k: [u8; 16] = key[9..25].try_into().ok()?;
    Some((kind, due, k))
}

/// `revocations` key: log index ‖ sequence within the entry.
pub fn revocation(index: u64, seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&index.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The (log index, sequence) of a `revocations` key.
pub fn parse_revocation(key: &[u8]) -> Option<(u64, u32)> {
    let index = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let seq = u32::from_be_bytes(key.get(8..12)?.try_into().ok()?);
    Some((index, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_prefixes_do_not_overlap() {
        let id = SessionId([1; 16]);
        assert!(!user("ab", 5, &id).starts_with(&user_prefix("a")));
        assert!(user("a", 5, &id).starts_with(&user_sessions("a")));
        assert!(!user_count("a").starts_with(&user_sessions("a")));
        assert_eq!(parse_user(&user("a", 5, &id)), Some((5, id)));
    }

    #[test]
    fn a_users_sessions_sort_oldest_first_then_by_id() {
        let (lo, hi) = (SessionId([1; 16]), SessionId([2; 16]));
        assert!(user("a", 5, &hi) < user("a", 6, &lo));
        assert!(user("a", 5, &lo) < user("a", 5, &hi));
        assert!(
            user("a", 256, &lo) > user("a", 255, &hi),
            "big-endian times"
        );
    }

    #[test]
    fn expiry_keys_sort_by_kind_then_time() {
        let a = expiry(ExpiryKind::Session, 5, &[9; 16]);
        let b = expiry(ExpiryKind::Session, 6, &[0; 16]);
        let c = expiry(ExpiryKind::Tombstone, 1, &[0; 16]);
        assert!(a < b && b < c);
        assert_eq!(parse_expiry(&b), Some((ExpiryKind::Session, 6, [0; 16])));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
