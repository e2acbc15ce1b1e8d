//! Every RPC and its error paths against a real 3-node cluster.

use sessiond_proto::v1::*;
use sessiond_tests::{code, detail, req, rid, wait_for, TestCluster};
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn sessions_api_and_error_paths() {
    let c = TestCluster::builder(3)
        .flags(&["--grace-window-ms", "1500", "--max-data-bytes", "1024"])
        .start()
        .await;
    let follower = c.follower().await;
    // Writes sent to a follower are forwarded to the leader.
    let mut f = c.client(follower).await;
    let mut l = c.client(c.leader().await).await;

    let created = f
        .create_session(req::create("alice", b"hello"))
        .await
        .unwrap()
        .into_inner();
    let s = created.session.clone().unwrap();
    assert!(created.token.starts_with("sdt1_") && created.token.len() == 48);
    assert_eq!(s.id.len(), 22);
    assert_eq!(
        (s.generation, s.version, s.user_id.as_str()),
        (0, 1, "alice")
    );
    assert!(!created.replayed);

    // Linearizable get on the leader and on a follower; stale get on a follower once replicated.
    let got = l
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.session.unwrap().data, b"hello");
    assert!(!got.superseded);
    f.get_session(req::get(&created.token)).await.unwrap();
    let t = created.token.clone();
    wait_for(Duration::from_secs(5), "stale read on a follower", || {
        let mut f = f.clone();
        let t = t.clone();
        async move { f.get_session(req::get_stale(&t)).await.ok() }
    })
    .await;

    // Rotation: a new token; the old one is superseded inside the grace window and rotating it
    // again yields the same successor.
    let rot = l
        .rotate_token(req::rotate(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(rot.rotated && !rot.replayed);
    assert_ne!(rot.token, created.token);
    assert_eq!(rot.session.as_ref().unwrap().generation, 1);
    let old = l
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(old.superseded);
    let again = f
        .rotate_token(req::rotate(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.token, rot.token);
    assert!(again.replayed);
    // Rotating the current token inside the minimum interval keeps it.
    let keep = l
        .rotate_token(req::rotate(&rot.token))
        .await
        .unwrap()
        .into_inner();
    assert!(!keep.rotated);
    assert_eq!(keep.token, rot.token);

    // CAS update.
    let v = rot.session.unwrap().version;
    let conflict = l
        .update_session(req::update(&rot.token, v + 5, b"x"))
        .await
        .unwrap_err();
    assert_eq!(code(&conflict), ErrorCode::VersionConflict);
    assert_eq!(detail(&conflict).unwrap().current_version, v);
    let up = l
        .update_session(req::update(&rot.token, v, b"new"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.session.as_ref().unwrap().version, v + 1);
    let up2 = l
        .update_session(req::update(&rot.token, 0, b"newer"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up2.session.unwrap().data, b"newer");
    // Oversized data is refused and changes nothing.
    let big = l
        .update_session(req::update(&rot.token, 0, &[0; 2048]))
        .await
        .unwrap_err();
    assert_eq!(code(&big), ErrorCode::InvalidArgument);
    let after = l
        .get_session(req::get(&rot.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.session.unwrap().data, b"newer");
    let big_create = l
        .create_session(req::create("alice", &[0; 2048]))
        .await
        .unwrap_err();
    assert_eq!(code(&big_create), ErrorCode::InvalidArgument);

    // Touch answers with the session.
    let touched = l
        .touch_session(TouchSessionRequest {
            token: rot.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(touched.session.unwrap().id, s.id);

    // List.
    let second = l
        .create_session(req::create("alice", b"2"))
        .await
        .unwrap()
        .into_inner();
    let list = l
        .list_user_sessions(ListUserSessionsRequest {
            user_id: "alice".into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sessions.len(), 2);

    // Watch revocations from now on, then revoke.
    let mut watch = l
        .watch_revocations(WatchRevocationsRequest { from_index: 0 })
        .await
        .unwrap()
        .into_inner();
    let rv = f
        .revoke_session(req::revoke(&rot.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rv.id, s.id);
    assert!(!rv.already_revoked);
    let again = l
        .revoke_session(req::revoke(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_revoked, "revoke is idempotent");
    let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a revocation event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.session_id.as_str(), ev.reason.as_str()),
        (s.id.as_str(), "logout")
    );

    // Every operation with either token now answers REVOKED with the reason.
    for token in [&rot.token, &created.token] {
        let e = l.get_session(req::get(token)).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::Revoked);
        assert_eq!(detail(&e).unwrap().revoked_reason, "logout");
        assert_eq!(
            code(&l.rotate_token(req::rotate(token)).await.unwrap_err()),
            ErrorCode::Revoked
        );
        assert_eq!(
            code(
                &l.update_session(req::update(token, 0, b"z"))
                    .await
                    .unwrap_err()
            ),
            ErrorCode::Revoked
        );
        assert_eq!(
            code(
                &l.touch_session(TouchSessionRequest {
                    token: token.clone()
                })
                .await
                .unwrap_err()
            ),
            ErrorCode::Revoked
        );
    }
    let by_id = l
        .update_session(UpdateSessionRequest {
            session: req::by_id(&s.id),
            data: Some(b"z".to_vec()),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(&by_id), ErrorCode::Revoked);

    // Revoke everywhere but here.
    let third = l
        .create_session(req::create("alice", b"3"))
        .await
        .unwrap()
        .into_inner();
    let all = l
        .revoke_user_sessions(RevokeUserSessionsRequest {
            user_id: "alice".into(),
            except_id: third.session.as_ref().unwrap().id.clone(),
            reason: "password changed".into(),
            request_id: rid(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.revoked_ids, vec![second.session.unwrap().id]);
    l.get_session(req::get(&third.token)).await.unwrap();
    let e = l.get_session(req::get(&second.token)).await.unwrap_err();
    assert_eq!(detail(&e).unwrap().revoked_reason, "password changed");

    // Malformed and unknown input.
    assert_eq!(
        code(&l.get_session(req::get("sdt1_short")).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    let unknown = format!("sdt1_{}", "A".repeat(43));
    assert_eq!(
        code(&l.get_session(req::get(&unknown)).await.unwrap_err()),
        ErrorCode::NotFound
    );
    let mut bad_rid = req::create("bob", b"");
    bad_rid.request_id = vec![1, 2, 3];
    assert_eq!(
        code(&f.create_session(bad_rid).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    let mut no_user = req::create("", b"");
    no_user.request_id = rid();
    assert_eq!(
        code(&l.create_session(no_user).await.unwrap_err()),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            &l.update_session(UpdateSessionRequest {
                session: req::by_id("not-an-id"),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .unwrap_err()
        ),
        ErrorCode::InvalidArgument
    );

    // Reuse detection: after the grace window the old token is a replay; the session dies.
    let fresh = l
        .create_session(req::create("carol", b""))
        .await
        .unwrap()
        .into_inner();
    let next = l
        .rotate_token(req::rotate(&fresh.token))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let reused = l.get_session(req::get(&fresh.token)).await.unwrap_err();
    assert_eq!(code(&reused), ErrorCode::TokenReused);
    let dead = l.get_session(req::get(&next.token)).await.unwrap_err();
    assert_eq!(code(&dead), ErrorCode::Revoked);
    assert_eq!(detail(&dead).unwrap().revoked_reason, "reuse_detected");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_cap_evicts_or_refuses() {
    let c = TestCluster::builder(3)
        .flags(&["--max-sessions-per-user", "3"])
        .start()
        .await;
    let mut l = c.client(c.leader().await).await;
    let mut tokens = Vec::new();
    for i in 0..3 {
        tokens.push(
            l.create_session(req::create("dave", &[i]))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let fourth = l
        .create_session(req::create("dave", b"4"))
        .await
        .unwrap()
        .into_inner();
    let e = l.get_session(req::get(&tokens[0])).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::Revoked);
    assert_eq!(detail(&e).unwrap().revoked_reason, "evicted");
    l.get_session(req::get(&tokens[1])).await.unwrap();
    l.get_session(req::get(&fourth.token)).await.unwrap();
    drop(c);

    let c = TestCluster::builder(3)
        .flags(&["--max-sessions-per-user", "2", "--cap-policy", "refuse"])
        .start()
        .await;
    let mut l = c.client(c.leader().await).await;
    for _ in 0..2 {
        l.create_session(req::create("erin", b"")).await.unwrap();
    }
    let e = l
        .create_session(req::create("erin", b""))
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::ResourceExhausted);
}
