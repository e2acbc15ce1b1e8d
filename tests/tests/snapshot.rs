//! A node added after the log was purged catches up by snapshot.

use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::*;
use sessiond_tests::{
    code, expect_err, expect_revoked, req, until_stale_reads_find, wait_for, TestCluster,
};
use std::time::Duration;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread")]
async fn new_member_catches_up_by_snapshot_after_purge() {
    let mut c = TestCluster::builder(3)
        .flags(&["--snapshot-logs", "50", "--keep-logs", "10"])
        .start()
        .await;
    let leader = c.leader().await;
    let mut l = c.client(leader).await;
    let mut tokens = Vec::new();
    for i in 0..150u32 {
        tokens.push(
            l.create_session(req::create("snap", &i.to_be_bytes()))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    // 150 applied entries with --snapshot-logs 50: snapshots were built and the log purged
    // without being asked.
    let auto = wait_for(
        Duration::from_secs(20),
        "an automatic snapshot and purge on the leader",
        || {
            let c = &c;
            async move {
                c.status(leader)
                    .await
                    .filter(|s| s.snapshot_index > 0 && s.purged_index > 0)
            }
        },
    )
    .await;
    assert!(
        auto.purged_index <= auto.snapshot_index,
        "purged only what a snapshot covers: {auto:?}"
    );
    // An explicit snapshot covers everything applied so far.
    let mut admin = c.cluster_client(leader).await;
    let applied = c.status(leader).await.unwrap().applied_index;
    let snap = admin
        .trigger_snapshot(TriggerSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        snap.snapshot_index >= applied,
        "{snap:?} vs applied {applied}"
    );

    let new = c.add_node();
    wait_for(Duration::from_secs(10), "the new node to serve", || {
        let c = &c;
        async move { c.status(new).await }
    })
    .await;
    let n = &c.nodes[new];
    let (id, client_addr, peer_addr) = (n.id, n.client_addr.clone(), n.peer_addr.clone());
    let added = admin
        .add_learner(AddLearnerRequest {
            node_id: id,
            client_addr,
            peer_addr,
            blocking: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        added.members.iter().any(|m| m.id == id && !m.voter),
        "a learner: {added:?}"
    );
    let changed = admin
        .change_membership(ChangeMembershipRequest {
            add_voters: vec![id],
            retain: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        changed.members.iter().filter(|m| m.voter).count(),
        4,
        "{changed:?}"
    );

    let target = c.status(leader).await.unwrap().applied_index;
    let status = wait_for(Duration::from_secs(20), "the new node to catch up", || {
        let c = &c;
        async move { c.status(new).await.filter(|s| s.applied_index >= target) }
    })
    .await;
    assert!(
        status.snapshot_index > 0,
        "the new node was given a snapshot: {status:?}"
    );
    assert!(status.members.iter().filter(|m| m.voter).count() == 4);
    let fresh = c.client(new).await;
    until_stale_reads_find(
        &fresh,
        &[&tokens[0], &tokens[75], &tokens[149]],
        "the new member",
    )
    .await;
    let got = fresh
        .clone()
        .get_session(req::get_stale(&tokens[3]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.session.unwrap().data, 3u32.to_be_bytes());
    let listed = fresh
        .clone()
        .list_user_sessions(ListUserSessionsRequest {
            user_id: "snap".into(),
            consistency: Consistency::Stale as i32,
            // One page holds them all.
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 150, "every session made it over");
    fresh
        .clone()
        .get_session(req::get(&tokens[10]))
        .await
        .unwrap();

    // The new node votes: with one original follower down, 3 of 4 voters (the new one among
    // them) still commit writes.
    let down = (0..3).find(|i| *i != leader).unwrap();
    c.kill(down);
    let mut l = c.client(c.leader().await).await;
    let late = tokio::time::timeout(
        Duration::from_secs(10),
        l.create_session(req::create("snap", b"late")),
    )
    .await
    .expect("a write commits with 3 of 4 voters")
    .unwrap()
    .into_inner();
    let t = late.token.clone();
    wait_for(
        Duration::from_secs(10),
        "the new member to apply a later write",
        || {
            let mut fresh = fresh.clone();
            let t = t.clone();
            async move { fresh.get_session(req::get_stale(&t)).await.ok() }
        },
    )
    .await;
}

/// The user's sessions as a node sees them, full records ordered by id.
async fn sessions_of(
    client: &SessionsClient<Channel>,
    user: &str,
    consistency: Consistency,
) -> Vec<Session> {
    let mut s = client
        .clone()
        .list_user_sessions(ListUserSessionsRequest {
            user_id: user.into(),
            consistency: consistency as i32,
            // One page holds them all.
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("list {user}: {e:?}"))
        .into_inner()
        .sessions;
    s.sort_by(|a, b| a.id.cmp(&b.id));
    s
}

/// A follower that was down while the leader snapshotted and purged past its log is brought
/// up to date by a snapshot that REPLACES its old state: sessions revoked, updated, rotated
/// and swept while it was away read as the leader has them, not as it last knew them. Then
/// the whole cluster restarts from its own snapshots and purged logs and still has it all.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_replaces_a_stale_follower_state_and_survives_restarts() {
    let mut c = TestCluster::builder(3)
        .flags(&["--snapshot-logs", "50", "--keep-logs", "10"])
        .start()
        .await;
    let leader = c.leader().await;
    let away = c.follower().await;
    let mut l = c.client(leader).await;

    // Sessions every node knows before the follower goes away: 20 long ones, 4 short ones.
    let mut pre = Vec::new();
    for i in 0..20u8 {
        pre.push(
            l.create_session(req::create("pre", &[i]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut short = Vec::new();
    for _ in 0..4 {
        short.push(
            l.create_session(req::create_idle("pre", 1500))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let f = c.client(away).await;
    let last = short.last().unwrap().clone();
    wait_for(
        Duration::from_secs(5),
        "replication to the follower",
        || {
            let mut f = f.clone();
            let t = last.clone();
            async move { f.get_session(req::get_stale(&t)).await.ok() }
        },
    )
    .await;
    let away_applied = c.status(away).await.unwrap().applied_index;
    c.kill(away);

    // While it is away: logouts, saves and rotations of sessions it knows, expiry sweeps of
    // the short ones, and enough new writes to snapshot and purge beyond its log.
    for s in &pre[0..5] {
        l.revoke_session(req::revoke(&s.token)).await.unwrap();
    }
    for s in &pre[5..10] {
        let up = l
            .update_session(req::update(&s.token, 1, b"saved while away"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(up.session.unwrap().version, 2);
    }
    let mut rotated = Vec::new();
    for s in &pre[10..15] {
        let r = l
            .rotate_token(req::rotate(&s.token))
            .await
            .unwrap()
            .into_inner();
        assert!(r.rotated);
        rotated.push(r.token);
    }
    let mut post = Vec::new();
    for i in 0..150u32 {
        post.push(
            l.create_session(req::create("post", &i.to_be_bytes()))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    for t in &short {
        let t = t.clone();
        wait_for(
            Duration::from_secs(15),
            "the leader to sweep a short session",
            || {
                let mut l = l.clone();
                let t = t.clone();
                async move {
                    let e = l.get_session(req::get(&t)).await.err()?;
                    (code(&e) == ErrorCode::NotFound).then_some(())
                }
            },
        )
        .await;
    }
    let purged = wait_for(
        Duration::from_secs(20),
        "the leader to purge past the follower's log",
        || {
            let c = &c;
            async move {
                c.status(leader)
                    .await
                    .filter(|s| s.purged_index > away_applied)
            }
        },
    )
    .await
    .purged_index;

    // Back on its old data directory: only a snapshot can bring it up to date.
    c.restart(away);
    let target = c.status(leader).await.unwrap().applied_index;
    let st = wait_for(Duration::from_secs(20), "the follower to catch up", || {
        let c = &c;
        async move { c.status(away).await.filter(|s| s.applied_index >= target) }
    })
    .await;
    assert!(
        st.snapshot_index >= purged,
        "the follower installed a snapshot covering the purged log (purged {purged}): {st:?}"
    );

    let check = |mut n: SessionsClient<Channel>, node: usize, consistency: Consistency| {
        let pre = &pre;
        let rotated = &rotated;
        let short = &short;
        let post = &post;
        async move {
            let get = |t: &str| match consistency {
                Consistency::Stale => req::get_stale(t),
                _ => req::get(t),
            };
            let at = format!("node index {node}, {consistency:?}");
            for s in &pre[0..5] {
                expect_revoked(n.get_session(get(&s.token)).await, "logout");
            }
            for s in &pre[5..10] {
                let got = n
                    .get_session(get(&s.token))
                    .await
                    .unwrap_or_else(|e| panic!("{at}: saved session: {e:?}"))
                    .into_inner()
                    .session
                    .unwrap();
                assert_eq!(
                    (got.version, got.data.as_slice()),
                    (2, &b"saved while away"[..]),
                    "{at}"
                );
            }
            for (s, next) in pre[10..15].iter().zip(rotated) {
                let old = n
                    .get_session(get(&s.token))
                    .await
                    .unwrap_or_else(|e| panic!("{at}: rotated-away token: {e:?}"))
                    .into_inner();
                assert!(old.superseded, "{at}: the old token is the previous one");
                let cur = n.get_session(get(next)).await.unwrap().into_inner();
                assert!(!cur.superseded, "{at}");
                assert_eq!(cur.session.unwrap().generation, 1, "{at}");
            }
            for s in &pre[15..20] {
                let got = n.get_session(get(&s.token)).await.unwrap().into_inner();
                assert_eq!(got.session.unwrap().version, 1, "{at}");
            }
            for t in short {
                expect_err(n.get_session(get(t)).await, ErrorCode::NotFound);
            }
            for t in [&post[0], &post[77], &post[149]] {
                n.get_session(get(t))
                    .await
                    .unwrap_or_else(|e| panic!("{at}: a session made while away: {e:?}"));
            }
        }
    };
    check(c.client(away).await, away, Consistency::Stale).await;
    // Its user index is the leader's, record for record.
    let lf = c.client(leader).await;
    let fl = c.client(away).await;
    for user in ["pre", "post"] {
        let want = sessions_of(&lf, user, Consistency::Linearizable).await;
        let got = sessions_of(&fl, user, Consistency::Stale).await;
        assert_eq!(want.len(), if user == "pre" { 15 } else { 150 });
        assert_eq!(
            got, want,
            "{user}: the follower lists what the leader lists"
        );
    }

    // The whole cluster restarts from its snapshots and purged logs.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_for_leader(Duration::from_secs(30)).await;
    for i in 0..3 {
        check(c.client(i).await, i, Consistency::Linearizable).await;
    }
    let now = c.leader().await;
    let want = sessions_of(&c.client(now).await, "pre", Consistency::Linearizable).await;
    assert_eq!(want.len(), 15, "after the restart");
    for i in 0..3 {
        let applied = c.status(now).await.unwrap().applied_index;
        let n = c.client(i).await;
        wait_for(Duration::from_secs(10), "a replica to apply", || {
            let c = &c;
            async move { c.status(i).await.filter(|s| s.applied_index >= applied) }
        })
        .await;
        assert_eq!(
            sessions_of(&n, "pre", Consistency::Stale).await,
            want,
            "node index {i} after the restart"
        );
    }
    // And it takes writes.
    c.client(away)
        .await
        .create_session(req::create("post", b"after"))
        .await
        .unwrap();
}
