//! Concurrency: racing rotations, logout racing saves, and retries with one request id.

use sessiond_proto::v1::*;
use sessiond_tests::{code, req, rid, TestCluster};
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread")]
async fn racing_rotations_share_one_successor() {
    let c = TestCluster::start3().await;
    let mut l = c.client(c.leader().await).await;
    let clients = [c.client(0).await, c.client(1).await, c.client(2).await];
    for round in 0..3 {
        let created = l
            .create_session(req::create("tabs", b""))
            .await
            .unwrap()
            .into_inner();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let mut client = clients[i % 3].clone();
            let token = created.token.clone();
            tasks.push(tokio::spawn(async move {
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
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert!(r.rotated);
            fresh += usize::from(!r.replayed);
            successors.insert(r.token);
        }
        assert_eq!(
            successors.len(),
            1,
            "round {round}: tabs got different successors"
        );
        assert_eq!(fresh, 1, "exactly one request performed the rotation");
        let s = successors.into_iter().next().unwrap();
        let got = l.get_session(req::get(&s)).await.unwrap().into_inner();
        assert_eq!(got.session.unwrap().generation, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_racing_saves_never_resurrects() {
    let c = TestCluster::start3().await;
    let mut l = c.client(c.leader().await).await;
    let mut f = c.client(c.follower().await).await;
    for round in 0..10 {
        let created = l
            .create_session(req::create("race", b"0"))
            .await
            .unwrap()
            .into_inner();
        let token = created.token.clone();
        let mut saver = f.clone();
        let t2 = token.clone();
        let saves = tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..5u8 {
                if saver
                    .update_session(req::update(&t2, 0, &[i]))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        });
        let mut revoker = l.clone();
        let t3 = token.clone();
        let logout = tokio::spawn(async move { revoker.revoke_session(req::revoke(&t3)).await });
        logout
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: revoke failed: {e:?}"));
        let _ = saves.await.unwrap();
        let e = l.get_session(req::get(&token)).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::Revoked, "round {round}");
        let late = f
            .update_session(req::update(&token, 0, b"late"))
            .await
            .unwrap_err();
        assert_eq!(
            code(&late),
            ErrorCode::Revoked,
            "round {round}: a save after logout"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_mutations_return_the_first_answer() {
    let c = TestCluster::start3().await;
    let mut l = c.client(c.leader().await).await;
    let mut f = c.client(c.follower().await).await;

    let create = req::create("retry", b"d");
    let first = l.create_session(create.clone()).await.unwrap().into_inner();
    let second = f.create_session(create).await.unwrap().into_inner();
    assert_eq!(
        first.token, second.token,
        "a retried create returns the same token"
    );
    assert!(second.replayed && !first.replayed);
    assert_eq!(
        first.session.as_ref().unwrap().id,
        second.session.as_ref().unwrap().id
    );

    let rotate = RotateTokenRequest {
        token: first.token.clone(),
        request_id: rid(),
    };
    let r1 = l.rotate_token(rotate.clone()).await.unwrap().into_inner();
    let r2 = f.rotate_token(rotate).await.unwrap().into_inner();
    assert_eq!(r1.token, r2.token);
    assert!(r2.replayed);

    let update = req::update(&r1.token, 2, b"v3");
    let u1 = l.update_session(update.clone()).await.unwrap().into_inner();
    let u2 = l.update_session(update).await.unwrap().into_inner();
    assert_eq!(u1.session.as_ref().unwrap().version, 3);
    assert_eq!(u2.session.as_ref().unwrap().version, 3, "not applied twice");
    assert!(u2.replayed);

    let revoke = req::revoke(&r1.token);
    let v1 = l.revoke_session(revoke.clone()).await.unwrap().into_inner();
    let v2 = f.revoke_session(revoke).await.unwrap().into_inner();
    assert!(!v1.already_revoked && !v2.already_revoked && v2.replayed);

    // One request id cannot be reused for another operation.
    let mut other = req::create("retry", b"");
    other.request_id = vec![7; 16];
    l.create_session(other.clone()).await.unwrap();
    let misuse = l
        .rotate_token(RotateTokenRequest {
            token: second.token.clone(),
            request_id: other.request_id,
        })
        .await
        .unwrap_err();
    assert_eq!(code(&misuse), ErrorCode::InvalidArgument);
}
