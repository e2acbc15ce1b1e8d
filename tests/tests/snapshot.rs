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
    for i in 0..150 {
        tokens.push(
            l.create_session(req::create("snap", &[i as u8]))
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let mut admin = c.cluster_client(leader).await;
    admin
        .trigger_snapshot(TriggerSnapshotRequest {})
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "log purge on the leader", || {
        let c = &c;
        async move {
            let s = c.status(leader).await?;
            (s.purged_index > 0 && s.snapshot_index > 0).then_some(())
        }
    })
    .await;

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
    assert!(added.members.iter().any(|m| m.id == id && !m.voter));
    let changed = admin
        .change_membership(ChangeMembershipRequest {
            voters: vec![1, 2, 3, id],
            retain: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.members.iter().filter(|m| m.voter).count(), 4);

    let target = c.status(leader).await.unwrap().applied_index;
    let status = wait_for(Duration::from_secs(20), "the new node to catch up", || {
        let c = &c;
        async move { c.status(new).await.filter(|s| s.applied_index >= target) }
    })
    .await;
    assert!(
        status.snapshot_index > 0 || status.purged_index > 0,
        "the new node was given a snapshot: {status:?}"
    );
    let mut fresh = c.client(new).await;
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
    fresh.get_session(req::get(&tokens[10])).await.unwrap();
}
