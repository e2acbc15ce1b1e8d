//! Leader loss under load and a restarted node catching up.

use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::*;
use sessiond_tests::{code, req, until_stale_reads_find, wait_for, TestCluster};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tonic::transport::Channel;

const WRITERS: usize = 4;
const PER_WRITER: usize = 50;

/// Whether a failed call may be retried: the node could not answer (down, no leader, lost
/// connection, timeout). Definite answers (refusals) are not retried.
fn retryable(s: &tonic::Status) -> bool {
    !matches!(
        s.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition
            | tonic::Code::Aborted
            | tonic::Code::ResourceExhausted
            | tonic::Code::AlreadyExists
    )
}

/// Create with retries against every node in turn, always with the same request id, until
/// acknowledged or the deadline passes.
async fn create_with_retries(
    clients: &[SessionsClient<Channel>],
    first: usize,
    request: CreateSessionRequest,
    deadline: Instant,
    retries: &AtomicUsize,
) -> Result<CreateSessionResponse, String> {
    let mut attempt = first;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        let mut c = clients[attempt % clients.len()].clone();
        attempt += 1;
        match tokio::time::timeout(Duration::from_secs(3), c.create_session(request.clone())).await
        {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(s)) if !retryable(&s) => return Err(format!("refused: {s:?}")),
            Ok(Err(s)) => last = format!("{s:?}"),
            Err(_) => last = "timed out".into(),
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "not acknowledged before the deadline; last error {last}"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_mid_load_loses_no_acknowledged_write() {
    let mut c = TestCluster::start3().await;
    let old = c.leader().await;
    let old_term = c.status(old).await.unwrap().term;
    let clients = vec![c.client(0).await, c.client(1).await, c.client(2).await];
    let acked = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let clients = clients.clone();
        let acked = acked.clone();
        let retries = retries.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let data = format!("{w}-{i}").into_bytes();
                let r = req::create(&format!("load-{w}"), &data);
                let ok = create_with_retries(&clients, w + i, r, deadline, &retries)
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}, create {i}: {e}"));
                acked.lock().await.push((ok.token, data));
            }
        }));
    }
    // Kill the leader once the writers are well under way.
    wait_for(Duration::from_secs(20), "40 acknowledged creates", || {
        let acked = acked.clone();
        async move { (acked.lock().await.len() >= 40).then_some(()) }
    })
    .await;
    c.kill(old);
    let at_kill = acked.lock().await.len();
    for t in tasks {
        t.await.expect("writer task");
    }
    eprintln!(
        "leader killed after {at_kill} acks; {} retries",
        retries.load(Ordering::Relaxed)
    );
    assert!(
        at_kill < WRITERS * PER_WRITER,
        "the leader died while writes were still coming"
    );
    let new = c.leader().await;
    assert_ne!(new, old, "a new leader was elected");
    assert!(c.status(new).await.unwrap().term > old_term);
    let acked = acked.lock().await.clone();
    assert_eq!(acked.len(), WRITERS * PER_WRITER);

    // Every acknowledged create is readable, with its data.
    let mut l = c.client(new).await;
    for (t, data) in &acked {
        let got = l
            .get_session(req::get(t))
            .await
            .unwrap_or_else(|e| panic!("acknowledged create lost: {e:?}"))
            .into_inner();
        assert_eq!(&got.session.unwrap().data, data);
    }
    // No create was applied twice: each writer's user holds exactly its sessions.
    for w in 0..WRITERS {
        let list = l
            .list_user_sessions(req::list(&format!("load-{w}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.sessions.len(), PER_WRITER, "writer {w}");
    }

    // The killed node restarts from its data directory (same flags) and catches up.
    c.restart(old);
    let last_token = acked.last().unwrap().0.clone();
    // One more write after the restart, that it can only learn from the new leader.
    let after = l
        .create_session(req::create("after-restart", b"x"))
        .await
        .unwrap()
        .into_inner();
    let leader_applied = c.status(new).await.unwrap().applied_index;
    let caught_up = wait_for(
        Duration::from_secs(20),
        "the restarted node to catch up",
        || {
            let c = &c;
            async move {
                c.status(old)
                    .await
                    .filter(|s| s.applied_index >= leader_applied)
            }
        },
    )
    .await;
    assert_eq!(
        caught_up.leader_id,
        c.leader_id().await,
        "it follows the leader"
    );
    let back = c.client(old).await;
    until_stale_reads_find(
        &back,
        &[&acked[0].0, &last_token, &after.token],
        "the restarted node",
    )
    .await;
    let stale_list = back
        .clone()
        .list_user_sessions(ListUserSessionsRequest {
            user_id: "load-0".into(),
            consistency: Consistency::Stale as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stale_list.sessions.len(), PER_WRITER);
    // And it serves writes again (forwarding to the leader).
    back.clone()
        .create_session(req::create("after-restart", b"y"))
        .await
        .unwrap();
}

/// The call failed as "no leader now": gRPC UNAVAILABLE with a NOT_LEADER or UNAVAILABLE detail.
#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) {
    let s = r.map(|v| v.into_inner()).expect_err(what);
    assert_eq!(s.code(), tonic::Code::Unavailable, "{what}: {s:?}");
    assert!(
        matches!(code(&s), ErrorCode::Unavailable | ErrorCode::NotLeader),
        "{what}: detail {:?} of {s:?}",
        code(&s)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_node_answers_unavailable_in_bounded_time_and_recovers() {
    let mut c = TestCluster::start3().await;
    let leader = c.leader().await;
    let lone = c.follower().await;
    let mut l = c.client(leader).await;
    let before = l
        .create_session(req::create("lone", b"before"))
        .await
        .unwrap()
        .into_inner();
    let mut n = c.client(lone).await;
    let t = before.token.clone();
    wait_for(
        Duration::from_secs(5),
        "replication to the lone node",
        || {
            let mut n = n.clone();
            let t = t.clone();
            async move { n.get_session(req::get_stale(&t)).await.ok() }
        },
    )
    .await;
    // The lone node loses both peers, the leader among them.
    for i in 0..3 {
        if i != lone {
            c.kill(i);
        }
    }
    // Past the stale-read bound (the maximum election timeout, 600 ms here).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let create = req::create("lone", b"during");
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), n.create_session(create.clone()))
        .await
        .expect("a write without a quorum is answered, not left hanging");
    assert_unavailable(r, "a write without a quorum");
    let r = tokio::time::timeout(Duration::from_secs(15), n.get_session(req::get(&t)))
        .await
        .expect("a linearizable read without a quorum is answered");
    assert_unavailable(r, "a linearizable read without a quorum");
    let r = tokio::time::timeout(Duration::from_secs(15), n.get_session(req::get_stale(&t)))
        .await
        .expect("a stale read past its bound is answered");
    assert_unavailable(r, "a stale read long after the last contact with a leader");
    eprintln!("three refusals took {:?}", started.elapsed());

    // The others come back; the same create (same request id) now succeeds, once.
    for i in 0..3 {
        if i != lone {
            c.restart(i);
        }
    }
    c.wait_for_leader(Duration::from_secs(30)).await;
    let done = wait_for(Duration::from_secs(20), "the retried create", || {
        let mut n = n.clone();
        let create = create.clone();
        async move { n.create_session(create).await.ok() }
    })
    .await
    .into_inner();
    let again = n.create_session(create).await.unwrap().into_inner();
    assert_eq!(again.token, done.token);
    let listed = n
        .list_user_sessions(req::list("lone"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 2, "{listed:?}");
    n.get_session(req::get(&before.token)).await.unwrap();
}
