//! The client crate against real clusters: failover without surfaced errors, dead endpoints,
//! exactly-once retries.

use sessiond_client::{Client, Consistency, Error, NewSession, SessionRef};
use sessiond_tests::TestCluster;
use std::time::Duration;

fn client_for(c: &TestCluster, extra: &[&str]) -> Client {
    let mut endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    endpoints.extend(extra.iter().map(|s| s.to_string()));
    c.client_builder(endpoints)
        .request_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_follows_a_new_leader_without_surfacing_errors() {
    let mut c = TestCluster::start3().await;
    let client = client_for(&c, &[]);
    let created = client
        .create_session(NewSession::for_user("ann"))
        .await
        .unwrap();
    let writer = {
        let client = client.clone();
        let token = created.token.clone();
        tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..60u8 {
                let s = client
                    .update_session(SessionRef::Token(token.clone()), 0, Some(vec![i]), None)
                    .await
                    .expect("no error reaches the caller during failover");
                versions.push(s.version);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            versions
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = c.leader().await;
    c.kill(leader);
    let versions = writer.await.unwrap();
    // Each update applied exactly once: versions advance by one per call.
    for w in versions.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "an update was applied twice or lost: {versions:?}"
        );
    }
    let now = client
        .get_session(&created.token, Consistency::Linearizable, false)
        .await
        .unwrap();
    assert_eq!(now.session.version, *versions.last().unwrap());
    assert_eq!(now.session.data, vec![59]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_endpoints_are_skipped_and_errors_are_typed() {
    let c = TestCluster::start3().await;
    // An address nobody listens on, first in the list.
    let client = client_for(&c, &[]);
    let mut endpoints = vec!["127.0.0.1:9".to_string()];
    endpoints.extend(client.endpoints());
    let client = c.client_builder(endpoints).build().unwrap();
    let created = client
        .create_session(NewSession::for_user("bo"))
        .await
        .unwrap();
    let a = client.rotate_token(&created.token).await.unwrap();
    // The racing-tab convenience: the old token yields the same successor.
    let b = client.rotate_or_current(&created.token).await.unwrap();
    assert_eq!(a.token, b);
    client
        .revoke_session(SessionRef::Token(b.clone()), "bye")
        .await
        .unwrap();
    match client
        .get_session(&b, Consistency::Linearizable, false)
        .await
    {
        Err(Error::Revoked { reason }) => assert_eq!(reason, "bye"),
        other => panic!("expected Revoked, got {other:?}"),
    }
    match client
        .get_session("sdt1_bad", Consistency::Stale, false)
        .await
    {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let fresh = client
        .create_session(NewSession::for_user("bo"))
        .await
        .unwrap();
    match client
        .update_session(
            SessionRef::Token(fresh.token.clone()),
            9,
            Some(vec![1]),
            None,
        )
        .await
    {
        Err(Error::VersionConflict { current }) => assert_eq!(current, 1),
        other => panic!("expected VersionConflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_request_id_makes_a_retry_return_the_first_result() {
    let c = TestCluster::start3().await;
    let client = client_for(&c, &[]);
    let created = client
        .create_session(NewSession::for_user("cy"))
        .await
        .unwrap();
    let once = client.with_request_id([5; 16]);
    let first = once.rotate_token(&created.token).await.unwrap();
    let retry = once.rotate_token(&created.token).await.unwrap();
    assert_eq!(first.token, retry.token);
    assert!(!first.replayed && retry.replayed);
    assert_eq!(retry.session.generation, 1, "rotated once");
}
