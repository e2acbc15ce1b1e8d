//! Replication of large entries: a follower that missed many large sessions catches up (log
//! entries and peer messages are bounded in bytes, so no AppendEntries exceeds what a peer
//! accepts).

use sessiond_tests::{req, wait_for, TestCluster};
use std::time::Duration;

const WRITERS: usize = 48;
const PER_WRITER: usize = 30;
const DATA_BYTES: usize = 60 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_missed_large_sessions_catches_up() {
    let mut c = TestCluster::start3().await;
    let leader = c.leader_client().await;
    let follower = c.follower().await;
    c.kill(follower);
    // ~84 MB of sessions while the follower is down, from many writers at once, so that
    // batches of commands are large.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut l = leader.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let data = vec![(w + i) as u8; DATA_BYTES];
                l.create_session(req::create(&format!("big-{w}-{i}"), &data))
                    .await
                    .expect("create");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let leader_idx = c.leader().await;
    let target = c
        .status(leader_idx)
        .await
        .expect("leader status")
        .applied_index;
    c.restart(follower);
    let caught_up = wait_for(
        Duration::from_secs(90),
        "the follower to apply everything written while it was down",
        || {
            let c = &c;
            async move {
                c.status(follower)
                    .await
                    .filter(|s| s.applied_index >= target)
            }
        },
    )
    .await;
    assert!(caught_up.applied_index >= target);
    // And the cluster still commits.
    let mut l = c.leader_client().await;
    l.create_session(req::create("after", b"x"))
        .await
        .expect("a write after the catch-up");
}
