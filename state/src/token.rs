//! Session ids, tokens and what the store keeps of them.
//!
//! A token is `sdt1_` followed by 32 random bytes in unpadded base64url. The store keeps only
//! its SHA-256. A rotation's successor is kept *sealed* with the token it replaces
//! (XOR with a hash of that token under a separate domain), so that a racing request that
//! still holds the previous token can be handed the very same successor, while nothing at rest
//! or in the log reveals a usable token. A created session's token is kept for replays sealed
//! with the cluster's [`SealKey`] and the request id, so the log, a snapshot or the database
//! files are not enough to open it, even together with a request id an application logged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The prefix every token carries, so secret scanners can recognise a leaked one.
pub const TOKEN_PREFIX: &str = "sdt1_";
/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// Length of a token's text form.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;

/// Why a presented id or token was refused before any lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not `sdt1_` + 43 base64url characters.
    #[error("malformed token")]
    Token,
    /// Not 22 base64url characters encoding 16 bytes.
    #[error("malformed session id")]
    SessionId,
    /// A request id must be exactly 16 bytes.
    #[error("request_id must be 16 bytes")]
    RequestId,
}

/// Public, stable identifier of a session: 16 random bytes.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl SessionId {
    /// Parse the 22-character base64url form.
    pub fn parse(s: &str) -> Result<SessionId, FormatError> {
        if s.len() != 22 {
            return Err(FormatError::SessionId);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| FormatError::SessionId)?;
        let arr: [u8; 16] = bytes.try_into().map_err(|_| FormatError::SessionId)?;
        Ok(SessionId(arr))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Client-chosen idempotency id of a mutation, as received. Never stored or logged as is:
/// the log and the dedup table hold its [`RequestKey`] (scoped to the caller's principal), and
/// a created session's token is kept for replays sealed with a pad derived from the cluster's
/// [`SealKey`] and this id.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct RequestId([u8; 16]);

impl RequestId {
    /// Accept exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Result<RequestId, FormatError> {
        let arr: [u8; 16] = b.try_into().map_err(|_| FormatError::RequestId)?;
        Ok(RequestId(arr))
    }

    /// Wrap 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> RequestId {
        RequestId(b)
    }

    /// What the log and the dedup table hold for this id sent by `principal` (the
    /// authenticated caller's name). Scoping by principal keeps one caller's id from ever
    /// answering another caller's request; the principal is length-prefixed so that no two
    /// (principal, id) pairs hash the same input.
    pub fn key(&self, principal: &str) -> RequestKey {
        let p = principal.as_bytes();
        let mut h = Sha256::new();
        h.update(b"sessiond request key v2\0");
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
        h.update(self.0);
        let d: [u8; 32] = h.finalize().into();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        RequestKey(k)
    }

    /// Seal a freshly created session's token for the dedup table, for session `id` (drawn
    /// with the token, so no two creates share a pad).
    pub fn seal(&self, key: &SealKey, id: &SessionId, token: &Token) -> SealedToken {
        SealedToken(xor(&token.0, &self.pad(key, id)))
    }

    /// Open a token sealed by [`RequestId::seal`] with the same key and session id.
    pub fn open(&self, key: &SealKey, id: &SessionId, sealed: &SealedToken) -> Token {
        Token(xor(&sealed.0, &self.pad(key, id)))
    }

    /// The seal key is what the log lacks: without it the id (often logged by applications)
    /// and the stored sealed token together reveal nothing. The session id makes every
    /// create's pad its own, so knowing one token and two sealed ones never reveals the other.
    fn pad(&self, key: &SealKey, id: &SessionId) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"sessiond create seal v3\0");
        h.update(key.0);
        h.update(self.0);
        h.update(id.0);
        h.finalize().into()
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Its key needs the principal, and the id itself is not for logs.
        f.write_str("RequestId(<redacted>)")
    }
}

