//! The container layer end to end: real `sessiond` processes in containers of the locally
//! built image (`deploy/build-image.sh`; `scripts/test.sh` builds it before the tests).
//! Needs a Docker engine and root (iptables inside the containers' namespaces).

mod common;

use sessiond_chaos::browser::BrowserOptions;
use sessiond_chaos::check::{self, Budget};
use sessiond_chaos::cluster::Cluster;
use sessiond_chaos::docker::{preflight, DockerCluster, DockerOptions};
use sessiond_chaos::history::{op, Outcome};
use sessiond_chaos::nemesis::{Fault, Schedule};
use sessiond_chaos::run::{
    docker_schedule, node_flags, run_info, Layer, RunOptions, DEFAULT_IMAGE,
};
use std::time::Duration;

/// A partition made of iptables rules must depose the leader: the majority elects another,
/// and the deposed leader refuses linearizable reads (a timeout, never an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_partition_deposes_the_leader_and_it_stops_serving() {
    preflight(DEFAULT_IMAGE).await.expect("docker layer usable");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = DockerCluster::start(DockerOptions {
        nodes: 3,
        flags: node_flags(),
        image: DEFAULT_IMAGE.into(),
        dir: dir.path().to_path_buf(),
        name: format!("sessiond-test-probe-{}", std::process::id()),
    })
    .await
    .expect("containers start");
    let r = sessiond_chaos::probe::stale_read(&mut cluster).await;
    cluster.shutdown().await.expect("containers removed");
    let r = r.expect("probe runs");
    assert!(!r.stale_read_served, "a deposed leader served a read");
    let report = check::check(&r.events, &run_info(0), &Budget::default());
    assert!(report.passed(), "{:?}", report.violations);
}

/// Every fault kind, pause included, against five containers: each nemesis event succeeds,
/// the load goes on, the final reads answer and the history checks out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_runs_on_containers() {
    preflight(DEFAULT_IMAGE).await.expect("docker layer usable");
    let out = tempfile::tempdir().expect("temp dir");
    let opts = RunOptions {
        layer: Layer::Docker,
        nodes: 5,
        schedules: 1,
        seconds: 6.0,
        seed: 0,
        out: out.path().to_path_buf(),
        browsers: BrowserOptions::default(),
        image: DEFAULT_IMAGE.into(),
        wrong_clock: false,
    };
    let schedule = Schedule {
        seed: 91,
        steps: vec![
            (Duration::from_millis(300), Fault::IsolateLeader),
            (Duration::from_millis(1200), Fault::Heal),
            (Duration::from_millis(1400), Fault::KillRestart),
            (Duration::from_millis(2600), Fault::Pause),
            (Duration::from_millis(3600), Fault::Bridge),
            (Duration::from_millis(4000), Fault::OneWay),
            (Duration::from_millis(4300), Fault::ReplaceMember),
            (Duration::from_millis(5200), Fault::Partition),
        ],
    };
    let r = docker_schedule(&opts, &schedule)
        .await
        .expect("schedule runs");
    let nemesis: Vec<(String, Outcome, Option<String>)> = r
        .events
        .iter()
        .filter(|e| e.op == op::NEMESIS)
        .map(|e| {
            (
                e.args.nemesis.clone().unwrap_or_default(),
                e.result,
                e.value.error.clone(),
            )
        })
        .collect();
    for kind in [
        "isolate leader",
        "kill",
        "restart",
        "pause",
        "resume",
        "bridge",
        "cut one way",
        "replace member",
        "partition",
        "heal all",
    ] {
        assert!(
            nemesis.iter().any(|(n, _, _)| n.starts_with(kind)),
            "no {kind:?} in {nemesis:?}"
        );
    }
    let failed: Vec<_> = nemesis
        .iter()
        .filter(|(_, o, _)| *o != Outcome::Ok)
        .collect();
    assert!(failed.is_empty(), "nemesis events failed: {failed:?}");
    common::assert_healthy(&r);
}
