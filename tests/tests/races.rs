//! Concurrency: racing rotations, logout racing saves, and retries with one request id.

use sessiond_proto::v1::*;
use sessiond_tests::{code, expect_err, expect_revoked, req, rid, wait_for, TestCluster};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn racing_rotations_share_one_successor() {
    let c = TestCluster::start3().await;
    let mut l = c.leader_client().await;
    let clients = [c.client(0).await, c.client(1).await, c.client(2).await];
    for round in 0..5 {
        let created = l
            .create_session(req::create("tabs", b""))
            .await
            .unwrap()
            .into_inner();
        // 16 tabs, spread over all three nodes, rotate the same token at once.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let mut client = clients[i % 3].clone();
            let token = created.token.clone();
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                client
                    .rotate_token(req::rotate(&token))
                    .await
                    .map(|r| r.into_inner())
            }));
        }
        let mut successors = BTreeSet::new();
        let mut fresh = 0;
        for t in tasks {
            let r = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a racing tab failed: {e:?}"));
            assert!(r.rotated, "round {round}: {r:?}");
            assert_eq!(r.session.as_ref().unwrap().generation, 1, "round {round}");
            fresh += usize::from(!r.replayed);
            successors.insert(r.token);
        }
        assert_eq!(
            successors.len(),
            1,
            "round {round}: tabs got different successors"
        );
        assert_eq!(
            fresh, 1,
            "round {round}: exactly one request performed the rotation"
        );
        let s = successors.into_iter().next().unwrap();
        assert_ne!(s, created.token);
        let got = l.get_session(req::get(&s)).await.unwrap().into_inner();
        assert!(!got.superseded);
        assert_eq!(got.session.unwrap().generation, 1);
        // Every tab is still logged in: the old token is superseded, not reused.
        let old = l
            .get_session(req::get(&created.token))
            .await
            .unwrap()
            .into_inner();
        assert!(old.superseded, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_racing_saves_never_resurrects() {
    let c = TestCluster::start3().await;
    let mut l = c.leader_client().await;
    let clients = [c.client(0).await, c.client(1).await, c.client(2).await];
    let mut saves_ok = 0;
    let mut saves_refused = 0;
    for round in 0..20 {
        let user = format!("race-{round}");
        let created = l
            .create_session(req::create(&user, b"0"))
            .await
            .unwrap()
            .into_inner();
        let token = created.token.clone();
        let id = created.session.unwrap().id;
        // Three requests loaded the session (version 1) before the logout and save it now,
        // one per node, while a fourth logs out.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(4));
        let mut savers = Vec::new();
        for (n, client) in clients.iter().enumerate() {
            let mut saver = client.clone();
            let t = token.clone();
            let start = start.clone();
            savers.push(tokio::spawn(async move {
                start.wait().await;
                let mut results = Vec::new();
                for (i, expected) in [1u64, 0, 0].into_iter().enumerate() {
                    results.push(
                        saver
                            .update_session(req::update(&t, expected, &[n as u8, i as u8]))
                            .await,
                    );
                }
                results
            }));
        }
        let mut revoker = clients[round % 3].clone();
        let t = token.clone();
        let logout = tokio::spawn(async move {
            start.wait().await;
            revoker.revoke_session(req::revoke(&t)).await
        });
        let rv = logout
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: revoke failed: {e:?}"))
            .into_inner();
        assert!(!rv.already_revoked, "round {round}");
        for s in savers {
            for r in s.await.unwrap() {
                match r {
                    Ok(_) => saves_ok += 1,
                    Err(e) => {
                        assert!(
                            matches!(code(&e), ErrorCode::Revoked | ErrorCode::VersionConflict),
                            "round {round}: a racing save failed with {e:?}"
                        );
                        saves_refused += 1;
                    }
                }
            }
        }
        // Whatever the interleaving, the session stays logged out.
        expect_revoked(l.get_session(req::get(&token)).await, "logout");
        for client in &clients {
            let mut late = client.clone();
            expect_revoked(
                late.update_session(req::update(&token, 0, b"late")).await,
                "logout",
            );
        }
        expect_revoked(
            l.update_session(UpdateSessionRequest {
                session: req::by_id(&id),
                data: Some(b"late".to_vec()),
                request_id: rid(),
                ..Default::default()
            })
            .await,
            "logout",
        );
        expect_revoked(l.touch_session(req::touch(&token)).await, "logout");
        assert!(
            l.list_user_sessions(req::list(&user))
                .await
                .unwrap()
                .into_inner()
                .sessions
                .is_empty(),
            "round {round}: a revoked session is listed"
        );
    }
    // The race was real: both outcomes occurred over the rounds.
    eprintln!("saves applied before logout: {saves_ok}, refused: {saves_refused}");
    assert!(saves_refused > 0, "no save ever lost a race to the logout");
    // On every replica, each round's session stays revoked.
    for i in 0..3 {
        let mut n = c.client(i).await;
        let probe = l
            .create_session(req::create("probe", b""))
            .await
            .unwrap()
            .into_inner()
            .token;
        wait_for(Duration::from_secs(5), "replica to catch up", || {
            let mut n = n.clone();
            let probe = probe.clone();
            async move { n.get_session(req::get_stale(&probe)).await.ok() }
        })
        .await;
        let list = n
            .list_user_sessions(ListUserSessionsRequest {
                user_id: "race-0".into(),
                consistency: Consistency::Stale as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(list.sessions.is_empty(), "node index {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_mutations_return_the_first_answer() {
    let c = TestCluster::start3().await;
    let mut l = c.leader_client().await;
    let mut f = c.client(c.follower().await).await;

    // Create: the retry (through another node) returns the same session and token.
    let create = req::create("retry", b"d");
    let first = l.create_session(create.clone()).await.unwrap().into_inner();
    let second = f.create_session(create.clone()).await.unwrap().into_inner();
    assert_eq!(
        first.token, second.token,
        "a retried create returns the same token"
    );
    assert!(second.replayed && !first.replayed);
    assert_eq!(
        first.session.as_ref().unwrap().id,
        second.session.as_ref().unwrap().id
    );
    let third = l.create_session(create).await.unwrap().into_inner();
    assert_eq!(third.token, first.token);
    let listed = l
        .list_user_sessions(req::list("retry"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 1, "a retried create is applied once");

    // Rotate: the retry gets the same successor, even after the session moved on.
    let rotate = RotateTokenRequest {
        token: first.token.clone(),
        request_id: rid(),
    };
    let r1 = l.rotate_token(rotate.clone()).await.unwrap().into_inner();
    assert!(r1.rotated && !r1.replayed);
    let r2 = f.rotate_token(rotate).await.unwrap().into_inner();
    assert_eq!(r1.token, r2.token);
    assert!(r2.replayed);
    assert_eq!(r2.session.as_ref().unwrap().generation, 1);

    // Update: applied once, the retry answers the first version.
    let update = req::update(&r1.token, 2, b"v3");
    let u1 = l.update_session(update.clone()).await.unwrap().into_inner();
    let u2 = f.update_session(update.clone()).await.unwrap().into_inner();
    assert_eq!(u1.session.as_ref().unwrap().version, 3);
    assert_eq!(u2.session.as_ref().unwrap().version, 3, "not applied twice");
    assert!(u2.replayed && !u1.replayed);
    let bump = l
        .update_session(req::update(&r1.token, 3, b"v4"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bump.session.unwrap().version, 4);
    let u3 = l.update_session(update).await.unwrap().into_inner();
    assert_eq!(
        u3.session.unwrap().version,
        3,
        "a late retry still gets the first answer, and does not write"
    );
    let now = l
        .get_session(req::get(&r1.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.session.unwrap().data, b"v4");

    // A refused request stays refused when retried, even once it would succeed.
    let early = req::update(&r1.token, 5, b"v6");
    expect_err(
        l.update_session(early.clone()).await,
        ErrorCode::VersionConflict,
    );
    l.update_session(req::update(&r1.token, 4, b"v5"))
        .await
        .unwrap();
    expect_err(l.update_session(early).await, ErrorCode::VersionConflict);

    // Revoke: the retry answers as the first did (not "already revoked").
    let revoke = req::revoke(&r1.token);
    let v1 = l.revoke_session(revoke.clone()).await.unwrap().into_inner();
    let v2 = f.revoke_session(revoke).await.unwrap().into_inner();
    assert!(!v1.already_revoked && !v2.already_revoked && v2.replayed);
    assert_eq!(v1.id, v2.id);

    // A new rotation after the logout is refused.
    expect_revoked(l.rotate_token(req::rotate(&first.token)).await, "logout");

    // One request id cannot be reused for another operation.
    let mut other = req::create("retry2", b"");
    other.request_id = rid();
    let made = l.create_session(other.clone()).await.unwrap().into_inner();
    expect_err(
        l.rotate_token(RotateTokenRequest {
            token: made.token.clone(),
            request_id: other.request_id,
        })
        .await,
        ErrorCode::InvalidArgument,
    );
    let still = l
        .get_session(req::get(&made.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.session.unwrap().generation, 0, "nothing rotated");
}

#[tokio::test(flavor = "multi_thread")]
async fn linearizable_reads_on_any_node_see_the_latest_write() {
    let c = TestCluster::start3().await;
    let clients = [c.client(0).await, c.client(1).await, c.client(2).await];
    let created = clients[0]
        .clone()
        .create_session(req::create("rw", b"0"))
        .await
        .unwrap()
        .into_inner();
    let token = created.token;
    let mut version = 1;
    for round in 0..60usize {
        let (w, r) = (round % 3, (round / 3 + round + 1) % 3);
        let data = round.to_be_bytes();
        let up = clients[w]
            .clone()
            .update_session(req::update(&token, version, &data))
            .await
            .unwrap_or_else(|e| panic!("round {round}: update via node index {w}: {e:?}"))
            .into_inner();
        version = up.session.unwrap().version;
        // Acknowledged on one node, so a linearizable read on any node (this one included)
        // must see it at once.
        let got = clients[r]
            .clone()
            .get_session(req::get(&token))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        assert_eq!(
            (got.version, got.data.as_slice()),
            (version, &data[..]),
            "round {round}: write via node index {w}, read via node index {r}"
        );
        // Likewise for the user index.
        let user = format!("rw-{round}");
        clients[w]
            .clone()
            .create_session(req::create(&user, b""))
            .await
            .unwrap();
        let listed = clients[r]
            .clone()
            .list_user_sessions(req::list(&user))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.sessions.len(), 1, "round {round}: list via {r}");
    }
}
