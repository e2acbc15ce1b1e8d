//! The checked-in seed corpus: valid encodings of real messages for every target, in each
//! target's input format. `tests/corpus.rs` writes them to `tests/__fuzz__/<target>/corpus/`,
//! where bolero replays them before its random inputs.

use crate::model::{By, Op, Req, Tok};
use crate::targets::{differential, grpc, log, peer, snapshot};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use prost::Message;
use sessiond::raft_types::{NodeId, NodeInfo, TypeConfig};
use sessiond_proto::v1 as pb;
use sessiond_state::codec;
use sessiond_state::command::{Batch, Command};
use sessiond_state::record::Policy;
use sessiond_state::token::{SessionId, Token};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One seed: the target (its test's name), a file name, the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    out.extend(grpc_requests());
    out.extend(peer_envelopes());
    out.extend(log_entries());
    out.extend(snapshot_streams());
    out.extend(config_toml());
    out.extend(differential_runs());
    out
}

fn with(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(bytes);
    v
}

fn token(n: u8) -> String {
    Token::from_bytes([n; 32]).expose()
}

fn id(n: u8) -> String {
    SessionId([n; 16]).to_string()
}

fn grpc_requests() -> Vec<Seed> {
    let by_token = |n| pb::SessionRef {
        by: Some(pb::session_ref::By::Token(token(n))),
    };
    let by_id = |n| pb::SessionRef {
        by: Some(pb::session_ref::By::Id(id(n))),
    };
    let messages: Vec<(usize, &str, Vec<u8>)> = vec![
        (
            0,
            "create",
            pb::CreateSessionRequest {
                user_id: "alice".into(),
                data: b"{\"cart\":[1,2]}".to_vec(),
                attributes: HashMap::from([("ip".into(), "10.0.0.1".into())]),
                idle_timeout_ms: 1_800_000,
                absolute_timeout_ms: 0,
                request_id: vec![1; 16],
            }
            .encode_to_vec(),
        ),
        (
            1,
            "get",
            pb::GetSessionRequest {
                token: token(2),
                consistency: pb::Consistency::Stale as i32,
                touch: true,
            }
            .encode_to_vec(),
        ),
        (
            2,
            "rotate",
            pb::RotateTokenRequest {
                token: token(2),
                request_id: vec![3; 16],
            }
            .encode_to_vec(),
        ),
        (
            3,
            "update_by_token",
            pb::UpdateSessionRequest {
                session: Some(by_token(2)),
                expected_version: 3,
                data: Some(b"new".to_vec()),
                attributes: Some(pb::AttributeMap {
                    entries: HashMap::from([("theme".into(), "dark".into())]),
                }),
                request_id: vec![4; 16],
            }
            .encode_to_vec(),
        ),
        (
            3,
            "update_by_id",
            pb::UpdateSessionRequest {
                session: Some(by_id(5)),
                expected_version: 0,
                data: None,
                attributes: None,
                request_id: vec![5; 16],
            }
            .encode_to_vec(),
        ),
        (
            4,
            "touch",
            pb::TouchSessionRequest { token: token(6) }.encode_to_vec(),
        ),
        (
            5,
            "revoke",
            pb::RevokeSessionRequest {
                session: Some(by_token(7)),
                reason: "logout".into(),
                request_id: vec![7; 16],
            }
            .encode_to_vec(),
        ),
        (
            6,
            "revoke_user",
            pb::RevokeUserSessionsRequest {
                user_id: "alice".into(),
                except_id: id(8),
                reason: "password changed".into(),
                request_id: vec![8; 16],
            }
            .encode_to_vec(),
        ),
        (
            7,
            "list",
            pb::ListUserSessionsRequest {
                user_id: "alice".into(),
                consistency: pb::Consistency::Linearizable as i32,
                page_size: 50,
                page_token: sessiond::api::sessions::page_token((
                    1_700_000_000_000,
                    SessionId([9; 16]),
                )),
            }
            .encode_to_vec(),
        ),
        (
            8,
            "watch",
            pb::WatchRevocationsRequest { from_index: 42 }.encode_to_vec(),
        ),
        (9, "status", pb::StatusRequest {}.encode_to_vec()),
        (
            10,
            "add_learner",
            pb::AddLearnerRequest {
                node_id: 4,
                client_addr: "10.0.0.4:7001".into(),
                peer_addr: "10.0.0.4:7101".into(),
                blocking: true,
            }
            .encode_to_vec(),
        ),
        (
            11,
            "change_membership",
            pb::ChangeMembershipRequest {
                voters: vec![1, 2, 4],
                retain: false,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            12,
            "trigger_snapshot",
            pb::TriggerSnapshotRequest {}.encode_to_vec(),
        ),
    ];
    let mut out: Vec<Seed> = messages
        .into_iter()
        .map(|(kind, name, bytes)| {
            (
                "grpc_requests",
                format!("{name}.bin"),
                with(grpc::raw_selector(kind), &bytes),
            )
        })
        .collect();
    // JSON bodies as the HTTP/JSON API receives them.
    let json_bodies: [(usize, &str, String); 4] = [
        (
            0,
            "create",
            r#"{"userId":"alice","data":"aGk=","attributes":{"ua":"x"},"idleTimeoutMs":"60000","requestId":"AAECAwQFBgcICQoLDA0ODw=="}"#
                .to_string(),
        ),
        (
            1,
            "get",
            format!(r#"{{"token":"{}","consistency":"CONSISTENCY_STALE","touch":true}}"#, token(1)),
        ),
        (
            3,
            "update",
            format!(
                r#"{{"session":{{"id":"{}"}},"expectedVersion":7,"data":"","attributes":{{"entries":{{}}}},"requestId":"AAECAwQFBgcICQoLDA0ODw=="}}"#,
                id(2)
            ),
        ),
        (
            7,
            "list",
            r#"{"user_id":"bob","pageSize":10,"pageToken":""}"#.to_string(),
        ),
    ];
    for (kind, name, body) in json_bodies {
        out.push((
            "grpc_requests",
            format!("json-{name}.bin"),
            with(grpc::raw_selector(kind), body.as_bytes()),
        ));
    }
    for kind in 0..grpc::MESSAGES.len() {
        out.push((
            "grpc_requests",
            format!("recipe-{kind}.bin"),
            with(grpc::raw_selector(kind) | 1, &pattern(kind as u32, 96)),
        ));
    }
    out
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn members() -> Membership<NodeId, NodeInfo> {
    let nodes: BTreeMap<NodeId, NodeInfo> = (1..=3)
        .map(|n| {
            (
                n,
                NodeInfo {
                    client_addr: format!("10.0.0.{n}:7001"),
                    peer_addr: format!("10.0.0.{n}:7101"),
                },
            )
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn a_batch() -> Batch {
    Batch {
        stamp_ms: 1_700_000_000_000,
        commands: log_ops()
            .into_iter()
            .map(|op| differential::command(&op))
            .collect(),
    }
}

fn log_ops() -> Vec<Op> {
    let req = |n| Req {
        principal: 0,
        rid: [n; 16],
    };
    vec![
        Op::Create {
            req: req(1),
            id: SessionId([50; 16]),
            token: Tok([50; 32]),
            user: "ann".into(),
            data: b"cart".to_vec(),
            attributes: BTreeMap::from([("ip".into(), "10.1.1.1".into())]),
            idle: Some(600_000),
            absolute: None,
        },
        Op::Rotate {
            req: req(2),
            token: Tok([1; 32]),
            successor: Tok([51; 32]),
        },
        Op::Update {
            req: req(3),
            by: By::Id(SessionId([3; 16])),
            expected_version: 2,
            data: Some(b"y".to_vec()),
            attributes: None,
        },
        Op::Touch {
            token: Tok([4; 32]),
        },
        Op::Revoke {
            req: req(5),
            by: By::Token(Tok([21; 32])),
            reason: "bye".into(),
        },
        Op::RevokeUser {
            req: req(6),
            user: "ann".into(),
            except: Some(SessionId([1; 16])),
            reason: String::new(),
        },
        Op::ReportReuse {
            token: Tok([1; 32]),
        },
        Op::Expire { limit: 5_000 },
    ]
}

fn peer_envelopes() -> Vec<Seed> {
    let vote = Vote::new_committed(3, 1);
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(3, 41)),
        entries: vec![],
        leader_commit: Some(log_id(3, 41)),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(2, 40)),
        entries: vec![
            Entry {
                log_id: log_id(3, 41),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(3, 42),
                payload: EntryPayload::Normal(a_batch()),
            },
            Entry {
                log_id: log_id(3, 43),
                payload: EntryPayload::Membership(members()),
            },
        ],
        leader_commit: Some(log_id(3, 41)),
    };
    let vote_req = VoteRequest::<NodeId> {
        vote: Vote::new(4, 2),
        last_log_id: Some(log_id(3, 43)),
    };
    let snapshot_req = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 43)),
            last_membership: StoredMembership::new(Some(log_id(3, 43)), members()),
            snapshot_id: "3-43-1700000000000-0".into(),
        },
        offset: 0,
        data: snapshot::stream_recipe(&mut crate::input::Source::new(&[])),
        done: true,
    };
    type R<T> = Result<T, openraft::error::RaftError<NodeId>>;
    let append_ok: R<AppendEntriesResponse<NodeId>> = Ok(AppendEntriesResponse::Success);
    let append_higher: R<AppendEntriesResponse<NodeId>> =
        Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 2)));
    let vote_ok: R<VoteResponse<NodeId>> = Ok(VoteResponse {
        vote: Vote::new(4, 2),
        vote_granted: true,
        last_log_id: Some(log_id(3, 43)),
    });
    let snapshot_ok: Result<
        InstallSnapshotResponse<NodeId>,
        openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>,
    > = Ok(InstallSnapshotResponse { vote });
    let enc = |v: &dyn erased::Encode| v.bytes();
    let payloads: Vec<(usize, &str, Vec<u8>)> = vec![
        (0, "heartbeat", enc(&heartbeat)),
        (0, "append", enc(&append)),
        (1, "vote", enc(&vote_req)),
        (2, "install_snapshot", enc(&snapshot_req)),
        (3, "append_ok", enc(&append_ok)),
        (3, "append_higher_vote", enc(&append_higher)),
        (4, "vote_granted", enc(&vote_ok)),
        (5, "snapshot_ok", enc(&snapshot_ok)),
    ];
    let mut out = Vec::new();
    for (kind, name, payload) in payloads {
        let envelope = if kind < 3 {
            pb::RaftRequest {
                target_node_id: 2,
                from_node_id: 1,
                payload: payload.clone(),
                quorum_age_ms: Some(12),
                cluster_time_ms: Some(1_700_000_000_000),
            }
            .encode_to_vec()
        } else {
            pb::RaftReply {
                payload: payload.clone(),
                wall_ms: Some(1_700_000_000_000),
                floor_ms: Some(1_699_999_999_000),
            }
            .encode_to_vec()
        };
        out.push((
            "peer_envelopes",
            format!("{name}.bin"),
            with(peer::raw_selector(kind, true), &envelope),
        ));
        out.push((
            "peer_envelopes",
            format!("{name}-payload.bin"),
            with(peer::raw_selector(kind, false), &payload),
        ));
    }
    out.push((
        "peer_envelopes",
        "info.bin".into(),
        with(
            peer::raw_selector(6, true),
            &pb::InfoReply {
                node_id: 2,
                client_addr: "10.0.0.2:7001".into(),
                peer_addr: "10.0.0.2:7101".into(),
                initialized: true,
            }
            .encode_to_vec(),
        ),
    ));
    for kind in 0..peer::MESSAGES.len() {
        out.push((
            "peer_envelopes",
            format!("recipe-{kind}.bin"),
            with(
                peer::raw_selector(kind, true) | 1,
                &pattern(100 + kind as u32, 160),
            ),
        ));
    }
    out
}

