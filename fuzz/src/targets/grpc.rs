//! Target 1: the request messages a client can send to the client port, decoded with prost
//! as the gRPC codec does, then put through what a handler checks before it reads or writes
//! state (`node/src/api/sessions.rs`): request ids, tokens, session ids, page tokens and the
//! limits on user ids, data, attributes, reasons and timeouts.
//!
//! Input: the first byte chooses the message type (and, in its low bit, whether the rest is
//! the message's bytes as they are, or a recipe for a well-formed message that is then
//! damaged a little).
//!
//! The same bytes are also read as a JSON body of the HTTP/JSON API (canonical proto3 JSON,
//! the generated serde impls): what decodes goes through the same checks, and every message
//! that prost decodes and JSON can write reads back from its JSON unchanged.
//!
//! Asserted: no panic; what is accepted reads back the same (a token, session id or page
//! token that parses prints as it was sent, so no two spellings name one token); and a
//! create the node would propose is one the state machine applies, because the node and
//! apply enforce the same limits; JSON round trips are exact.

use crate::input::{mutate, Source};
use prost::Message;
use sessiond::api::convert;
use sessiond::api::sessions::{page_cursor, page_token, request_id, target};
use sessiond_proto::v1 as pb;
use sessiond_state::apply::apply_batch;
use sessiond_state::codec;
use sessiond_state::command::{Batch, Command, Reply};
use sessiond_state::kv::{MemKv, Txn};
use sessiond_state::limits;
use sessiond_state::record::Policy;
use sessiond_state::token::{SessionId, Token};
use std::collections::HashMap;

/// The message types, in the order the first input byte chooses them.
pub const MESSAGES: [&str; 13] = [
    "CreateSessionRequest",
    "GetSessionRequest",
    "RotateTokenRequest",
    "UpdateSessionRequest",
    "TouchSessionRequest",
    "RevokeSessionRequest",
    "RevokeUserSessionsRequest",
    "ListUserSessionsRequest",
    "WatchRevocationsRequest",
    "StatusRequest",
    "AddLearnerRequest",
    "ChangeMembershipRequest",
    "TriggerSnapshotRequest",
];

/// The first byte of an input that carries message `kind`'s bytes as they are.
pub fn raw_selector(kind: usize) -> u8 {
    (kind as u8) << 1
}

pub fn run(input: &[u8]) {
    let mut src = Source::new(input);
    let selector = src.u8();
    let kind = usize::from(selector >> 1) % MESSAGES.len();
    if selector & 1 == 0 {
        check(kind, src.rest());
    } else {
        let mut bytes = recipe(kind, &mut src);
        mutate(&mut bytes, &mut src);
        check(kind, &bytes);
    }
}

/// Decode `bytes` as message `kind` (protobuf, and JSON) and run a handler's checks on it.
pub fn check(kind: usize, bytes: &[u8]) {
    handler_checks(kind, bytes);
    macro_rules! as_json {
        ($($k:literal => $t:ty),* $(,)?) => {
            match kind {
                $($k => json::<$t>(kind, bytes),)*
                _ => json::<pb::TriggerSnapshotRequest>(kind, bytes),
            }
        };
    }
    as_json!(
        0 => pb::CreateSessionRequest,
        1 => pb::GetSessionRequest,
        2 => pb::RotateTokenRequest,
        3 => pb::UpdateSessionRequest,
        4 => pb::TouchSessionRequest,
        5 => pb::RevokeSessionRequest,
        6 => pb::RevokeUserSessionsRequest,
        7 => pb::ListUserSessionsRequest,
        8 => pb::WatchRevocationsRequest,
        9 => pb::StatusRequest,
        10 => pb::AddLearnerRequest,
        11 => pb::ChangeMembershipRequest,
    );
}

