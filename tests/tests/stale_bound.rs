//! The STALE read bound holds for a node that is catching up: a node restarted after missing
//! many entries answers no STALE read from its old state, however recently it heard from the
//! leader, until it has applied what the leader told it.

use sessiond_proto::v1::*;
use sessiond_tests::{code, req, wait_for, TestCluster};
use std::time::{Duration, Instant};

/// Sessions written while the follower is down, so that catching up takes a while.
const BACKLOG_WRITERS: usize = 16;
const BACKLOG_PER_WRITER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_serves_no_stale_read_before_it_has_caught_up() {
    let mut c = TestCluster::start3().await;
    let mut leader = c.leader_client().await;
    let follower = c.follower().await;
    let token = leader
        .create_session(req::create("victim", b"x"))
        .await
        .expect("create")
        .into_inner()
        .token;
    // The follower has it and serves it STALE.
    let mut f = c.client(follower).await;
    wait_for(Duration::from_secs(10), "the follower to serve it", || {
        let mut f = f.clone();
        let t = token.clone();
        async move { f.get_session(req::get_stale(&t)).await.ok() }
    })
    .await;

    c.kill(follower);
    // A backlog the follower must apply first, then the revocation it must not miss.
    let mut writers = Vec::new();
    for w in 0..BACKLOG_WRITERS {
        let mut l = leader.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..BACKLOG_PER_WRITER {
                l.create_session(req::create(&format!("backlog-{w}-{i}"), &[7u8; 2048]))
                    .await
                    .expect("backlog create");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    leader
        .revoke_session(req::revoke(&token))
        .await
        .expect("revoke");
    let leader_idx = c.leader().await;
    let revoked_at = c
        .status(leader_idx)
        .await
        .expect("leader status")
        .applied_index;

    c.restart(follower);
    // Hammer the restarted node with STALE reads of the revoked token from the moment it
    // accepts connections until well after it has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut answered, mut caught_up_at) = (0usize, None::<Instant>);
    loop {
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up in 30 s ({answered} reads answered)"
        );
        if caught_up_at.is_none() {
            let applied = c.status(follower).await.map(|s| s.applied_index);
            if applied.is_some_and(|a| a >= revoked_at) {
                caught_up_at = Some(Instant::now());
            }
        }
        if caught_up_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        f = c.client(follower).await;
        for _ in 0..50 {
            match f.get_session(req::get_stale(&token)).await {
                Ok(r) => panic!(
                    "the catching-up node validated a token revoked before its restart: {:?}",
                    r.into_inner().session.map(|s| s.id)
                ),
                Err(s) if code(&s) == ErrorCode::Revoked => answered += 1,
                // Not up yet, or no leader known yet: not an answer.
                Err(s) => assert!(
                    matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                    ),
                    "unexpected answer {s:?}"
                ),
            }
        }
    }
    assert!(answered > 0, "no read was answered");
}
