//! Assertions shared by the end-to-end schedule tests of both layers.

use sessiond_chaos::history::{op, Outcome};
use sessiond_chaos::run::ScheduleResult;

/// A schedule ran for real: more than 50 operations succeeded, a final read answered after
/// the last heal, and the checker passed the history.
pub fn assert_healthy(r: &ScheduleResult) {
    let ok_ops = r
        .events
        .iter()
        .filter(|e| e.op != op::NEMESIS && e.result == Outcome::Ok)
        .count();
    assert!(ok_ops > 50, "only {ok_ops} successful operations");
    assert!(
        r.events
            .iter()
            .any(|e| e.args.final_read && e.result == Outcome::Ok),
        "no final read succeeded"
    );
    assert!(r.report.passed(), "{:#?}", r.report);
}

/// A started in-process cluster of `nodes` with `flags`, and the directory it lives in
/// (dropped after the cluster).
#[allow(dead_code)]
pub async fn inproc(
    nodes: usize,
    flags: Vec<String>,
) -> (sessiond_chaos::inproc::InprocCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster =
        sessiond_chaos::inproc::InprocCluster::start(sessiond_chaos::inproc::InprocOptions {
            nodes,
            flags,
            dir: dir.path().to_path_buf(),
        })
        .await
        .expect("cluster starts");
    (cluster, dir)
}

/// The checker passes a probe's history.
#[allow(dead_code)]
pub fn assert_checks(events: &[sessiond_chaos::history::Event]) {
    use sessiond_chaos::check::{self, Budget};
    let report = check::check(
        events,
        &sessiond_chaos::run::run_info(0),
        &Budget::default(),
    );
    assert!(report.passed(), "{:?}", report.violations);
}
