//! Storage faults at exact persistence points, on real in-process nodes with their own RocksDB
//! directories (build with `--features failpoints`): a failed fsync stops the node — it
//! acknowledges nothing after it — and loses no acknowledged write; a crash between saving a
//! received snapshot and installing it is finished on restart.

mod common;

use sessiond::store::Point;
use sessiond_chaos::browser::{tab_client, BrowserOptions};
use sessiond_chaos::cluster::{Cluster, NodeId, NodeSpec};
use sessiond_chaos::history::{op, Clock, Outcome};
use sessiond_chaos::nemesis::{self, statuses, Fault, Schedule};
use sessiond_chaos::run::{inproc_schedule, node_flags, Layer, RunOptions};
use sessiond_client::{Client, Consistency, NewSession, StatusResponse};
use sessiond_proto::v1::Role;
use std::time::{Duration, Instant};

async fn status(spec: &NodeSpec) -> Option<StatusResponse> {
    statuses(std::slice::from_ref(spec))
        .await
        .into_iter()
        .next()
}

/// Poll `spec`'s status until `done` holds (or `within` passes); the last status seen.
async fn until(
    spec: &NodeSpec,
    within: Duration,
    done: impl Fn(&StatusResponse) -> bool,
) -> Option<StatusResponse> {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = status(spec).await;
        if last.as_ref().is_some_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

fn spec(nodes: &[NodeSpec], id: NodeId) -> NodeSpec {
    nodes.iter().find(|n| n.id == id).cloned().expect("node")
}

fn client(nodes: &[NodeSpec]) -> Client {
    let eps: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    tab_client(&eps, 0, false, &BrowserOptions::default()).expect("client")
}

fn pinned(node: &NodeSpec) -> Client {
    tab_client(
        std::slice::from_ref(&node.endpoint),
        0,
        true,
        &BrowserOptions::default(),
    )
    .expect("client")
}

/// Every token validates on `node` with a STALE read (served from its own state).
async fn all_valid_on(node: &NodeSpec, tokens: &[String]) {
    let c = pinned(node);
    for (i, t) in tokens.iter().enumerate() {
        let r = c.get_session(t, Consistency::Stale, false).await;
        assert!(
            r.is_ok(),
            "acknowledged session {i} on node {}: {r:?}",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_leader_and_loses_no_acknowledged_write() {
    let (mut cluster, _dir) = common::inproc(3, node_flags()).await;
    let nodes = cluster.nodes();
    let leader = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .expect("a leader");
    let c = client(&nodes);
    let mut acked = Vec::new();
    for _ in 0..20 {
        let created = c.create_session(NewSession::for_user("fsync")).await;
        acked.push(created.expect("create before the fault").token);
    }

    cluster
        .disk_fault(leader, Point::LogSync, Some("1*return(error)"))
        .await
        .expect("arm the failpoint");
    // Writes keep coming: the leader's next sync fails, and a new leader takes over.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            let until = Instant::now() + Duration::from_secs(20);
            for _ in 0..400 {
                if Instant::now() > until || ok.len() >= 20 {
                    break;
                }
                match c.create_session(NewSession::for_user("fsync")).await {
                    Ok(created) => ok.push(created.token),
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let old = spec(&nodes, leader);
    let stopped = until(&old, Duration::from_secs(10), |s| {
        s.role == Role::Shutdown as i32
    })
    .await
    .expect("the failed node still answers Status");
    assert_eq!(stopped.role, Role::Shutdown as i32, "{stopped:?}");
    // Nothing is appended, applied or acknowledged by it any more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = status(&old).await.expect("status");
    assert_eq!(
        (later.last_log_index, later.applied_index, later.role),
        (
            stopped.last_log_index,
            stopped.applied_index,
            Role::Shutdown as i32
        )
    );

    // `sessiond serve` exits once its Raft has stopped (see `Node::stopped`); an in-process
    // node shares the harness's process, so it is stopped here instead.
    cluster.kill(leader).await.expect("kill");
    let (after, failed) = writer.await.expect("writer");
    assert!(
        !after.is_empty(),
        "no write was acknowledged after the failure ({failed} failed)"
    );
    acked.extend(after);
    let others: Vec<NodeSpec> = nodes.iter().filter(|n| n.id != leader).cloned().collect();
    let new_leader = nemesis::wait_for_leader(&others, Duration::from_secs(30))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    for (i, t) in acked.iter().enumerate() {
        let r = c.get_session(t, Consistency::Linearizable, false).await;
        assert!(r.is_ok(), "acknowledged session {i} lost: {r:?}");
    }

    // Restarted on what its disk holds, the node catches up and has every write.
    cluster.disk_fault(leader, Point::LogSync, None).await.ok();
    cluster.restart(leader).await.expect("restart");
    let target = status(&spec(&nodes, new_leader))
        .await
        .expect("leader status")
        .applied_index;
    let caught = until(&old, Duration::from_secs(30), |s| {
        s.applied_index >= target && s.role == Role::Follower as i32
    })
    .await
    .expect("status after restart");
    assert!(caught.applied_index >= target, "{caught:?}");
    all_valid_on(&old, &acked).await;
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_snapshot_install_is_finished_on_restart() {
    let (mut cluster, _dir) = common::inproc(3, node_flags()).await;
    let nodes = cluster.nodes();
    let leader = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .expect("a leader");
    let follower = nodes
        .iter()
        .map(|n| n.id)
        .find(|i| *i != leader)
        .expect("a follower");
    let f = spec(&nodes, follower);
    let c = client(&nodes);
    let mut acked = Vec::new();
    for _ in 0..20 {
        let created = c.create_session(NewSession::for_user("install")).await;
        acked.push(created.expect("create before the cut").token);
    }
    let behind = until(&f, Duration::from_secs(10), |s| s.applied_index > 0)
        .await
        .expect("follower status")
        .last_log_index;

    let rest: Vec<NodeId> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|i| *i != follower)
        .collect();
    cluster
        .partition(std::slice::from_ref(&rest))
        .await
        .expect("cut the follower off");
    cluster
        .disk_fault(follower, Point::SnapshotInstall, Some("1*return(crash)"))
        .await
        .expect("arm the failpoint");
    // Write until neither connected node's log reaches back to the follower's last entry: the
    // cut-off follower's rising term can unseat the leader on heal, and whichever of the two
    // leads then must send a snapshot, not entries.
    let mut purged = vec![0; rest.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while purged.iter().any(|p| *p <= behind) && Instant::now() < deadline {
        for _ in 0..100 {
            let created = c.create_session(NewSession::for_user("install")).await;
            acked.push(created.expect("create while the follower is cut off").token);
        }
        for (id, p) in rest.iter().zip(purged.iter_mut()) {
            *p = nemesis::trigger_snapshot(&spec(&nodes, *id))
                .await
                .unwrap_or(*p);
        }
    }
    assert!(
        purged.iter().all(|p| *p > behind),
        "nodes {rest:?} purged to {purged:?}, follower at {behind}"
    );
    let target = status(&spec(&nodes, leader))
        .await
        .expect("leader status")
        .applied_index;
    cluster.heal().await.expect("heal");

    // The install crashes between the snapshot file and the state.
    let crashed = until(&f, Duration::from_secs(30), |s| {
        s.role == Role::Shutdown as i32
    })
    .await
    .expect("follower status");
    assert_eq!(crashed.role, Role::Shutdown as i32, "{crashed:?}");
    assert!(crashed.applied_index <= behind, "{crashed:?}");

    cluster
        .disk_fault(follower, Point::SnapshotInstall, None)
        .await
        .ok();
    cluster.kill(follower).await.expect("kill");
    cluster.restart(follower).await.expect("restart");
    let caught = until(&f, Duration::from_secs(30), |s| {
        s.applied_index >= target && s.role == Role::Follower as i32
    })
    .await
    .expect("status after restart");
    assert!(caught.applied_index >= target, "{caught:?}");
    all_valid_on(&f, &acked).await;
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_of_disk_faults_and_a_snapshot_catch_up_checks_out() {
    let out = tempfile::tempdir().expect("temp dir");
    let opts = RunOptions {
        layer: Layer::Inproc,
        nodes: 3,
        schedules: 1,
        seconds: 5.0,
        seed: 0,
        out: out.path().to_path_buf(),
        browsers: BrowserOptions::default(),
        image: sessiond_chaos::run::DEFAULT_IMAGE.into(),
        wrong_clock: false,
    };
    let schedule = Schedule {
        seed: 91,
        steps: vec![
            (Duration::from_millis(400), Fault::DiskFault),
            (Duration::from_millis(1200), Fault::SnapshotCatchUp),
            (Duration::from_millis(2400), Fault::DiskFault),
            (Duration::from_millis(3400), Fault::DiskFault),
            (Duration::from_millis(4200), Fault::DiskFault),
        ],
    };
    let r = inproc_schedule(&opts, &schedule)
        .await
        .expect("schedule runs");
    let nemesis: Vec<String> = r
        .events
        .iter()
        .filter(|e| e.op == op::NEMESIS)
        .filter_map(|e| e.args.nemesis.clone())
        .collect();
    assert!(
        nemesis.iter().filter(|n| n.contains("disk")).count() >= 4,
        "{nemesis:?}"
    );
    assert!(
        nemesis.iter().any(|n| n.contains("blackhole")),
        "{nemesis:?}"
    );
    common::assert_healthy(&r);
}

/// A node whose Raft stopped by itself (here a failed fsync on a follower) is found and
/// restarted by the harness, as a supervisor restarts `sessiond serve` when it exits, and
/// catches up; a cluster with no stopped node is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_stopped_is_restarted_as_a_supervisor_would() {
    let (mut cluster, _dir) = common::inproc(3, node_flags()).await;
    let nodes = cluster.nodes();
    let leader = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .expect("a leader");
    let mut nem = nemesis::Nemesis::new(7, Clock::start());
    assert!(!nem.restart_stopped(&mut cluster).await, "nothing stopped");
    assert!(nem.events.is_empty());

    let follower = nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower")
        .clone();
    cluster
        .disk_fault(follower.id, Point::LogSync, Some("1*return(error)"))
        .await
        .expect("arm the failpoint");
    let c = client(&nodes);
    let mut tokens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stopped = false;
    while !stopped && Instant::now() < deadline {
        tokens.push(
            c.create_session(NewSession::for_user("supervised"))
                .await
                .expect("the majority goes on")
                .token,
        );
        stopped = status(&follower)
            .await
            .is_some_and(|s| s.role == Role::Shutdown as i32);
    }
    assert!(stopped, "the follower's failed fsync stopped its Raft");
    cluster
        .disk_fault(follower.id, Point::LogSync, None)
        .await
        .expect("disarm");

    let lead = spec(&nodes, leader);
    let target = status(&lead).await.expect("leader status").applied_index;
    assert!(nem.restart_stopped(&mut cluster).await, "the stopped node");
    let logged: Vec<&str> = nem
        .events
        .iter()
        .filter_map(|e| e.args.nemesis.as_deref())
        .collect();
    assert_eq!(
        logged,
        [format!(
            "supervisor restart of {} (its Raft had stopped)",
            follower.id
        )
        .as_str()]
    );
    assert!(
        nem.events.iter().all(|e| e.result == Outcome::Ok),
        "{:?}",
        nem.events
    );
    let back = until(&follower, Duration::from_secs(30), |s| {
        s.role == Role::Follower as i32 && s.applied_index >= target
    })
    .await
    .expect("status");
    assert_eq!(back.role, Role::Follower as i32, "{back:?}");
    assert!(back.applied_index >= target, "caught up: {back:?}");
    all_valid_on(&follower, &tokens).await;
    assert!(!nem.restart_stopped(&mut cluster).await, "running again");
    // Close every RocksDB before the test process exits (it aborts under open databases).
    cluster.shutdown().await.expect("shutdown");
}
