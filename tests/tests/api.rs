//! Every RPC and its error paths against a real 3-node cluster.

use sessiond_proto::v1::*;
use sessiond_tests::{code, expect_err, expect_revoked, req, rid, wait_for, TestCluster};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Read revocation events from `stream` until `want` session ids were all seen (5 s at most).
async fn collect_revocations(
    stream: &mut tonic::Streaming<Revocation>,
    want: &[&str],
) -> Vec<Revocation> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !want
        .iter()
        .all(|id| seen.iter().any(|e: &Revocation| e.session_id == *id))
    {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("revocations of {want:?} not all delivered: {seen:?}"));
        seen.push(
            next.expect("stream open")
                .expect("a revocation, not an error"),
        );
        assert!(seen.len() < 1000, "runaway watch stream");
    }
    seen
}

/// Checks that refused requests leave the leader's applied index where it was, and records
/// every one that did not, so one failure names all offenders.
struct NoWrites<'a> {
    c: &'a TestCluster,
    leader: usize,
    offenders: Vec<String>,
}

impl NoWrites<'_> {
    /// `call` must fail with `want` (else panic) without a log write (else recorded).
    async fn check<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        want: ErrorCode,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) {
        let before = self.c.status(self.leader).await.unwrap().last_log_index;
        let r = call.await;
        let after = self.c.status(self.leader).await.unwrap().last_log_index;
        if let Err(s) = &r {
            assert_eq!(code(s), want, "{what}: {s:?}");
        }
        expect_err(r, want);
        if after != before {
            self.offenders
                .push(format!("{what} (applied index {before} -> {after})"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_api_and_error_paths() {
    let c = TestCluster::builder(3)
        .flags(&["--grace-window-ms", "5000", "--max-data-bytes", "1024"])
        .start()
        .await;
    let leader = c.leader().await;
    let follower = c.follower().await;
    // Writes sent to a follower are forwarded to the leader.
    let mut f = c.client(follower).await;
    let mut l = c.client(leader).await;

    let mut create = req::create("alice", b"hello");
    create
        .attributes
        .insert("device".into(), "firefox on linux".into());
    let created = f.create_session(create).await.unwrap().into_inner();
    let s = created.session.clone().unwrap();
    assert!(
        created.token.starts_with("sdt1_") && created.token.len() == 48,
        "token shape: {}",
        created.token
    );
    assert!(created.token[5..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(s.id.len(), 22);
    assert_eq!(
        (
            s.generation,
            s.version,
            s.user_id.as_str(),
            s.data.as_slice()
        ),
        (0, 1, "alice", &b"hello"[..])
    );
    assert_eq!(s.attributes["device"], "firefox on linux");
    assert!(s.created_at_ms > 0 && s.expires_at_ms > s.created_at_ms);
    assert!(!created.replayed);

    // Linearizable get on the leader and on a follower; stale get on a follower once replicated.
    let got = l
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.session.as_ref().unwrap().id, s.id);
    assert_eq!(got.session.unwrap().data, b"hello");
    assert!(!got.superseded);
    let got_f = f
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got_f.session.unwrap().id, s.id);
    let t = created.token.clone();
    let stale = wait_for(Duration::from_secs(5), "stale read on a follower", || {
        let mut f = f.clone();
        let t = t.clone();
        async move { f.get_session(req::get_stale(&t)).await.ok() }
    })
    .await
    .into_inner();
    assert_eq!(stale.session.unwrap().id, s.id);

    // Rotation: a new token; the old one is superseded inside the grace window and rotating it
    // again yields the same successor.
    let rot = l
        .rotate_token(req::rotate(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(rot.rotated && !rot.replayed);
    assert_ne!(rot.token, created.token);
    assert!(rot.token.starts_with("sdt1_") && rot.token.len() == 48);
    let rs = rot.session.clone().unwrap();
    assert_eq!((rs.id.as_str(), rs.generation), (s.id.as_str(), 1));
    let old = f
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(old.superseded, "the previous token is flagged superseded");
    assert_eq!(old.session.unwrap().generation, 1);
    let cur = l
        .get_session(req::get(&rot.token))
        .await
        .unwrap()
        .into_inner();
    assert!(!cur.superseded);
    let again = f
        .rotate_token(req::rotate(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.token, rot.token, "the same successor");
    assert!(again.rotated && again.replayed);
    // Rotating the current token inside the minimum interval keeps it.
    let keep = l
        .rotate_token(req::rotate(&rot.token))
        .await
        .unwrap()
        .into_inner();
    assert!(!keep.rotated);
    assert_eq!(keep.token, rot.token);
    assert_eq!(keep.session.unwrap().generation, 1);

    // CAS update: a wrong version conflicts and names the current one.
    let v = l
        .get_session(req::get(&rot.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .version;
    let conflict = expect_err(
        l.update_session(req::update(&rot.token, v + 5, b"x")).await,
        ErrorCode::VersionConflict,
    );
    assert_eq!(conflict.current_version, v);
    let up = l
        .update_session(req::update(&rot.token, v, b"new"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.session.as_ref().unwrap().version, v + 1);
    assert_eq!(up.session.as_ref().unwrap().data, b"new");
    assert!(!up.replayed);
    // The version just used is now stale.
    let stale_cas = expect_err(
        f.update_session(req::update(&rot.token, v, b"lost")).await,
        ErrorCode::VersionConflict,
    );
    assert_eq!(stale_cas.current_version, v + 1);
    // expected_version 0 is unconditional; the previous token (in its grace window) may save too.
    let up2 = f
        .update_session(req::update(&created.token, 0, b"newer"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up2.session.as_ref().unwrap().version, v + 2);
    // Attributes are replaced when given; data is kept when not given.
    let mut attrs = std::collections::HashMap::new();
    attrs.insert("ip".to_string(), "192.0.2.1".to_string());
    let up3 = l
        .update_session(UpdateSessionRequest {
            session: req::by_id(&s.id),
            expected_version: v + 2,
            data: None,
            attributes: Some(AttributeMap { entries: attrs }),
            request_id: rid(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(up3.data, b"newer");
    assert_eq!(up3.version, v + 3);
    assert_eq!(
        up3.attributes.keys().collect::<Vec<_>>(),
        vec!["ip"],
        "attributes replaced"
    );

    // Touch answers with the session (its deadline effects are in touch_slides_the_idle_deadline).
    let touched = l
        .touch_session(req::touch(&rot.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(touched.session.unwrap().id, s.id);
    assert!(!touched.superseded);
    let touched_old = f
        .touch_session(req::touch(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(touched_old.superseded);

    // List: the user's live sessions, and nobody else's.
    let second = l
        .create_session(req::create("alice", b"2"))
        .await
        .unwrap()
        .into_inner();
    l.create_session(req::create("alicia", b"")).await.unwrap();
    let list = f
        .list_user_sessions(req::list("alice"))
        .await
        .unwrap()
        .into_inner();
    let ids: BTreeSet<_> = list.sessions.iter().map(|s| s.id.clone()).collect();
    let want: BTreeSet<_> = [s.id.clone(), second.session.clone().unwrap().id]
        .into_iter()
        .collect();
    assert_eq!(ids, want);
    assert!(list.sessions.iter().all(|x| x.user_id == "alice"));
    assert!(l
        .list_user_sessions(req::list("nobody"))
        .await
        .unwrap()
        .into_inner()
        .sessions
        .is_empty());

    // Watch revocations from now on, then revoke (through a follower).
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
    assert!(!rv.already_revoked && !rv.replayed);
    // Idempotent: by the previous token, and by id.
    let again = l
        .revoke_session(req::revoke(&created.token))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_revoked, "revoke is idempotent");
    assert_eq!(again.id, s.id);
    let by_id = l
        .revoke_session(RevokeSessionRequest {
            session: req::by_id(&s.id),
            reason: "other".into(),
            request_id: rid(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(by_id.already_revoked);
    let events = collect_revocations(&mut watch, &[&s.id]).await;
    let ev = &events[0];
    assert_eq!(
        (
            ev.session_id.as_str(),
            ev.user_id.as_str(),
            ev.reason.as_str()
        ),
        (s.id.as_str(), "alice", "logout")
    );
    assert!(ev.index > 0 && ev.revoked_at_ms >= s.created_at_ms);

    // Every operation with either token now answers REVOKED with the first reason.
    for token in [&rot.token, &created.token] {
        expect_revoked(l.get_session(req::get(token)).await, "logout");
        expect_revoked(f.get_session(req::get(token)).await, "logout");
        expect_revoked(l.rotate_token(req::rotate(token)).await, "logout");
        expect_revoked(
            f.update_session(req::update(token, 0, b"z")).await,
            "logout",
        );
        expect_revoked(l.touch_session(req::touch(token)).await, "logout");
    }
    expect_revoked(
        l.update_session(UpdateSessionRequest {
            session: req::by_id(&s.id),
            data: Some(b"z".to_vec()),
            request_id: rid(),
            ..Default::default()
        })
        .await,
        "logout",
    );
    let t = rot.token.clone();
    wait_for(
        Duration::from_secs(5),
        "stale REVOKED on a follower",
        || {
            let mut f = f.clone();
            let t = t.clone();
            async move {
                let e = f.get_session(req::get_stale(&t)).await.err()?;
                (code(&e) == ErrorCode::Revoked).then_some(())
            }
        },
    )
    .await;

    // Revoke everywhere but here.
    let third = l
        .create_session(req::create("alice", b"3"))
        .await
        .unwrap()
        .into_inner();
    let third_id = third.session.as_ref().unwrap().id.clone();
    let second_id = second.session.as_ref().unwrap().id.clone();
    let everywhere = RevokeUserSessionsRequest {
        user_id: "alice".into(),
        except_id: third_id.clone(),
        reason: "password changed".into(),
        request_id: rid(),
    };
    let all = f
        .revoke_user_sessions(everywhere.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.revoked_ids, vec![second_id.clone()]);
    assert!(!all.replayed);
    let replay = l
        .revoke_user_sessions(everywhere)
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.revoked_ids, all.revoked_ids);
    l.get_session(req::get(&third.token)).await.unwrap();
    expect_revoked(
        l.get_session(req::get(&second.token)).await,
        "password changed",
    );
    let left = l
        .list_user_sessions(req::list("alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        left.sessions.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&third_id]
    );
    // The other user was untouched.
    assert_eq!(
        l.list_user_sessions(req::list("alicia"))
            .await
            .unwrap()
            .into_inner()
            .sessions
            .len(),
        1
    );

    // A watcher that starts from index 1 replays the past revocations, in log order.
    let mut replayed = f
        .watch_revocations(WatchRevocationsRequest { from_index: 1 })
        .await
        .unwrap()
        .into_inner();
    let past = collect_revocations(&mut replayed, &[&s.id, &second_id]).await;
    let logout = past.iter().find(|e| e.session_id == s.id).unwrap();
    let pw = past.iter().find(|e| e.session_id == second_id).unwrap();
    assert_eq!(logout.reason, "logout");
    assert_eq!(pw.reason, "password changed");
    assert!(logout.index < pw.index);
    assert!(
        past.windows(2).all(|w| w[0].index <= w[1].index),
        "events in log order: {past:?}"
    );
    // And the live watcher saw the revoke-user too.
    let live = collect_revocations(&mut watch, &[&second_id]).await;
    assert!(live.iter().any(|e| e.reason == "password changed"));
    assert!(
        !live.iter().any(|e| e.session_id == s.id),
        "an idempotent revoke is no new event: {live:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_and_unknown_input_is_refused_without_a_write() {
    let c = TestCluster::builder(3)
        .flags(&["--max-data-bytes", "1024"])
        .start()
        .await;
    let leader = c.leader().await;
    let mut l = c.client(leader).await;
    let mut f = c.client(c.follower().await).await;
    let created = l
        .create_session(req::create("mallory", b"kept"))
        .await
        .unwrap()
        .into_inner();
    let rot = l
        .rotate_token(req::rotate(&created.token))
        .await
        .unwrap()
        .into_inner();
    let v = rot.session.as_ref().unwrap().version;
    let mut writes = NoWrites {
        c: &c,
        leader,
        offenders: Vec::new(),
    };
    let t = rot.token.clone();
    writes
        .check(
            "update with 2048 bytes of data",
            ErrorCode::InvalidArgument,
            l.update_session(req::update(&t, 0, &[0; 2048])),
        )
        .await;
    writes
        .check(
            "update with 1025 bytes of data (via a follower)",
            ErrorCode::InvalidArgument,
            f.update_session(req::update(&t, 0, &[0; 1025])),
        )
        .await;
    writes
        .check(
            "create with 2048 bytes of data",
            ErrorCode::InvalidArgument,
            l.create_session(req::create("alice", &[0; 2048])),
        )
        .await;
    for bad in [
        String::new(),
        "sdt1_short".to_string(),
        format!("sdt2_{}", "A".repeat(43)),
        format!("sdt1_{}", "!".repeat(43)),
        format!("sdt1_{}", "A".repeat(44)),
    ] {
        writes
            .check(
                &format!("get of malformed token {bad:?}"),
                ErrorCode::InvalidArgument,
                l.get_session(req::get(&bad)),
            )
            .await;
        writes
            .check(
                &format!("rotation of malformed token {bad:?}"),
                ErrorCode::InvalidArgument,
                f.rotate_token(req::rotate(&bad)),
            )
            .await;
    }
    for len in [0usize, 3, 15, 17] {
        let mut bad_rid = req::create("bob", b"");
        bad_rid.request_id = vec![1; len];
        writes
            .check(
                &format!("create with a {len}-byte request_id"),
                ErrorCode::InvalidArgument,
                f.create_session(bad_rid),
            )
            .await;
        let mut bad_rot = req::rotate(&t);
        bad_rot.request_id = vec![1; len];
        writes
            .check(
                &format!("rotation with a {len}-byte request_id"),
                ErrorCode::InvalidArgument,
                l.rotate_token(bad_rot),
            )
            .await;
    }
    writes
        .check(
            "create with an empty user_id",
            ErrorCode::InvalidArgument,
            l.create_session(req::create("", b"")),
        )
        .await;
    writes
        .check(
            "update of a malformed session id",
            ErrorCode::InvalidArgument,
            l.update_session(UpdateSessionRequest {
                session: req::by_id("not-an-id"),
                request_id: rid(),
                ..Default::default()
            }),
        )
        .await;
    // Unknown but well-formed: NOT_FOUND, also without a write.
    let unknown = format!("sdt1_{}", "A".repeat(43));
    writes
        .check(
            "get of an unknown token",
            ErrorCode::NotFound,
            l.get_session(req::get(&unknown)),
        )
        .await;
    writes
        .check(
            "stale get of an unknown token",
            ErrorCode::NotFound,
            f.get_session(req::get_stale(&unknown)),
        )
        .await;
    writes
        .check(
            "touch of an unknown token",
            ErrorCode::NotFound,
            l.touch_session(req::touch(&unknown)),
        )
        .await;
    writes
        .check(
            "rotation of an unknown token",
            ErrorCode::NotFound,
            l.rotate_token(req::rotate(&unknown)),
        )
        .await;
    writes
        .check(
            "update of an unknown token",
            ErrorCode::NotFound,
            l.update_session(req::update(&unknown, 0, b"")),
        )
        .await;
    let after = l
        .get_session(req::get(&rot.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        (after.data.as_slice(), after.version),
        (&b"kept"[..], v),
        "refused requests changed nothing"
    );
    assert!(
        writes.offenders.is_empty(),
        "refused requests were written to the log (docs/semantics.md §9: unknown / malformed input is answered \
         without a write): {:#?}",
        writes.offenders
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn touch_slides_the_idle_deadline() {
    let c = TestCluster::start3().await;
    let mut l = c.leader_client().await;
    let mut f = c.client(c.follower().await).await;
    // idle 10 s: the touch interval is 1 s.
    let created = l
        .create_session(req::create_idle("ivan", 10_000))
        .await
        .unwrap()
        .into_inner();
    let s0 = created.session.unwrap();
    assert_eq!(s0.idle_timeout_ms, 10_000);
    assert_eq!(s0.expires_at_ms, s0.last_active_at_ms + 10_000);
    // Within the touch interval nothing is written.
    let t0 = f
        .touch_session(req::touch(&created.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        (t0.version, t0.last_active_at_ms),
        (s0.version, s0.last_active_at_ms)
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let t1 = f
        .touch_session(req::touch(&created.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert!(
        t1.last_active_at_ms >= s0.last_active_at_ms + 1000,
        "touch after the interval slides last activity: {s0:?} -> {t1:?}"
    );
    assert_eq!(t1.expires_at_ms, t1.last_active_at_ms + 10_000);
    // The write is durable: a linearizable get sees it.
    let g = l
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(g.last_active_at_ms, t1.last_active_at_ms);
    // GetSession with touch = true slides it too.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let g2 = l
        .get_session(GetSessionRequest {
            token: created.token.clone(),
            consistency: Consistency::Linearizable as i32,
            touch: true,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert!(g2.last_active_at_ms >= t1.last_active_at_ms + 1000);
    let g3 = l
        .get_session(req::get(&created.token))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(g3.last_active_at_ms, g2.last_active_at_ms);
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_token_revokes_the_session_or_is_rejected() {
    let c = TestCluster::builder(3)
        .flags(&[
            "--grace-window-ms",
            "1000",
            "--rotation-min-interval-ms",
            "1000",
        ])
        .start()
        .await;
    let mut l = c.leader_client().await;
    let mut f = c.client(c.follower().await).await;
    let fresh = l
        .create_session(req::create("carol", b""))
        .await
        .unwrap()
        .into_inner();
    let next = f
        .rotate_token(req::rotate(&fresh.token))
        .await
        .unwrap()
        .into_inner();
    assert!(next.rotated);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // After the grace window the old token is a replay; the session dies.
    expect_err(
        l.get_session(req::get(&fresh.token)).await,
        ErrorCode::TokenReused,
    );
    expect_revoked(l.get_session(req::get(&next.token)).await, "reuse_detected");
    expect_revoked(
        f.rotate_token(req::rotate(&next.token)).await,
        "reuse_detected",
    );
    // Rotation after the minimum interval makes a new generation; two rotations later the
    // first token is older than "previous" and reused at once.
    let s = l
        .create_session(req::create("carol", b""))
        .await
        .unwrap()
        .into_inner();
    let g1 = l
        .rotate_token(req::rotate(&s.token))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let g2 = l
        .rotate_token(req::rotate(&g1.token))
        .await
        .unwrap()
        .into_inner();
    assert!(g2.rotated && g2.token != g1.token);
    assert_eq!(g2.session.unwrap().generation, 2);
    expect_err(
        f.rotate_token(req::rotate(&s.token)).await,
        ErrorCode::TokenReused,
    );
    expect_revoked(l.get_session(req::get(&g2.token)).await, "reuse_detected");
    drop(c);

    // Policy `reject`: the replayed token is refused, the session lives on.
    let c = TestCluster::builder(3)
        .flags(&[
            "--grace-window-ms",
            "1000",
            "--rotation-min-interval-ms",
            "1000",
            "--reuse-policy",
            "reject",
        ])
        .start()
        .await;
    let mut l = c.leader_client().await;
    let s = l
        .create_session(req::create("carol", b""))
        .await
        .unwrap()
        .into_inner();
    let next = l
        .rotate_token(req::rotate(&s.token))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect_err(
        l.get_session(req::get(&s.token)).await,
        ErrorCode::TokenReused,
    );
    expect_err(
        l.rotate_token(req::rotate(&s.token)).await,
        ErrorCode::TokenReused,
    );
    let live = l
        .get_session(req::get(&next.token))
        .await
        .unwrap()
        .into_inner();
    assert!(!live.superseded);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_cap_evicts_or_refuses() {
    let c = TestCluster::builder(3)
        .flags(&["--max-sessions-per-user", "3"])
        .start()
        .await;
    let mut l = c.leader_client().await;
    let mut f = c.client(c.follower().await).await;
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(
            f.create_session(req::create("dave", &[i]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let fourth = l
        .create_session(req::create("dave", b"4"))
        .await
        .unwrap()
        .into_inner();
    expect_revoked(l.get_session(req::get(&made[0].token)).await, "evicted");
    l.get_session(req::get(&made[1].token)).await.unwrap();
    l.get_session(req::get(&made[2].token)).await.unwrap();
    l.get_session(req::get(&fourth.token)).await.unwrap();
    let listed: BTreeSet<_> = l
        .list_user_sessions(req::list("dave"))
        .await
        .unwrap()
        .into_inner()
        .sessions
        .into_iter()
        .map(|s| s.id)
        .collect();
    let want: BTreeSet<_> = [&made[1], &made[2], &fourth]
        .iter()
        .map(|r| r.session.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(listed, want, "the oldest was evicted, three remain");
    // Another user is not affected by dave's cap.
    for _ in 0..3 {
        l.create_session(req::create("dave2", b"")).await.unwrap();
    }
    drop(c);

    let c = TestCluster::builder(3)
        .flags(&["--max-sessions-per-user", "2", "--cap-policy", "refuse"])
        .start()
        .await;
    let mut l = c.leader_client().await;
    let mut kept = Vec::new();
    for _ in 0..2 {
        kept.push(
            l.create_session(req::create("erin", b""))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    expect_err(
        l.create_session(req::create("erin", b"")).await,
        ErrorCode::ResourceExhausted,
    );
    for k in &kept {
        l.get_session(req::get(&k.token)).await.unwrap();
    }
    assert_eq!(
        l.list_user_sessions(req::list("erin"))
            .await
            .unwrap()
            .into_inner()
            .sessions
            .len(),
        2
    );
    // After a logout there is room again.
    l.revoke_session(req::revoke(&kept[0].token)).await.unwrap();
    l.create_session(req::create("erin", b"")).await.unwrap();
}

/// One log entry can hold more revocations than the feed reads per page (a user's whole cap
/// revoked at once): a watcher still gets every one of them, and what comes after.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_gets_an_entry_larger_than_a_page_and_what_follows() {
    const SESSIONS: usize = 1_100;
    let c = TestCluster::builder(3)
        .flags(&["--max-sessions-per-user", "2000"])
        .start()
        .await;
    let client = c.leader_client().await;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for _ in (t..SESSIONS).step_by(16) {
                    client
                        .create_session(CreateSessionRequest {
                            user_id: "big".into(),
                            request_id: rid(),
                            ..Default::default()
                        })
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let later = client
        .clone()
        .create_session(CreateSessionRequest {
            user_id: "later".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .id;
    let mut stream = client
        .clone()
        .watch_revocations(WatchRevocationsRequest { from_index: 0 })
        .await
        .unwrap()
        .into_inner();
    let revoked = client
        .clone()
        .revoke_user_sessions(RevokeUserSessionsRequest {
            user_id: "big".into(),
            reason: "everywhere".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revoked_ids;
    assert_eq!(revoked.len(), SESSIONS);
    client
        .clone()
        .revoke_session(RevokeSessionRequest {
            session: req::by_id(&later),
            reason: "after".into(),
            request_id: rid(),
        })
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains(&later) {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "watcher stalled after {} of {} events",
                    seen.len(),
                    SESSIONS + 1
                )
            })
            .expect("stream open")
            .expect("an event");
        assert!(seen.insert(ev.session_id), "an event was sent twice");
    }
    assert_eq!(seen.len(), SESSIONS + 1);
    assert!(revoked.iter().all(|id| seen.contains(id)));
}
