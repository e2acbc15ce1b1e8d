//! Target 2: what a node decodes from a peer's bytes (`node/src/network.rs`): the `RaftRequest`
//! envelope the peer service receives, with an openraft `AppendEntries`, `Vote` or
//! `InstallSnapshot` request postcard-encoded in its payload; the `RaftReply` a node gets back,
//! with openraft's answer (or error) in its payload; and the `InfoReply` of bootstrap.
//!
//! Input: the first byte chooses the message (bits 2..), whether the bytes are a whole
//! envelope or only its payload (bit 1), and whether the rest is those bytes as they are or a
//! recipe for a well-formed message that is then damaged a little (bit 0).
//!
//! Asserted: no panic; memory while decoding stays proportional to the input (a length
//! prefix cannot reserve more than serde's bounded pre-allocation); whatever decodes encodes
//! to bytes that decode to the same value.

use crate::alloc;
use crate::arbitrary::{self, Known};
use crate::input::{mutate, Source};
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId,
    StoredMembership, Vote,
};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sessiond::network::decode;
use sessiond::raft_types::{NodeId, NodeInfo, TypeConfig};
use sessiond_proto::v1::{InfoReply, RaftReply, RaftRequest};
use std::collections::{BTreeMap, BTreeSet};

/// The messages, in the order the first input byte chooses them.
pub const MESSAGES: [&str; 7] = [
    "AppendEntriesRequest",
    "VoteRequest",
    "InstallSnapshotRequest",
    "AppendEntries reply",
    "Vote reply",
    "InstallSnapshot reply",
    "InfoReply",
];

type AppendReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotReply =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// The first byte of an input that carries message `kind` as it is: a whole envelope, or
/// only the payload.
pub fn raw_selector(kind: usize, envelope: bool) -> u8 {
    ((kind as u8) << 2) | if envelope { 0 } else { 2 }
}

pub fn run(input: &[u8]) {
    let mut src = Source::new(input);
    let selector = src.u8();
    let kind = usize::from(selector >> 2) % MESSAGES.len();
    let envelope = selector & 2 == 0 || kind == 6;
    let bytes = if selector & 1 == 0 {
        src.rest().to_vec()
    } else {
        let mut payload = payload_recipe(kind, &mut src);
        if src.bool() {
            mutate(&mut payload, &mut src);
        }
        let mut bytes = if envelope {
            wrap(kind, payload, &mut src)
        } else {
            payload
        };
        if src.bool() {
            mutate(&mut bytes, &mut src);
        }
        bytes
    };
    let ((), peak) = alloc::peak_during(|| check(kind, envelope, &bytes));
    assert!(
        peak <= alloc::decode_budget(bytes.len()),
        "decoding {} bytes as {} took {peak} bytes",
        bytes.len(),
        MESSAGES[kind]
    );
}

/// Decode as the receiving side does.
pub fn check(kind: usize, envelope: bool, bytes: &[u8]) {
    if kind == 6 {
        let _ = InfoReply::decode(bytes);
        return;
    }
    let payload = if !envelope {
        bytes.to_vec()
    } else if kind < 3 {
        match RaftRequest::decode(bytes) {
            Ok(r) => r.payload,
            Err(_) => return,
        }
    } else {
        match RaftReply::decode(bytes) {
            Ok(r) => r.payload,
            Err(_) => return,
        }
    };
    match kind {
        0 => {
            if let Some(m) = stable::<AppendEntriesRequest<TypeConfig>>(&payload) {
                // What the peer service asks of the message before handing it to Raft.
                let _ = m.vote.leader_id().voted_for();
                let _ = m.leader_commit.map(|c| c.index);
            }
        }
        1 => {
            if let Some(m) = stable::<VoteRequest<NodeId>>(&payload) {
                let _ = m.vote.leader_id().voted_for();
            }
        }
        2 => {
            if let Some(m) = stable::<InstallSnapshotRequest<TypeConfig>>(&payload) {
                let _ = m.vote.leader_id().voted_for();
                let _ = m.meta.signature();
            }
        }
        3 => {
            stable::<AppendReply>(&payload);
        }
        4 => {
            stable::<VoteReply>(&payload);
        }
        _ => {
            stable::<SnapshotReply>(&payload);
        }
    }
}

/// Decode with the node's decoder; what decodes must encode to bytes that decode to the
/// same thing (compared as bytes: openraft's messages do not all implement `PartialEq`).
fn stable<T: Serialize + DeserializeOwned>(payload: &[u8]) -> Option<T> {
    let value: T = decode(payload).ok()?;
    let once = postcard::to_allocvec(&value).expect("a decoded message encodes");
    let again: T = decode(&once).expect("an encoded message decodes");
    let twice = postcard::to_allocvec(&again).expect("a decoded message encodes");
    assert_eq!(once, twice, "a peer message does not read back as written");
    Some(value)
}