/// The JSON side of message `T`: a message prost decodes from `bytes` reads back from the
/// JSON it is written as (a message holding an enum value the .proto does not name cannot be
/// written as JSON, and is not); `bytes` read as a JSON body get a handler's checks.
fn json<T>(kind: usize, bytes: &[u8])
where
    T: Message + Default + PartialEq + std::fmt::Debug + serde::Serialize,
    T: serde::de::DeserializeOwned,
{
    if let Ok(m) = T::decode(bytes) {
        if let Ok(text) = serde_json::to_vec(&m) {
            let back: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
                panic!(
                    "{m:?} written as JSON {} does not read back: {e}",
                    String::from_utf8_lossy(&text)
                )
            });
            assert_eq!(back, m, "JSON round trip of {}", MESSAGES[kind]);
        }
    }
    if let Ok(m) = serde_json::from_slice::<T>(bytes) {
        handler_checks(kind, &m.encode_to_vec());
    }
}

/// Decode `bytes` as protobuf message `kind` and run a handler's checks on it.
fn handler_checks(kind: usize, bytes: &[u8]) {
    let policy = Policy::default();
    match kind {
        0 => {
            if let Ok(req) = pb::CreateSessionRequest::decode(bytes) {
                create(&policy, &req);
            }
        }
        1 => {
            if let Ok(req) = pb::GetSessionRequest::decode(bytes) {
                token(&req.token);
            }
        }
        2 => {
            if let Ok(req) = pb::RotateTokenRequest::decode(bytes) {
                token(&req.token);
                let _ = request_id(&req.request_id);
            }
        }
        3 => {
            if let Ok(req) = pb::UpdateSessionRequest::decode(bytes) {
                session_ref(req.session.as_ref());
                let _ = request_id(&req.request_id);
                if let Some(d) = &req.data {
                    let _ = limits::data(&policy, d);
                }
                if let Some(a) = &req.attributes {
                    let _ = limits::attributes(&policy, &convert::attributes(a.entries.clone()));
                }
            }
        }
        4 => {
            if let Ok(req) = pb::TouchSessionRequest::decode(bytes) {
                token(&req.token);
            }
        }
        5 => {
            if let Ok(req) = pb::RevokeSessionRequest::decode(bytes) {
                session_ref(req.session.as_ref());
                let _ = request_id(&req.request_id);
                let _ = limits::reason(&req.reason);
            }
        }
        6 => {
            if let Ok(req) = pb::RevokeUserSessionsRequest::decode(bytes) {
                let _ = request_id(&req.request_id);
                let _ = limits::user_id(&req.user_id);
                let _ = limits::reason(&req.reason);
                if !req.except_id.is_empty() {
                    session_id(&req.except_id);
                }
            }
        }
        7 => {
            if let Ok(req) = pb::ListUserSessionsRequest::decode(bytes) {
                let _ = limits::user_id(&req.user_id);
                if let Ok(Some(cursor)) = page_cursor(&req.page_token) {
                    let again = page_token(cursor);
                    assert!(
                        again.eq_ignore_ascii_case(&req.page_token),
                        "page token {:?} reads as {cursor:?}, which prints as {again:?}",
                        req.page_token
                    );
                    assert_eq!(page_cursor(&again).ok(), Some(Some(cursor)));
                }
            }
        }
        8 => {
            let _ = pb::WatchRevocationsRequest::decode(bytes);
        }
        // The operator service's requests: the handlers check their fields inline, against
        // the Raft membership; what is fuzzed here is the decoding.
        9 => {
            let _ = pb::StatusRequest::decode(bytes);
        }
        10 => {
            let _ = pb::AddLearnerRequest::decode(bytes);
        }
        11 => {
            let _ = pb::ChangeMembershipRequest::decode(bytes);
        }
        _ => {
            let _ = pb::TriggerSnapshotRequest::decode(bytes);
        }
    }
}

/// A presented token: refused, or read back exactly as sent.
fn token(s: &str) {
    if let Ok(t) = Token::parse(s) {
        assert_eq!(t.expose(), s, "two spellings of one token");
    }
}

fn session_id(s: &str) {
    if let Ok(id) = SessionId::parse(s) {
        assert_eq!(id.to_string(), s, "two spellings of one session id");
    }
}

