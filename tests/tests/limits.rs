//! Every limit a client can reach (README, Limits), on clusters as shipped: going past it is
//! answered with its typed error, and nothing is written — the leader's applied index stays
//! where it was, and the sessions the call named (or would have made) are as they were.
//!
//! A cluster costs seconds of CPU on a small machine and every test runs in its own process,
//! so each test starts one cluster and checks one limit per helper below, in sequence.

use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::*;
use sessiond_tests::{code, detail, expect_err, expect_revoked, req, rid, TestCluster, ADMIN};
use std::collections::{BTreeSet, HashMap};
use tonic::transport::Channel;

/// `--max-data-bytes` of the first cluster: large enough that a few sessions fill a
/// `ListUserSessions` answer past the message limit.
const DATA_LIMIT: usize = 1024 * 1024;
/// `--max-sessions-per-user` of the first cluster.
const CAP: usize = 20;
/// The fixed limits (`sessiond_state::record`, `Policy::default`).
const ATTRIBUTES_LIMIT: usize = 4096;
const USER_ID_LIMIT: usize = 256;
const REASON_LIMIT: usize = 128;
const MAX_TIMEOUT_MS: u64 = 400 * 24 * 3_600_000;
/// Largest message the `Sessions` service accepts or sends.
const MESSAGE_LIMIT: usize = 16 * 1024 * 1024;
/// Largest request the `Cluster` service accepts.
const CLUSTER_MESSAGE_LIMIT: usize = 4 * 1024 * 1024;
/// Largest request metadata a node accepts.
const METADATA_LIMIT: usize = 16 * 1024;

/// The cluster under test, its leader, and clients that accept answers larger than any node
/// sends (so a refusal is the node's, not this client's).
struct Ctx {
    c: TestCluster,
    leader: usize,
    l: SessionsClient<Channel>,
    f: SessionsClient<Channel>,
}

fn client(c: &TestCluster, i: usize) -> SessionsClient<Channel> {
    SessionsClient::new(c.channel_as(ADMIN, i))
        .max_decoding_message_size(4 * MESSAGE_LIMIT)
        .max_encoding_message_size(4 * MESSAGE_LIMIT)
}

impl Ctx {
    async fn start(size: u64, flags: &[&str]) -> Ctx {
        let c = TestCluster::builder(size).flags(flags).start().await;
        let leader = c.leader().await;
        let follower = if size > 1 { c.follower().await } else { leader };
        let (l, f) = (client(&c, leader), client(&c, follower));
        Ctx { c, leader, l, f }
    }

    /// The leader's last log index: what "writes nothing" is measured by. Not the applied
    /// index, which the leader reports a moment after it has answered the write that
    /// advanced it, so a write just answered could seem to come from the next call.
    async fn logged(&self) -> u64 {
        self.c
            .status(self.leader)
            .await
            .expect("leader status")
            .last_log_index
    }

