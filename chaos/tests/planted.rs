//! Proof that the harness can fail: built with the node's `planted-stale-reads` bug
//! ("linearizable" reads served from local state without the leadership check), the harness
//! must report a violation.
//!
//! The same build carries the other planted bugs, each caught by its own scripted probe: a
//! follower counted fresh while behind (`planted-lagging-follower`) and the leader's own wall
//! clock used as the stamp (`planted-wall-clock-stamp`). Their counterparts against correct
//! nodes are in `tests/inproc.rs`.
//!
//! Run with `cargo nextest run -p sessiond-chaos --all-features --test planted`.

use sessiond_chaos::check::{self, Budget, ViolationKind};
use sessiond_chaos::cluster::Cluster;
use sessiond_chaos::inproc::{InprocCluster, InprocOptions};
use sessiond_chaos::probe;
use sessiond_chaos::run::{keep_log_flags, node_flags, run_info};

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

/// A build with planted bugs must not serve by accident: without the harness's explicit
/// permission a node refuses to start, naming the bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_with_planted_bugs_refuses_to_start_unless_allowed() {
    assert!(sessiond::PLANTED_BUGS.contains(&"planted-stale-reads"));
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().display().to_string();
    let cli = <sessiond::config::Cli as clap::Parser>::try_parse_from([
        "sessiond",
        "serve",
        "--node-id",
        "1",
        "--insecure",
        "--client-addr",
        "127.0.0.1:1",
        "--peer-addr",
        "127.0.0.1:2",
        "--data-dir",
        data_dir.as_str(),
    ])
    .expect("valid flags");
    let sessiond::config::Command::Serve(args) = cli.command else {
        panic!("not a serve command");
    };
    let cfg = args.resolve().expect("a valid configuration");
    let err = match sessiond::node::Node::start_with(cfg, Default::default()).await {
        Ok(_) => panic!("a node with planted bugs started without permission"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("planted-stale-reads"), "{err}");
    assert!(err.contains(sessiond::ALLOW_PLANTED_BUGS_ENV), "{err}");
}

/// A follower counted fresh while it is behind validates, during its catch-up, a token that
/// was revoked while it was cut off — longer after the revocation than the bound allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serving_stale_reads_while_behind_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = InprocCluster::start(InprocOptions {
        nodes: 3,
        flags: keep_log_flags(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .expect("cluster starts");
    let r = probe::lagging_follower(&mut cluster, 8_000)
        .await
        .expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert!(
        r.stale_valid > 0,
        "the lagging follower never validated the revoked token ({} answers): the bug is \
         not in this build, or the catch-up was too quick to observe",
        r.answered
    );
    let report = check::check(&r.events, &run_info(0), &Budget::default());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::Resurrection),
        "the stale read beyond the bound went unnoticed: {:?}",
        report.by_kind()
    );
}

/// A leader stamping entries with its own clock, a day ahead, expires every session an hour
/// before its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stamping_its_own_wrong_clock_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = InprocCluster::start(InprocOptions {
        nodes: 3,
        flags: node_flags(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .expect("cluster starts");
    let r = probe::leader_clock_ahead(&mut cluster)
        .await
        .expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert!(
        r.expired_early > 0,
        "no session expired: the bug is not in this build"
    );
    let report = check::check(&r.events, &run_info(0), &Budget::default());
    assert!(
        !report.passed(),
        "premature expiry went unnoticed: {:?}",
        report.by_kind()
    );
}
