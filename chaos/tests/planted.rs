//! Proof that the harness can fail: built with the node's `planted-stale-reads` bug
//! ("linearizable" reads served from local state without the leadership check), the harness
//! must report a violation.
//!
//! Run with `cargo nextest run -p sessiond-chaos --features planted-stale-reads --test planted`.

use sessiond_chaos::check::{self, Budget, ViolationKind};
use sessiond_chaos::cluster::Cluster;
use sessiond_chaos::inproc::{InprocCluster, InprocOptions};
use sessiond_chaos::probe;
use sessiond_chaos::run::{node_flags, run_info};

/// The scripted scenario: a tab that only knows the deposed leader reads after the majority
/// saved and rotated. The planted node answers from its frozen state; the checker rejects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_serving_reads_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = InprocCluster::start(InprocOptions {
        nodes: 3,
        flags: node_flags(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .expect("cluster starts");
    let r = probe::stale_read(&mut cluster).await.expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert!(
        r.stale_read_served,
        "the planted node refused the read: the bug is not in this build"
    );
    let report = check::check(&r.events, &run_info(0), &Budget::default());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::NotLinearizable),
        "the stale read went unnoticed: {:?}\n{:#?}",
        report.by_kind(),
        r.events
    );
}