/// The envelope around a payload, as the sending side builds it.
pub fn wrap(kind: usize, payload: Vec<u8>, src: &mut Source<'_>) -> Vec<u8> {
    if kind < 3 {
        RaftRequest {
            target_node_id: src.interesting_u64(),
            from_node_id: src.interesting_u64(),
            payload,
            quorum_age_ms: src.bool().then(|| src.interesting_u64()),
            cluster_time_ms: src.bool().then(|| src.interesting_u64()),
        }
        .encode_to_vec()
    } else {
        RaftReply {
            payload,
            wall_ms: src.bool().then(|| src.interesting_u64()),
            floor_ms: src.bool().then(|| src.interesting_u64()),
        }
        .encode_to_vec()
    }
}

pub(crate) fn node(src: &mut Source<'_>) -> NodeId {
    if src.one_in(4) {
        src.interesting_u64()
    } else {
        u64::from(src.u8() % 5)
    }
}

pub(crate) fn vote(src: &mut Source<'_>) -> Vote<NodeId> {
    let term = u64::from(src.u16());
    let n = node(src);
    if src.bool() {
        Vote::new_committed(term, n)
    } else {
        Vote::new(term, n)
    }
}

pub(crate) fn log_id(src: &mut Source<'_>) -> LogId<NodeId> {
    LogId::new(
        CommittedLeaderId::new(u64::from(src.u16()), node(src)),
        src.interesting_u64(),
    )
}

pub(crate) fn membership(src: &mut Source<'_>) -> Membership<NodeId, NodeInfo> {
    let configs: Vec<BTreeSet<NodeId>> = (0..1 + src.below(2))
        .map(|_| (0..src.below(4)).map(|_| node(src)).collect())
        .collect();
    let nodes: BTreeMap<NodeId, NodeInfo> = (0..src.below(4))
        .map(|_| {
            (
                node(src),
                NodeInfo {
                    client_addr: src.string(16),
                    peer_addr: src.string(16),
                },
            )
        })
        .collect();
    Membership::new(configs, nodes)
}

fn entry(src: &mut Source<'_>) -> Entry<TypeConfig> {
    let log_id = log_id(src);
    let payload = match src.u8() % 4 {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Membership(membership(src)),
        _ => EntryPayload::Normal(arbitrary::batch(src, &Known::default())),
    };
    Entry { log_id, payload }
}

fn raft_error<E>(src: &mut Source<'_>) -> RaftError<NodeId, E> {
    RaftError::Fatal(if src.bool() {
        Fatal::Stopped
    } else {
        Fatal::Panicked
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("encoding a message")
}

/// A well-formed payload for message `kind` (the `InfoReply` is a whole message).
pub fn payload_recipe(kind: usize, src: &mut Source<'_>) -> Vec<u8> {
    match kind {
        0 => encode(&AppendEntriesRequest::<TypeConfig> {
            vote: vote(src),
            prev_log_id: src.bool().then(|| log_id(src)),
            entries: (0..src.below(4)).map(|_| entry(src)).collect(),
            leader_commit: src.bool().then(|| log_id(src)),
        }),
        1 => encode(&VoteRequest::<NodeId> {
            vote: vote(src),
            last_log_id: src.bool().then(|| log_id(src)),
        }),
        2 => encode(&InstallSnapshotRequest::<TypeConfig> {
            vote: vote(src),
            meta: SnapshotMeta {
                last_log_id: src.bool().then(|| log_id(src)),
                last_membership: StoredMembership::new(
                    src.bool().then(|| log_id(src)),
                    membership(src),
                ),
                snapshot_id: src.string(24),
            },
            offset: if src.bool() {
                u64::from(src.u16())
            } else {
                src.interesting_u64()
            },
            data: src.bytes(64),
            done: src.bool(),
        }),
        3 => {
            let r: AppendReply = match src.u8() % 5 {
                0 => Ok(AppendEntriesResponse::Success),
                1 => Ok(AppendEntriesResponse::PartialSuccess(
                    src.bool().then(|| log_id(src)),
                )),
                2 => Ok(AppendEntriesResponse::Conflict),
                3 => Ok(AppendEntriesResponse::HigherVote(vote(src))),
                _ => Err(raft_error(src)),
            };
            encode(&r)
        }
        4 => {
            let r: VoteReply = if src.one_in(4) {
                Err(raft_error(src))
            } else {
                Ok(VoteResponse {
                    vote: vote(src),
                    vote_granted: src.bool(),
                    last_log_id: src.bool().then(|| log_id(src)),
                })
            };
            encode(&r)
        }
        5 => {
            let r: SnapshotReply = match src.u8() % 4 {
                0 => Err(raft_error(src)),
                1 => {
                    let mut segment = || SnapshotSegmentId {
                        id: src.string(12),
                        offset: src.interesting_u64(),
                    };
                    Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                        SnapshotMismatch {
                            expect: segment(),
                            got: segment(),
                        },
                    )))
                }
                _ => Ok(InstallSnapshotResponse { vote: vote(src) }),
            };
            encode(&r)
        }
        _ => InfoReply {
            node_id: src.interesting_u64(),
            client_addr: src.string(20),
            peer_addr: src.string(20),
            initialized: src.bool(),
        }
        .encode_to_vec(),
    }
}
