//! Expiry by log entries: while running, and across a full-cluster restart.

use sessiond_proto::v1::*;
use sessiond_tests::{code, req, wait_for, TestCluster};
use std::time::Duration;

fn short(user: &str, idle_ms: u64) -> CreateSessionRequest {
    let mut r = req::create(user, b"");
    r.idle_timeout_ms = idle_ms;
    r
}

async fn listed(
    c: &mut sessiond_proto::v1::sessions_client::SessionsClient<tonic::transport::Channel>,
    user: &str,
) -> usize {
    c.list_user_sessions(ListUserSessionsRequest {
        user_id: user.into(),
        consistency: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .sessions
    .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire_and_leave_the_user_index() {
    let c = TestCluster::start3().await;
    let mut l = c.client(c.leader().await).await;
    let gone = l
        .create_session(short("frank", 1500))
        .await
        .unwrap()
        .into_inner();
    let kept = l
        .create_session(short("frank", 600_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(&mut l, "frank").await, 2);
    let token = gone.token.clone();
    wait_for(
        Duration::from_secs(10),
        "the short session to be swept",
        || {
            let mut l = l.clone();
            let token = token.clone();
            async move {
                let e = l.get_session(req::get(&token)).await.err()?;
                matches!(code(&e), ErrorCode::NotFound).then_some(())
            }
        },
    )
    .await;
    assert_eq!(listed(&mut l, "frank").await, 1);
    l.get_session(req::get(&kept.token)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_expired_while_the_cluster_was_down_are_swept_after_restart() {
    let mut c = TestCluster::start3().await;
    let mut l = c.client(c.leader().await).await;
    let mut short_tokens = Vec::new();
    for _ in 0..5 {
        short_tokens.push(
            l.create_session(short("gina", 3000))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let long = l
        .create_session(short("gina", 600_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(&mut l, "gina").await, 6);
    for i in 0..3 {
        c.kill(i);
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for i in 0..3 {
        c.restart(i);
    }
    let mut l = c.client(c.leader().await).await;
    for t in &short_tokens {
        let e = l.get_session(req::get(t)).await.unwrap_err();
        assert!(
            matches!(code(&e), ErrorCode::Expired | ErrorCode::NotFound),
            "expired session answered {e:?}"
        );
    }
    wait_for(
        Duration::from_secs(10),
        "the user index to drop expired sessions",
        || {
            let mut l = l.clone();
            async move { (listed(&mut l, "gina").await == 1).then_some(()) }
        },
    )
    .await;
    for t in &short_tokens {
        let e = l.get_session(req::get(t)).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::NotFound, "swept sessions are gone");
    }
    l.get_session(req::get(&long.token)).await.unwrap();
}
