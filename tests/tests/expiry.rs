//! Expiry by log entries: EXPIRED until swept, sweeping while running, and sweeping of
//! sessions that expired while the whole cluster was down.

use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::*;
use sessiond_tests::{code, expect_err, req, wait_for, TestCluster};
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::transport::Channel;

async fn listed(c: &mut SessionsClient<Channel>, user: &str) -> BTreeSet<String> {
    c.list_user_sessions(req::list(user))
        .await
        .unwrap()
        .into_inner()
        .sessions
        .into_iter()
        .map(|s| s.id)
        .collect()
}

fn id_of(r: &CreateSessionResponse) -> String {
    r.session.as_ref().unwrap().id.clone()
}

/// Wait until every token answers NOT_FOUND (swept) on `client`.
async fn wait_swept(client: &SessionsClient<Channel>, tokens: &[String], stale: bool) {
    for t in tokens {
        let t = t.clone();
        wait_for(Duration::from_secs(15), "an expired session swept", || {
            let mut client = client.clone();
            let t = t.clone();
            async move {
                let r = if stale {
                    client.get_session(req::get_stale(&t)).await
                } else {
                    client.get_session(req::get(&t)).await
                };
                match r {
                    Ok(_) => None,
                    Err(e) => match code(&e) {
                        ErrorCode::NotFound => Some(()),
                        ErrorCode::Expired => None,
                        _ => panic!("an expired session answered {e:?}"),
                    },
                }
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_sessions_answer_expired_until_swept() {
    // No sweep during this test: the sweeper looks only every 10 minutes.
    let c = TestCluster::builder(3)
        .flags(&["--expiry-interval-ms", "600000"])
        .start()
        .await;
    let mut l = c.leader_client().await;
    let mut f = c.client(c.follower().await).await;
    let idle = l
        .create_session(req::create_idle("hana", 1000))
        .await
        .unwrap()
        .into_inner();
    let mut abs_req = req::create_idle("hana", 600_000);
    abs_req.absolute_timeout_ms = 2000;
    let abs = l.create_session(abs_req).await.unwrap().into_inner();
    let a = abs.session.clone().unwrap();
    assert_eq!(a.expires_at_ms, a.absolute_expires_at_ms);
    assert!(a.absolute_expires_at_ms <= a.created_at_ms + 2000);
    let kept = l
        .create_session(req::create_idle("hana", 600_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(&mut l, "hana").await.len(), 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Touching cannot push a session past its absolute limit.
    let touched = l
        .touch_session(req::touch(&abs.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(touched.expires_at_ms, a.absolute_expires_at_ms);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for t in [&idle.token, &abs.token] {
        expect_err(l.get_session(req::get(t)).await, ErrorCode::Expired);
        expect_err(f.get_session(req::get(t)).await, ErrorCode::Expired);
        expect_err(f.get_session(req::get_stale(t)).await, ErrorCode::Expired);
        expect_err(l.touch_session(req::touch(t)).await, ErrorCode::Expired);
        expect_err(l.rotate_token(req::rotate(t)).await, ErrorCode::Expired);
        expect_err(
            f.update_session(req::update(t, 0, b"x")).await,
            ErrorCode::Expired,
        );
    }
    // A touch of an expired session does not revive it.
    expect_err(
        l.get_session(req::get(&idle.token)).await,
        ErrorCode::Expired,
    );
    assert_eq!(
        listed(&mut l, "hana").await,
        [id_of(&kept)].into_iter().collect(),
        "expired sessions are not listed"
    );
    l.get_session(req::get(&kept.token)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire_and_leave_the_user_index() {
    let c = TestCluster::start3().await;
    let mut l = c.leader_client().await;
    let mut gone = Vec::new();
    for _ in 0..3 {
        gone.push(
            l.create_session(req::create_idle("frank", 1500))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let kept = l
        .create_session(req::create_idle("frank", 600_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(&mut l, "frank").await.len(), 4);
    // Kept alive by touching: a short session that is used does not expire.
    let mut busy = req::create_idle("frank", 2000);
    busy.user_id = "frank-busy".into();
    let busy = l.create_session(busy).await.unwrap().into_inner();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        l.touch_session(req::touch(&busy.token))
            .await
            .expect("a session touched within its idle timeout lives");
    }
    wait_swept(&l, &gone, false).await;
    // The sweep is a log entry: every replica dropped the sessions.
    for i in 0..3 {
        wait_swept(&c.client(i).await, &gone, true).await;
    }
    assert_eq!(
        listed(&mut l, "frank").await,
        [id_of(&kept)].into_iter().collect()
    );
    l.get_session(req::get(&kept.token)).await.unwrap();
    l.get_session(req::get(&busy.token)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_expired_while_the_cluster_was_down_are_swept_after_restart() {
    let mut c = TestCluster::start3().await;
    let mut l = c.leader_client().await;
    let mut short_tokens = Vec::new();
    for _ in 0..5 {
        short_tokens.push(
            l.create_session(req::create_idle("gina", 4000))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let long = l
        .create_session(req::create_idle("gina", 600_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(&mut l, "gina").await.len(), 6);
    // Every replica has them before the whole cluster goes down.
    let t = long.token.clone();
    for i in 0..3 {
        let n = c.client(i).await;
        wait_for(Duration::from_secs(5), "replication", || {
            let mut n = n.clone();
            let t = t.clone();
            async move { n.get_session(req::get_stale(&t)).await.ok() }
        })
        .await;
    }
    // The premise: they are all still live when the cluster goes down, so only a sweep after
    // the restart can remove them.
    for t in &short_tokens {
        l.get_session(req::get(t))
            .await
            .expect("a short session is still live before the outage");
    }
    for i in 0..3 {
        c.kill(i);
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // Back from the data directories: two with the same flags, one without --initial-cluster.
    c.restart(0);
    c.restart(1);
    c.restart_with(2, false);
    let mut l = c.leader_client().await;
    for t in &short_tokens {
        let e = l.get_session(req::get(t)).await.unwrap_err();
        assert!(
            matches!(code(&e), ErrorCode::Expired | ErrorCode::NotFound),
            "a session expired during the outage answered {e:?}"
        );
    }
    // The new leader sweeps them: gone from the records and the user index, everywhere.
    wait_swept(&l, &short_tokens, false).await;
    for i in 0..3 {
        wait_swept(&c.client(i).await, &short_tokens, true).await;
    }
    assert_eq!(
        listed(&mut l, "gina").await,
        [id_of(&long)].into_iter().collect()
    );
    let survived = l
        .get_session(req::get(&long.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(survived.session.unwrap().id, id_of(&long));
}