/// The cluster's secret for sealing created sessions' tokens in the dedup table. Every node of
/// a cluster must hold the same one: a retry may reach another leader, which must open the
/// token the first leader sealed. It is never part of the log, a snapshot or the state (the
/// server loads it from a file made with the certificates), which is what keeps the stored
/// data alone from revealing a token. Not `Display`, and `Debug` redacts it.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// Wrap 32 secret bytes (random, drawn once per cluster).
    pub fn from_bytes(bytes: [u8; 32]) -> SealKey {
        SealKey(bytes)
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// Hash of a [`RequestId`] scoped to its principal: the dedup key.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestKey(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn domain_hash(domain: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(bytes);
    h.finalize().into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// The secret a client holds. Deliberately not `Debug`/`Display` as text, so it cannot slip
/// into a log line by accident; use [`Token::expose`] where the wire needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; TOKEN_BYTES]);

impl Token {
    /// Wrap fresh random bytes (the server draws them; the state machine never does).
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Token {
        Token(bytes)
    }

    /// Parse `sdt1_…`.
    pub fn parse(s: &str) -> Result<Token, FormatError> {
        let body = s.strip_prefix(TOKEN_PREFIX).ok_or(FormatError::Token)?;
        if body.len() != 43 {
            return Err(FormatError::Token);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| FormatError::Token)?;
        let arr: [u8; TOKEN_BYTES] = bytes.try_into().map_err(|_| FormatError::Token)?;
        Ok(Token(arr))
    }

    /// The text form, for the response to the client only.
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// What the store keeps: SHA-256 of the random bytes.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }

    /// Seal `successor` so that only a holder of `self` can open it.
    pub fn seal(&self, successor: &Token) -> SealedToken {
        SealedToken(xor(&successor.0, &self.pad()))
    }

    /// Open a successor sealed with `self`.
    pub fn open(&self, sealed: &SealedToken) -> Token {
        Token(xor(&sealed.0, &self.pad()))
    }

    fn pad(&self) -> [u8; 32] {
        domain_hash(b"sessiond successor seal v1\0", &self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token: the only form in which tokens are stored or logged.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A successor token sealed with its predecessor (see the module doc).
#[derive(Copy, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedToken(#[serde(with = "serde_bytes")] pub [u8; TOKEN_BYTES]);

impl fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedToken(<sealed>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = Token::from_bytes([7u8; 32]);
        let s = t.expose();
        assert!(s.starts_with("sdt1_"));
        assert_eq!(s.len(), TOKEN_LEN);
        assert_eq!(Token::parse(&s).unwrap(), t);
        assert_eq!(Token::parse("sdt1_abc"), Err(FormatError::Token));
        assert_eq!(Token::parse(&s[1..]), Err(FormatError::Token));
        let mut bad = s.clone();
        bad.replace_range(10..11, "!");
        assert_eq!(Token::parse(&bad), Err(FormatError::Token));
        assert!(!format!("{t:?}").contains(&s[5..]));
    }

    #[test]
    fn seal_opens_only_with_the_predecessor() {
        let prev = Token::from_bytes([1u8; 32]);
        let next = Token::from_bytes([2u8; 32]);
        let sealed = prev.seal(&next);
        assert_eq!(prev.open(&sealed), next);
        assert_ne!(Token::from_bytes([3u8; 32]).open(&sealed), next);
        assert_ne!(sealed.0, next.0);
    }

    #[test]
    fn request_seal_opens_only_with_the_seal_key() {
        let key = SealKey::from_bytes([5u8; 32]);
        let rid = RequestId::from_bytes([9u8; 16]);
        let t = Token::from_bytes([4u8; 32]);
        let sid = SessionId([4u8; 16]);
        let sealed = rid.seal(&key, &sid, &t);
        assert_eq!(rid.open(&key, &sid, &sealed), t);
        assert_ne!(rid.open(&key, &SessionId([3u8; 16]), &sealed), t);
        assert_ne!(rid.open(&SealKey::from_bytes([6u8; 32]), &sid, &sealed), t);
        assert_ne!(
            RequestId::from_bytes([8u8; 16]).open(&key, &sid, &sealed),
            t
        );
        assert_ne!(sealed, rid.seal(&SealKey::from_bytes([6u8; 32]), &sid, &t));
        assert_ne!(sealed.0, t.0);
        // What the log and the dedup row hold (the request key, the sealed token) plus the
        // request id: the pad the id alone gives (the old scheme's) does not open it.
        let id_only = domain_hash(b"sessiond create seal v1\0", &rid.0);
        assert_ne!(xor(&sealed.0, &id_only), t.0);
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
        assert_eq!(format!("{rid:?}"), "RequestId(<redacted>)");
    }

    #[test]
    fn request_keys_are_scoped_by_principal() {
        let rid = RequestId::from_bytes([9u8; 16]);
        assert_eq!(rid.key("web-frontend"), rid.key("web-frontend"));
        assert_ne!(rid.key("web-frontend"), rid.key("billing"));
        assert_ne!(rid.key(""), rid.key("\0"));
        assert_ne!(rid.key("a"), RequestId::from_bytes([8u8; 16]).key("a"));
        assert_ne!(rid.key("a").0[..], [9u8; 16][..]);
        // The construction is part of the log format (every replica and every leader must
        // derive the same key): domain, u64 BE length of the principal, principal, id.
        let mut h = Sha256::new();
        h.update(b"sessiond request key v2\0");
        h.update(2u64.to_be_bytes());
        h.update(b"ab");
        h.update([9u8; 16]);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(rid.key("ab").0[..], want[..16]);
        let old = domain_hash(b"sessiond request key v1\0", &rid.0);
        assert_ne!(
            rid.key("").0[..],
            old[..16],
            "a new domain, not the unscoped key"
        );
    }

    #[test]
    fn session_id_round_trips() {
        let id = SessionId([0xAB; 16]);
        let s = id.to_string();
        assert_eq!(s.len(), 22);
        assert_eq!(SessionId::parse(&s).unwrap(), id);
        assert!(SessionId::parse("short").is_err());
        assert!(SessionId::parse("!!!!!!!!!!!!!!!!!!!!!!").is_err());
    }
}