    /// `call` fails with `want` (as `ErrorCode` and gRPC code) and appends nothing to the log.
    async fn refused<T: std::fmt::Debug>(
        &self,
        what: &str,
        want: ErrorCode,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> ErrorDetail {
        let before = self.logged().await;
        let r = call.await;
        let after = self.logged().await;
        if let Err(s) = &r {
            assert_eq!(code(s), want, "{what}: {s:?}");
        }
        let d = expect_err(r, want);
        assert_eq!(before, after, "{what} was written to the log");
        d
    }

    /// `call` fails in the gRPC transport with `want` and no `ErrorDetail`, and appends nothing.
    async fn refused_by_transport<T: std::fmt::Debug>(
        &self,
        what: &str,
        want: tonic::Code,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> tonic::Status {
        let before = self.logged().await;
        let r = call.await;
        let after = self.logged().await;
        let s = match r {
            Ok(v) => panic!(
                "{what}: expected {want:?}, got a success: {:?}",
                v.into_inner()
            ),
            Err(s) => s,
        };
        assert_eq!(s.code(), want, "{what}: {s:?}");
        assert_eq!(
            detail(&s),
            None,
            "{what}: a transport refusal carries no detail"
        );
        assert_eq!(before, after, "{what} was written to the log");
        s
    }

    async fn create(&self, user: &str, data: &[u8]) -> CreateSessionResponse {
        self.l
            .clone()
            .create_session(req::create(user, data))
            .await
            .unwrap_or_else(|e| panic!("create for {user:?}: {e:?}"))
            .into_inner()
    }

    async fn get(&self, token: &str) -> Session {
        self.l
            .clone()
            .get_session(req::get(token))
            .await
            .unwrap_or_else(|e| panic!("get: {e:?}"))
            .into_inner()
            .session
            .expect("session")
    }

    async fn listed(&self, user: &str) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        let mut token = String::new();
        loop {
            let page = self.page(user, 0, &token).await;
            ids.extend(page.sessions.into_iter().map(|s| s.id));
            if page.next_page_token.is_empty() {
                return ids;
            }
            token = page.next_page_token;
        }
    }

    async fn page(&self, user: &str, size: u32, token: &str) -> ListUserSessionsResponse {
        self.l
            .clone()
            .list_user_sessions(ListUserSessionsRequest {
                page_size: size,
                page_token: token.into(),
                ..req::list(user)
            })
            .await
            .unwrap_or_else(|e| panic!("list of {user:?}: {e:?}"))
            .into_inner()
    }
}

fn attrs(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Session data: `--max-data-bytes` on create and update, through the leader and through a
/// follower (which forwards; the leader refuses before proposing).
async fn data_bytes(x: &Ctx) {
    let over = vec![7u8; DATA_LIMIT + 1];
    x.refused(
        "create with data over the limit",
        ErrorCode::InvalidArgument,
        x.l.clone().create_session(req::create("data", &over)),
    )
    .await;
    x.refused(
        "create with data over the limit, via a follower",
        ErrorCode::InvalidArgument,
        x.f.clone().create_session(req::create("data", &over)),
    )
    .await;
    assert!(
        x.listed("data").await.is_empty(),
        "a refused create made a session"
    );
    // Exactly the limit is accepted: the refusal was this limit's.
    let made = x.create("data", &vec![1u8; DATA_LIMIT]).await;
    let before = x.get(&made.token).await;
    x.refused(
        "update with data over the limit",
        ErrorCode::InvalidArgument,
        x.f.clone()
            .update_session(req::update(&made.token, 0, &over)),
    )
    .await;
    let after = x.get(&made.token).await;
    assert_eq!(
        (after.version, after.data.len(), after.data[0]),
        (before.version, DATA_LIMIT, 1),
        "a refused update changed the session"
    );
}

/// Attributes: at most 4 096 bytes of keys and values together, and no empty key.
async fn attribute_bytes(x: &Ctx) {
    let at_limit = attrs(&[("k", "v".repeat(ATTRIBUTES_LIMIT - 1))]);
    let over = attrs(&[
        ("k", "v".repeat(ATTRIBUTES_LIMIT - 1)),
        ("x", String::new()),
    ]);
    let mut create = req::create("attrs", b"");
    create.attributes = over.clone();
    x.refused(
        "create with attributes over the limit",
        ErrorCode::InvalidArgument,
        x.f.clone().create_session(create),
    )
    .await;
    let mut create = req::create("attrs", b"");
    create.attributes = attrs(&[("", "v".into())]);
    x.refused(
        "create with an empty attribute name",
        ErrorCode::InvalidArgument,
        x.l.clone().create_session(create),
    )
    .await;
    assert!(
        x.listed("attrs").await.is_empty(),
        "a refused create made a session"
    );
    let mut create = req::create("attrs", b"");
    create.attributes = at_limit.clone();
    let made =
        x.l.clone()
            .create_session(create)
            .await
            .expect("attributes at the limit are accepted")
            .into_inner();
    let update = UpdateSessionRequest {
        session: req::by_id(&made.session.as_ref().unwrap().id),
        attributes: Some(AttributeMap { entries: over }),
        request_id: rid(),
        ..Default::default()
    };
    x.refused(
        "update with attributes over the limit",
        ErrorCode::InvalidArgument,
        x.l.clone().update_session(update),
    )
    .await;
    let after = x.get(&made.token).await;
    assert_eq!(
        (after.version, after.attributes),
        (1, at_limit),
        "a refused update changed the attributes"
    );
}

/// User ids: 1 to 256 bytes, on create, list and revoke-user.
async fn user_id_length(x: &Ctx) {
    let longest = "u".repeat(USER_ID_LIMIT);
    let over = "u".repeat(USER_ID_LIMIT + 1);
    x.refused(
        "create for a 257-byte user id",
        ErrorCode::InvalidArgument,
        x.l.clone().create_session(req::create(&over, b"")),
    )
    .await;
    x.refused(
        "create for an empty user id",
        ErrorCode::InvalidArgument,
        x.f.clone().create_session(req::create("", b"")),
    )
    .await;
    x.refused(
        "list of a 257-byte user id",
        ErrorCode::InvalidArgument,
        x.f.clone().list_user_sessions(req::list(&over)),
    )
    .await;
    let made = x.create(&longest, b"").await;
    x.refused(
        "revoke-user of a 257-byte user id",
        ErrorCode::InvalidArgument,
        x.l.clone().revoke_user_sessions(RevokeUserSessionsRequest {
            user_id: over.clone(),
            request_id: rid(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        x.listed(&longest).await,
        BTreeSet::from([made.session.unwrap().id]),
        "the 256-byte user keeps exactly the session it made"
    );
    x.get(&made.token).await;
}

/// Revoke reasons: at most 128 bytes, on revoke and revoke-user.
async fn reason_length(x: &Ctx) {
    let made = x.create("reasons", b"").await;
    let over = "r".repeat(REASON_LIMIT + 1);
    let mut revoke = req::revoke(&made.token);
    revoke.reason = over.clone();
    x.refused(
        "revoke with a 129-byte reason",
        ErrorCode::InvalidArgument,
        x.f.clone().revoke_session(revoke),
    )
    .await;
    x.refused(
        "revoke-user with a 129-byte reason",
        ErrorCode::InvalidArgument,
        x.l.clone().revoke_user_sessions(RevokeUserSessionsRequest {
            user_id: "reasons".into(),
            reason: over,
            request_id: rid(),
            ..Default::default()
        }),
    )
    .await;
    x.get(&made.token).await;
    assert_eq!(
        x.listed("reasons").await.len(),
        1,
        "a refused revoke revoked"
    );
    // 128 bytes is accepted, and recorded as given.
    let mut revoke = req::revoke(&made.token);
    revoke.reason = "r".repeat(REASON_LIMIT);
    x.l.clone()
        .revoke_session(revoke)
        .await
        .expect("a 128-byte reason");
    expect_revoked(
        x.l.clone().get_session(req::get(&made.token)).await,
        &"r".repeat(REASON_LIMIT),
    );
}

/// Timeouts: 0 takes the default; above 400 days is refused.
async fn timeouts(x: &Ctx) {
    let mut idle = req::create("timeouts", b"");
    idle.idle_timeout_ms = MAX_TIMEOUT_MS + 1;
    x.refused(
        "create with an idle timeout over 400 days",
        ErrorCode::InvalidArgument,
        x.l.clone().create_session(idle),
    )
    .await;
    let mut absolute = req::create("timeouts", b"");
    absolute.absolute_timeout_ms = MAX_TIMEOUT_MS + 1;
    x.refused(
        "create with an absolute timeout over 400 days",
        ErrorCode::InvalidArgument,
        x.f.clone().create_session(absolute),
    )
    .await;
    assert!(
        x.listed("timeouts").await.is_empty(),
        "a refused create made a session"
    );
    let mut longest = req::create("timeouts", b"");
    longest.idle_timeout_ms = MAX_TIMEOUT_MS;
    longest.absolute_timeout_ms = MAX_TIMEOUT_MS;
    let s =
        x.l.clone()
            .create_session(longest)
            .await
            .expect("400 days is accepted")
            .into_inner()
            .session
            .unwrap();
    assert_eq!(
        (
            s.idle_timeout_ms,
            s.absolute_expires_at_ms - s.created_at_ms
        ),
        (MAX_TIMEOUT_MS, MAX_TIMEOUT_MS)
    );
}

/// Request ids: exactly 16 bytes.
async fn request_id_length(x: &Ctx) {
    let made = x.create("rids", b"").await;
    for len in [15, 17] {
        let mut rotate = req::rotate(&made.token);
        rotate.request_id = vec![3; len];
        x.refused(
            &format!("rotation with a {len}-byte request id"),
            ErrorCode::InvalidArgument,
            x.f.clone().rotate_token(rotate),
        )
        .await;
        let mut create = req::create("rids", b"");
        create.request_id = vec![3; len];
        x.refused(
            &format!("create with a {len}-byte request id"),
            ErrorCode::InvalidArgument,
            x.l.clone().create_session(create),
        )
        .await;
    }
    let s = x.get(&made.token).await;
    assert_eq!(
        (s.generation, s.version),
        (0, 1),
        "a refused rotation rotated"
    );
    assert_eq!(
        x.listed("rids").await.len(),
        1,
        "a refused create made a session"
    );
}

/// Tokens and session ids: exactly their shape, or refused before any lookup.
async fn token_and_id_shape(x: &Ctx) {
    let made = x.create("shapes", b"").await;
    let token = &made.token;
    let id = made.session.as_ref().unwrap().id.clone();
    // One character more or less than the shape, or a character outside base64url.
    for bad in [
        format!("{token}A"),
        token[..token.len() - 1].to_string(),
        format!("{}!", &token[..token.len() - 1]),
    ] {
        x.refused(
            "rotation of a malformed token",
            ErrorCode::InvalidArgument,
            x.l.clone().rotate_token(req::rotate(&bad)),
        )
        .await;
    }
    for bad in [format!("{id}A"), id[..id.len() - 1].to_string()] {
        x.refused(
            "revoke of a malformed session id",
            ErrorCode::InvalidArgument,
            x.f.clone().revoke_session(RevokeSessionRequest {
                session: req::by_id(&bad),
                reason: String::new(),
                request_id: rid(),
            }),
        )
        .await;
    }
    let s = x.get(token).await;
    assert_eq!((s.generation, s.version), (0, 1), "a refused call wrote");
}

/// A request message over 16 MiB is refused by the transport, whatever it holds.
async fn request_message(x: &Ctx) {
    let huge = vec![0u8; MESSAGE_LIMIT];
    let s = x
        .refused_by_transport(
            "a create of more than 16 MiB",
            tonic::Code::OutOfRange,
            x.l.clone().create_session(req::create("huge", &huge)),
        )
        .await;
    assert!(
        s.message().contains(&MESSAGE_LIMIT.to_string()),
        "the refusal names the limit: {s:?}"
    );
    assert!(
        x.listed("huge").await.is_empty(),
        "a refused create made a session"
    );
}

/// Request metadata over 16 KiB is refused by HTTP/2 (status 431) before any handler.
async fn request_metadata(x: &Ctx) {
    let made = x.create("metadata", b"").await;
    let mut r = tonic::Request::new(req::rotate(&made.token));
    r.metadata_mut().insert(
        "x-padding",
        "p".repeat(METADATA_LIMIT + 1)
            .parse()
            .expect("ASCII metadata"),
    );
    x.refused_by_transport(
        "a call with more than 16 KiB of metadata",
        tonic::Code::Unknown,
        x.l.clone().rotate_token(r),
    )
    .await;
    let after = x.get(&made.token).await;
    assert_eq!(after.generation, 0, "the refused rotation rotated");
}

/// The `Cluster` service keeps the gRPC default of 4 MiB per request.
async fn cluster_request_message(x: &Ctx) {
    let members = |s: StatusResponse| -> Vec<u64> { s.members.iter().map(|m| m.id).collect() };
    let before = members(x.c.status(x.leader).await.expect("status"));
    let add = AddLearnerRequest {
        node_id: 99,
        client_addr: "a".repeat(CLUSTER_MESSAGE_LIMIT),
        peer_addr: "127.0.0.1:1".into(),
        blocking: false,
    };
    let mut cluster = ClusterClient::new(x.c.channel_as(ADMIN, x.leader))
        .max_encoding_message_size(4 * MESSAGE_LIMIT);
    x.refused_by_transport(
        "an AddLearner of more than 4 MiB",
        tonic::Code::OutOfRange,
        cluster.add_learner(add),
    )
    .await;
    let after = members(x.c.status(x.leader).await.expect("status"));
    assert_eq!(before, after, "a refused AddLearner changed the membership");
}

/// A user whose sessions together exceed the 16 MiB message limit lists in pages, each below
/// the 4 MiB that gRPC clients accept by default; a page size is kept to; a malformed page
/// token is refused and writes nothing.
async fn list_pages(x: &Ctx) {
    use prost::Message;
    let n = MESSAGE_LIMIT / DATA_LIMIT + 1;
    assert!(n <= CAP, "the cap must allow a list over the message limit");
    let data = vec![9u8; DATA_LIMIT];
    let mut made = BTreeSet::new();
    for _ in 0..n {
        made.insert(x.create("big", &data).await.session.expect("session").id);
    }
    let (mut seen, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = x.page("big", 0, &token).await;
        assert!(
            page.encoded_len() < 4 * 1024 * 1024,
            "a page of {} bytes",
            page.encoded_len()
        );
        assert!(!page.sessions.is_empty(), "an empty page before the last");
        pages += 1;
        assert!(pages <= n, "runaway paging");
        seen.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 1, "{n} sessions of 1 MiB came in one page");
    assert_eq!(seen.len(), n, "a session listed twice or missed");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), made);
    // A page size is kept to (small sessions: the count decides).
    for i in 0..5u8 {
        x.create("paged", &[i]).await;
    }
    let two = x.page("paged", 2, "").await;
    assert_eq!(two.sessions.len(), 2);
    assert!(!two.next_page_token.is_empty());
    let rest = x.page("paged", 100, &two.next_page_token).await;
    assert_eq!(rest.sessions.len(), 3);
    assert!(rest.next_page_token.is_empty());
    // A malformed page token: INVALID_ARGUMENT, nothing written.
    let before = x.logged().await;
    for bad in ["zz".to_string(), "00".to_string(), "ab".repeat(30)] {
        expect_err(
            x.l.clone()
                .list_user_sessions(ListUserSessionsRequest {
                    page_token: bad,
                    ..req::list("paged")
                })
                .await,
            ErrorCode::InvalidArgument,
        );
    }
    assert_eq!(x.logged().await, before);
}

/// The per-user cap under the default policy (`evict`): the create past the cap succeeds and
/// revokes the oldest session; the user keeps `CAP` sessions.
async fn sessions_per_user_evict(x: &Ctx) {
    let mut made = Vec::new();
    for i in 0..CAP {
        made.push(x.create("capped", &[i as u8]).await);
    }
    let ids = |m: &[CreateSessionResponse]| -> BTreeSet<String> {
        m.iter()
            .map(|r| r.session.as_ref().unwrap().id.clone())
            .collect()
    };
    assert_eq!(x.listed("capped").await, ids(&made));
    let newest = x.create("capped", b"new").await;
    expect_revoked(
        x.l.clone().get_session(req::get(&made[0].token)).await,
        "evicted",
    );
    let mut want = ids(&made[1..]);
    want.insert(newest.session.as_ref().unwrap().id.clone());
    assert_eq!(
        x.listed("capped").await,
        want,
        "the oldest made room, the rest stay"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_limit_is_refused_with_its_code_and_writes_nothing() {
    let x = Ctx::start(
        3,
        &[
            "--max-data-bytes",
            &DATA_LIMIT.to_string(),
            "--max-sessions-per-user",
            &CAP.to_string(),
        ],
    )
    .await;
    data_bytes(&x).await;
    attribute_bytes(&x).await;
    user_id_length(&x).await;
    reason_length(&x).await;
    timeouts(&x).await;
    request_id_length(&x).await;
    token_and_id_shape(&x).await;
    request_message(&x).await;
    request_metadata(&x).await;
    cluster_request_message(&x).await;
    list_pages(&x).await;
    sessions_per_user_evict(&x).await;
}

/// The per-user cap under `--cap-policy refuse`: `RESOURCE_EXHAUSTED`, the user's sessions
/// untouched; the refusal is remembered for its request id, so a retry after room was made
/// is still refused, while a new request is served.
#[tokio::test(flavor = "multi_thread")]
async fn the_per_user_cap_refuses_without_touching_the_sessions() {
    let x = Ctx::start(
        1,
        &["--max-sessions-per-user", "2", "--cap-policy", "refuse"],
    )
    .await;
    let kept = [x.create("erin", b"1").await, x.create("erin", b"2").await];
    let ids: BTreeSet<String> = kept
        .iter()
        .map(|k| k.session.as_ref().unwrap().id.clone())
        .collect();
    let third = req::create("erin", b"3");
    expect_err(
        x.l.clone().create_session(third.clone()).await,
        ErrorCode::ResourceExhausted,
    );
    assert_eq!(
        x.listed("erin").await,
        ids,
        "a refused create changed the list"
    );
    for k in &kept {
        let s = x.get(&k.token).await;
        assert_eq!(s.version, 1, "a refused create changed a session");
    }
    x.l.clone()
        .revoke_session(req::revoke(&kept[0].token))
        .await
        .expect("logout");
    expect_err(
        x.l.clone().create_session(third).await,
        ErrorCode::ResourceExhausted,
    );
    assert_eq!(
        x.listed("erin").await.len(),
        1,
        "a retried refusal made a session"
    );
    x.create("erin", b"3").await;
    assert_eq!(x.listed("erin").await.len(), 2);
}