/// Object-safe encoding for the seed tables above.
mod erased {
    pub trait Encode {
        fn bytes(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn bytes(&self) -> Vec<u8> {
            postcard::to_allocvec(self).expect("seed encodes")
        }
    }
}

fn raw_entry(batch: &Batch) -> Vec<u8> {
    let b = codec::encode(batch);
    let mut v = vec![log::RAW];
    v.extend_from_slice(&(b.len() as u16).to_le_bytes());
    v.extend_from_slice(&b);
    v
}

fn log_entries() -> Vec<Seed> {
    let mut out = Vec::new();
    for (i, op) in log_ops().into_iter().enumerate() {
        let batch = Batch {
            stamp_ms: 1_000_000 + 60_000 * i as u64,
            commands: vec![differential::command(&op)],
        };
        out.push(("log_entries", format!("command-{i}.bin"), raw_entry(&batch)));
    }
    out.push(("log_entries", "batch.bin".into(), raw_entry(&a_batch())));
    let configure = Batch {
        stamp_ms: 1_000_000,
        commands: vec![Command::Configure {
            policy: Policy {
                max_sessions_per_user: 1,
                ..Policy::default()
            },
        }],
    };
    let mut two = raw_entry(&configure);
    two.extend(raw_entry(&a_batch()));
    out.push(("log_entries", "configure-then-batch.bin".into(), two));
    for i in 0..4 {
        out.push((
            "log_entries",
            format!("recipe-{i}.bin"),
            with(1, &pattern(200 + i, 200)),
        ));
    }
    out
}

fn snapshot_streams() -> Vec<Seed> {
    let stream = snapshot::stream_recipe(&mut crate::input::Source::new(&[]));
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(3, 43)),
        last_membership: StoredMembership::new(Some(log_id(3, 43)), members()),
        snapshot_id: "3-43-1700000000000-0".into(),
    };
    let file = snapshot::file_bytes(&meta, &stream);
    let stage = |name: &str| {
        snapshot::STAGES
            .iter()
            .position(|s| *s == name)
            .expect("a stage")
    };
    let mut out = vec![
        (
            "snapshot_streams",
            "stream.bin".into(),
            with(snapshot::raw_selector(stage("stream")), &stream),
        ),
        (
            "snapshot_streams",
            "file.bin".into(),
            with(snapshot::raw_selector(stage("file")), &file),
        ),
        (
            "snapshot_streams",
            "install.bin".into(),
            with(snapshot::raw_selector(stage("install")), &file),
        ),
        (
            "snapshot_streams",
            "reopen.bin".into(),
            with(snapshot::raw_selector(stage("reopen")), &file),
        ),
    ];
    for (i, name) in ["stream", "file", "install", "reopen"].iter().enumerate() {
        out.push((
            "snapshot_streams",
            format!("recipe-{name}.bin"),
            with(
                snapshot::raw_selector(stage(name)) | 1,
                &pattern(300 + i as u32, 128),
            ),
        ));
    }
    out
}

