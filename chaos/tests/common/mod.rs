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
