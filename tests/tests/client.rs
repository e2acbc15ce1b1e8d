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

/// `sessiond_rpc_duration_seconds_count{method="CreateSession"}` of node index `i`, from its
/// plaintext metrics port (0 before its first such call).
async fn creates_served(c: &TestCluster, i: usize) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = &c.nodes[i].http_addr;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("metrics of node index {i} at {addr}: {e}"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "metrics answer: {page:.200}"
    );
    page.lines()
        .find(|l| l.starts_with("sessiond_rpc_duration_seconds_count{method=\"CreateSession\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(0.0)
}

/// The nodes advertise `127.0.0.1:PORT`; this client names them `localhost:PORT` (a SAN of
/// the node certificates, so TLS still verifies). Leader hints name the leader by node id,
/// so after a few calls every leader-only call goes straight to the leader: the followers
/// serve none of them, not even as a forwarding hop.
#[tokio::test(flavor = "multi_thread")]
async fn leader_only_calls_go_straight_to_the_leader_whatever_the_endpoint_spelling() {
    let c = TestCluster::start3().await;
    let endpoints: Vec<String> = c
        .nodes
        .iter()
        .map(|n| {
            let port = n.client_addr.rsplit_once(':').expect("host:port").1;
            assert!(n.client_addr.starts_with("127.0.0.1:"), "{}", n.client_addr);
            format!("localhost:{port}")
        })
        .collect();
    let client = c
        .client_builder(endpoints)
        .request_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(20))
        .build()
        .unwrap();
    // Warm-up: round-robin until the client has heard from the nodes and a hint.
    for _ in 0..6 {
        client
            .create_session(NewSession::for_user("warm"))
            .await
            .unwrap();
    }
    // A leader change in the middle of a measurement (a loaded machine) makes a round void.
    for round in 1..=3 {
        let leader = c.leader().await;
        let followers: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != leader).collect();
        let mut before = Vec::new();
        for &f in &followers {
            before.push(creates_served(&c, f).await);
        }
        let leader_before = creates_served(&c, leader).await;
        const N: usize = 20;
        for _ in 0..N {
            client
                .create_session(NewSession::for_user("direct"))
                .await
                .unwrap();
        }
        if c.leader().await != leader {
            eprintln!("the leader changed during round {round}; measuring again");
            continue;
        }
        let mut after = Vec::new();
        for &f in &followers {
            after.push(creates_served(&c, f).await);
        }
        assert_eq!(
            before, after,
            "followers {followers:?} served CreateSession calls (forwarding hops) after warm-up"
        );
        let leader_after = creates_served(&c, leader).await;
        assert!(
            leader_after - leader_before >= N as f64,
            "the leader served {} of {N} creates",
            leader_after - leader_before
        );
        return;
    }
    panic!("the leader kept changing");
}