fn config_toml() -> Vec<Seed> {
    let files = [
        (
            "secure",
            "node_id = 2\ndata_dir = \"/var/lib/sessiond\"\nclient_addr = \"0.0.0.0:7001\"\n\
             peer_addr = \"0.0.0.0:7101\"\nadvertise_client_addr = \"node2.example:7001\"\n\
             advertise_peer_addr = \"node2.example:7101\"\nmetrics_addr = \"127.0.0.1:9102\"\n\
             initial_cluster = \"1=node1.example:7101,2=node2.example:7101,3=node3.example:7101\"\n\
             certs_dir = \"/etc/sessiond/certs\"\nlog_format = \"json\"\nmetrics_tls = true\n",
        ),
        (
            "policy",
            "node_id = 1\ndata_dir = \"/tmp/s1\"\nclient_addr = \"127.0.0.1:7001\"\n\
             peer_addr = \"127.0.0.1:7101\"\ninsecure = true\ngrace_window_ms = 10000\n\
             rotation_min_interval_ms = 15000\nreuse_policy = \"reject\"\n\
             retired_generations = 128\nmax_sessions_per_user = 10\ncap_policy = \"refuse\"\n\
             dedup_window_ms = 60000\ndefault_idle_timeout_ms = 3600000\n\
             default_absolute_timeout_ms = 86400000\nmax_data_bytes = 4096\n",
        ),
        (
            "tuning",
            "node_id = 3\ndata_dir = \"/tmp/s3\"\nclient_addr = \"127.0.0.1:7003\"\n\
             peer_addr = \"127.0.0.1:7103\"\ninsecure = true\nheartbeat_ms = 50\n\
             election_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nsnapshot_logs = 5000\n\
             keep_logs = 500\nexpiry_interval_ms = 250\nmax_batch = 256\nmax_inflight_batches = 4\n\
             request_timeout_ms = 3000\nstale_read_bound_ms = 400\nmax_clock_skew_ms = 200\n\
             write_buffer_mib = 8\nblock_cache_mib = 64\nworker_threads = 2\n",
        ),
        (
            "explicit_files",
            "node_id = 1\ndata_dir = \"/tmp/s1\"\nclient_addr = \"[::1]:7001\"\n\
             peer_addr = \"[::1]:7101\"\nca_cert = \"/etc/s/ca.crt\"\ncert = \"/etc/s/node-1.crt\"\n\
             key = \"/etc/s/node-1.key\"\naccess_file = \"/etc/s/access.toml\"\n\
             seal_key = \"/etc/s/seal.key\"\n",
        ),
    ];
    let mut out: Vec<Seed> = files
        .iter()
        .map(|(name, text)| {
            (
                "config_toml",
                format!("{name}.toml"),
                with(0, text.as_bytes()),
            )
        })
        .collect();
    for i in 0..4 {
        out.push((
            "config_toml",
            format!("recipe-{i}.bin"),
            with(1, &pattern(400 + i, 64)),
        ));
    }
    out
}

fn differential_runs() -> Vec<Seed> {
    let mut out: Vec<Seed> = [(500, 256), (501, 1024), (502, 2048), (503, 4096)]
        .into_iter()
        .map(|(seed, len)| {
            (
                "differential",
                format!("run-{seed}.bin"),
                pattern(seed, len),
            )
        })
        .collect();
    // A long run (see `input::expand`) in which a session is swept, its id created again and
    // written to, and a rotation of the first session is then retried: the replay must not
    // take content from the second session.
    out.push((
        "differential",
        "replay-after-sweep.bin".into(),
        vec![0xe7, 0x19, 0x6c, 0x50, 0x0e, 0xb9, 0xc0, 0x82, 0x5b, 0x4a],
    ));
    out
}

/// Deterministic pseudo-random bytes (xorshift), for recipe seeds.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x: u32 = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
