//! The in-process layer end to end: a few seeded schedules against 3- and 5-node clusters
//! must run every kind of fault, record a history and pass the checker.

mod common;

use sessiond_chaos::browser::BrowserOptions;
use sessiond_chaos::cluster::Cluster;
use sessiond_chaos::history::{op, Outcome};
use sessiond_chaos::nemesis::{Fault, Schedule};
use sessiond_chaos::probe;
use sessiond_chaos::run::{inproc_schedule, keep_log_flags, node_flags, Layer, RunOptions};
use std::time::Duration;

fn opts(nodes: usize, out: &std::path::Path) -> RunOptions {
    RunOptions {
        layer: Layer::Inproc,
        nodes,
        schedules: 1,
        seconds: 4.0,
        seed: 0,
        out: out.to_path_buf(),
        browsers: BrowserOptions::default(),
        image: sessiond_chaos::run::DEFAULT_IMAGE.into(),
        wrong_clock: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_runs_and_the_history_checks_out() {
    let out = tempfile::tempdir().expect("temp dir");
    let schedule = Schedule {
        seed: 77,
        steps: vec![
            (Duration::from_millis(400), Fault::IsolateLeader),
            (Duration::from_millis(1000), Fault::Heal),
            (Duration::from_millis(1200), Fault::KillRestart),
            (Duration::from_millis(2000), Fault::Bridge),
            (Duration::from_millis(2400), Fault::OneWay),
            (Duration::from_millis(2800), Fault::ReplaceMember),
            (Duration::from_millis(3300), Fault::Partition),
        ],
    };
    let r = inproc_schedule(&opts(5, out.path()), &schedule)
        .await
        .expect("schedule runs");
    let nemesis: Vec<String> = r
        .events
        .iter()
        .filter(|e| e.op == op::NEMESIS)
        .filter_map(|e| e.args.nemesis.clone())
        .collect();
    for kind in [
        "isolate leader",
        "kill",
        "restart",
        "bridge",
        "cut one way",
        "replace member",
        "partition",
        "heal all",
    ] {
        assert!(
            nemesis.iter().any(|n| n.starts_with(kind)),
            "no {kind:?} in {nemesis:?}"
        );
    }
    common::assert_healthy(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_schedules_pass_on_three_nodes() {
    let out = tempfile::tempdir().expect("temp dir");
    for seed in [1u64, 2] {
        let schedule = Schedule::generate(seed, Duration::from_secs(3));
        let r = inproc_schedule(&opts(3, out.path()), &schedule)
            .await
            .expect("schedule runs");
        assert!(r.report.passed(), "seed {seed}: {:#?}", r.report);
    }
}

/// The planted-bug scenario against correct nodes: the deposed leader must not serve the
/// read, and the history must pass (the counterpart of `tests/planted.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_refuses_linearizable_reads() {
    let (mut cluster, _dir) = common::inproc(3, node_flags()).await;
    let r = probe::stale_read(&mut cluster).await.expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert!(!r.stale_read_served, "a deposed leader served a read");
    common::assert_checks(&r.events);
    let final_ok = r
        .events
        .iter()
        .any(|e| e.args.final_read && e.result == Outcome::Ok);
    assert!(final_ok, "the final read did not succeed: {:#?}", r.events);
}

/// The clock probe against correct nodes: a leader whose clock jumps a day ahead expires
/// nothing (the counterpart of the planted wall-clock stamp in `tests/planted.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_a_day_ahead_expires_nothing() {
    let (mut cluster, _dir) = common::inproc(3, node_flags()).await;
    let r = probe::leader_clock_ahead(&mut cluster)
        .await
        .expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert_eq!(r.expired_early, 0, "{:#?}", r.events);
    common::assert_checks(&r.events);
}

/// The lagging-follower probe against correct nodes: a follower catching up serves no STALE
/// read of a session revoked while it was cut off (the counterpart of the planted lagging
/// follower in `tests/planted.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catching_up_follower_serves_no_old_state() {
    let (mut cluster, _dir) = common::inproc(3, keep_log_flags()).await;
    let r = probe::lagging_follower(&mut cluster, 1_500)
        .await
        .expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert_eq!(
        r.stale_valid, 0,
        "the catching-up follower validated a revoked token"
    );
    common::assert_checks(&r.events);
}

/// A rotation the next leader committed late keeps its grace window from when it became
/// visible: the other tab's previous token, presented right then, is superseded, not a
/// reuse that logs the user out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_committed_late_is_not_judged_a_reuse() {
    let (mut cluster, _dir) = common::inproc(5, node_flags()).await;
    let r = probe::late_commit(&mut cluster).await.expect("probe runs");
    cluster.shutdown().await.expect("shutdown");
    assert!(
        !r.judged_reuse,
        "the other tab was logged out: {}",
        r.answer
    );
    assert!(
        r.answer.contains("superseded: true"),
        "the previous token, right after the rotation became visible: {}",
        r.answer
    );
    common::assert_checks(&r.events);
}

/// Two wrong leader clocks under the browsers' load, one after the other: a leader a day
/// ahead, then (after it is cut off and another node leads) a leader an hour behind. The
/// checker holds every read to real time: a stamp that followed either leader's clock would
/// expire sessions early (a day ahead) or keep grace windows and rotation intervals open and
/// expired sessions alive (time frozen an hour back), and the history would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_a_day_ahead_then_one_an_hour_behind_change_nothing_under_load() {
    let out = tempfile::tempdir().expect("temp dir");
    let mut o = opts(3, out.path());
    o.seconds = 7.0;
    let schedule = Schedule {
        seed: 12,
        steps: vec![
            (Duration::from_millis(500), Fault::LeaderClock(86_400_000)),
            (Duration::from_millis(2500), Fault::IsolateLeader),
            (Duration::from_millis(3500), Fault::Heal),
            (Duration::from_millis(4000), Fault::LeaderClock(-3_600_000)),
        ],
    };
    let r = inproc_schedule(&o, &schedule).await.expect("schedule runs");
    let clocks: Vec<String> = r
        .events
        .iter()
        .filter(|e| e.op == op::NEMESIS && e.result == Outcome::Ok)
        .filter_map(|e| e.args.nemesis.clone())
        .filter(|n| n.starts_with("clock of leader"))
        .collect();
    assert!(
        clocks.iter().any(|c| c.ends_with("+86400000 ms"))
            && clocks.iter().any(|c| c.ends_with("-3600000 ms")),
        "both wrong leader clocks were set: {clocks:?}"
    );
    common::assert_healthy(&r);
}
