//! A node added after the log was purged catches up by snapshot.

use sessiond_proto::v1::*;
use sessiond_tests::{req, wait_for, TestCluster};
use std::time::Duration;

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
            voters: vec![1, 2, 3, id],
            retain: false,
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
    for t in [&tokens[0], &tokens[75], &tokens[149]] {
        let t = t.clone();
        wait_for(
            Duration::from_secs(10),
            "stale read on the new member",
            || {
                let mut fresh = fresh.clone();
                let t = t.clone();
                async move { fresh.get_session(req::get_stale(&t)).await.ok() }
            },
        )
        .await;
    }
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
