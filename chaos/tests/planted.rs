//! Proof that the harness can fail: built with the node's `planted-stale-reads` bug
//! ("linearizable" reads served from local state without the leadership check), a few
//! schedules that isolate the leader must produce a reported violation.
//!
//! Run with `cargo test -p sessiond-chaos --features planted-stale-reads --test planted`.

use sessiond_chaos::browser::BrowserOptions;
use sessiond_chaos::nemesis::{Fault, Schedule};
use sessiond_chaos::run::{inproc_schedule, Layer, RunOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_without_the_leadership_check_are_caught() {
    let out = tempfile::tempdir().expect("temp dir");
    let opts = RunOptions {
        layer: Layer::Inproc,
        nodes: 3,
        schedules: 1,
        seconds: 5.0,
        seed: 0,
        out: out.path().to_path_buf(),
        browsers: BrowserOptions::default(),
    };
    let mut tried = Vec::new();
    for seed in 0..8u64 {
        // The leader is cut off twice while tabs of the same users keep working on both
        // sides: the old leader keeps answering reads from its frozen state.
        let schedule = Schedule {
            seed: 9_000 + seed,
            steps: vec![
                (Duration::from_millis(700), Fault::IsolateLeader),
                (Duration::from_millis(2300), Fault::Heal),
                (Duration::from_millis(2800), Fault::IsolateLeader),
                (Duration::from_millis(4500), Fault::Heal),
            ],
        };
        let r = inproc_schedule(&opts, &schedule)
            .await
            .expect("schedule runs");
        let kinds = r.report.by_kind();
        tried.push((schedule.seed, kinds.clone(), r.events.len()));
        if !r.report.violations.is_empty() {
            eprintln!("caught on seed {}: {kinds:?}", schedule.seed);
            for v in r.report.violations.iter().take(3) {
                eprintln!("  {}: {}", v.kind.name(), v.detail);
            }
            return;
        }
    }
    panic!("the planted stale-read bug went unnoticed: {tried:?}");
}
