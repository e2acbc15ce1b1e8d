//! The in-process layer end to end: a few seeded schedules against 3- and 5-node clusters
//! must run every kind of fault, record a history and pass the checker.

use sessiond_chaos::browser::BrowserOptions;
use sessiond_chaos::history::{op, Outcome};
use sessiond_chaos::nemesis::{Fault, Schedule};
use sessiond_chaos::run::{inproc_schedule, Layer, RunOptions};
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