fn session_ref(r: Option<&pb::SessionRef>) {
    if let Ok((_, token)) = target(r) {
        match r.and_then(|r| r.by.as_ref()) {
            Some(pb::session_ref::By::Token(s)) => {
                let t = token.expect("a token target keeps its token");
                assert_eq!(t.expose(), *s, "two spellings of one token");
            }
            Some(pb::session_ref::By::Id(s)) => session_id(s),
            None => panic!("a request without a session was accepted"),
        }
    }
}

/// What `CreateSession` checks before proposing; a create it would propose must then be
/// applied by the state machine, not refused by apply's own checks.
fn create(policy: &Policy, req: &pb::CreateSessionRequest) {
    let Ok(rid) = request_id(&req.request_id) else {
        return;
    };
    let attributes = convert::attributes(req.attributes.clone());
    let idle = convert::nonzero(req.idle_timeout_ms);
    let absolute = convert::nonzero(req.absolute_timeout_ms);
    let accepted = limits::user_id(&req.user_id)
        .and_then(|_| limits::data(policy, &req.data))
        .and_then(|_| limits::attributes(policy, &attributes))
        .and_then(|_| limits::timeouts(policy, idle, absolute));
    if accepted.is_err() {
        return;
    }
    let token = Token::from_bytes([7; 32]);
    let id = SessionId([9; 16]);
    let seal = sessiond_state::token::SealKey::from_bytes([1; 32]);
    let command = Command::Create {
        request_id: rid.key("app"),
        id,
        token_hash: token.hash(),
        sealed_token: rid.seal(&seal, &id, &token),
        user_id: req.user_id.clone(),
        data: req.data.clone(),
        attributes,
        idle_timeout_ms: idle,
        absolute_timeout_ms: absolute,
    };
    let batch = Batch {
        stamp_ms: 1_000_000,
        commands: vec![
            Command::Configure {
                policy: policy.clone(),
            },
            command,
        ],
    };
    let decoded: Batch = codec::decode(&codec::encode(&batch)).expect("a log entry decodes");
    assert_eq!(decoded, batch, "a log entry reads back as written");
    let kv = MemKv::new();
    let mut txn = Txn::new(&kv);
    let outcomes = apply_batch(&mut txn, 1, &batch).expect("apply on memory");
    assert!(
        matches!(outcomes[1], Ok(Reply::Created { .. })),
        "the node would propose a create that apply refuses: {:?}",
        outcomes[1]
    );
}

fn token_text(src: &mut Source<'_>) -> String {
    match src.u8() % 6 {
        0 => src.string(60),
        1 => {
            // One character off a valid token.
            let mut t = Token::from_bytes(src.array()).expose().into_bytes();
            let at = src.below(t.len());
            t[at] = src.pick(&[b'=', b'+', b'/', b'A', b'_', b'-', 0xc3]);
            String::from_utf8_lossy(&t).into_owned()
        }
        _ => Token::from_bytes(src.array()).expose(),
    }
}

fn id_text(src: &mut Source<'_>) -> String {
    match src.u8() % 4 {
        0 => src.string(24),
        _ => SessionId(src.array()).to_string(),
    }
}

fn request_id_bytes(src: &mut Source<'_>) -> Vec<u8> {
    if src.one_in(4) {
        src.bytes(20)
    } else {
        src.array::<16>().to_vec()
    }
}

fn user_text(src: &mut Source<'_>) -> String {
    match src.u8() % 8 {
        0 => "u".repeat(255 + src.below(3)),
        _ => src.string(12),
    }
}

fn attribute_map(src: &mut Source<'_>) -> HashMap<String, String> {
    (0..src.below(4))
        .map(|_| {
            let v = if src.one_in(8) {
                "v".repeat(4090 + src.below(8))
            } else {
                src.string(10)
            };
            (src.string(6), v)
        })
        .collect()
}

fn data_bytes(src: &mut Source<'_>) -> Vec<u8> {
    if src.one_in(8) {
        vec![0xa5; 64 * 1024 - 1 + src.below(3)]
    } else {
        src.bytes(32)
    }
}

fn reason_text(src: &mut Source<'_>) -> String {
    if src.one_in(6) {
        "r".repeat(127 + src.below(3))
    } else {
        src.string(12)
    }
}

fn session_ref_msg(src: &mut Source<'_>) -> Option<pb::SessionRef> {
    match src.u8() % 5 {
        0 => None,
        1 => Some(pb::SessionRef { by: None }),
        2 => Some(pb::SessionRef {
            by: Some(pb::session_ref::By::Id(id_text(src))),
        }),
        _ => Some(pb::SessionRef {
            by: Some(pb::session_ref::By::Token(token_text(src))),
        }),
    }
}

fn consistency(src: &mut Source<'_>) -> i32 {
    src.pick(&[0, 1, 2, -1, i32::MAX])
}

/// A well-formed message of type `kind` whose fields come from `src`.
pub fn recipe(kind: usize, src: &mut Source<'_>) -> Vec<u8> {
    match kind {
        0 => pb::CreateSessionRequest {
            user_id: user_text(src),
            data: data_bytes(src),
            attributes: attribute_map(src),
            idle_timeout_ms: src.interesting_u64(),
            absolute_timeout_ms: src.interesting_u64(),
            request_id: request_id_bytes(src),
        }
        .encode_to_vec(),
        1 => pb::GetSessionRequest {
            token: token_text(src),
            consistency: consistency(src),
            touch: src.bool(),
        }
        .encode_to_vec(),
        2 => pb::RotateTokenRequest {
            token: token_text(src),
            request_id: request_id_bytes(src),
        }
        .encode_to_vec(),
        3 => pb::UpdateSessionRequest {
            session: session_ref_msg(src),
            expected_version: src.interesting_u64(),
            data: src.bool().then(|| data_bytes(src)),
            attributes: src.bool().then(|| pb::AttributeMap {
                entries: attribute_map(src),
            }),
            request_id: request_id_bytes(src),
        }
        .encode_to_vec(),
        4 => pb::TouchSessionRequest {
            token: token_text(src),
        }
        .encode_to_vec(),
        5 => pb::RevokeSessionRequest {
            session: session_ref_msg(src),
            reason: reason_text(src),
            request_id: request_id_bytes(src),
        }
        .encode_to_vec(),
        6 => pb::RevokeUserSessionsRequest {
            user_id: user_text(src),
            except_id: if src.bool() {
                String::new()
            } else {
                id_text(src)
            },
            reason: reason_text(src),
            request_id: request_id_bytes(src),
        }
        .encode_to_vec(),
        7 => pb::ListUserSessionsRequest {
            user_id: user_text(src),
            consistency: consistency(src),
            page_size: src.u32(),
            page_token: match src.u8() % 4 {
                0 => String::new(),
                1 => src.string(48),
                _ => page_token((src.u64(), SessionId(src.array()))),
            },
        }
        .encode_to_vec(),
        8 => pb::WatchRevocationsRequest {
            from_index: src.interesting_u64(),
        }
        .encode_to_vec(),
        9 => pb::StatusRequest {}.encode_to_vec(),
        10 => pb::AddLearnerRequest {
            node_id: src.interesting_u64(),
            client_addr: src.string(20),
            peer_addr: src.string(20),
            blocking: src.bool(),
        }
        .encode_to_vec(),
        11 => pb::ChangeMembershipRequest {
            voters: (0..src.below(6)).map(|_| src.interesting_u64()).collect(),
            retain: src.bool(),
            add_voters: (0..src.below(3)).map(|_| src.interesting_u64()).collect(),
            remove_voters: (0..src.below(3)).map(|_| src.interesting_u64()).collect(),
        }
        .encode_to_vec(),
        _ => pb::TriggerSnapshotRequest {}.encode_to_vec(),
    }
}
