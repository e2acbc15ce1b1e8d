//! The checker on histories made by hand and by a small simulator of the store.
//!
//! Bad histories must be rejected with the right kind; good ones (including the races the
//! design exists to survive) must pass; a history too hard for the budget must come back
//! unknown, never passed. The property tests run a sequential simulator of the semantics
//! (written here, separately from the checker's model), stretch every operation over a random
//! interval around its linearization point, lose some answers, and require a pass.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sessiond_chaos::check::{check, Budget, Report, ViolationKind};
use sessiond_chaos::history::{error, op, Args, Event, Outcome, RunInfo, Value};
use std::collections::HashMap;

/// Wall-clock origin of the hand-made histories (ms since the epoch).
const T: u64 = 1_700_000_000_000;
const LONG: u64 = 3_600_000;

fn run() -> RunInfo {
    RunInfo {
        seed: 0,
        grace_window_ms: 1000,
        rotation_min_interval_ms: 1000,
        reuse_policy: "revoke".into(),
        clock_skew_ms: 250,
        stale_read_bound_ms: 600,
    }
}

fn ns(ms: u64) -> u64 {
    (T + ms) * 1_000_000
}

/// An event of session `s` from `p`, invoked and completed at `t0`/`t1` ms after [`T`];
/// `info` until told otherwise.
fn ev(op: &str, p: &str, s: Option<&str>, t0: u64, t1: u64) -> Event {
    Event {
        process: p.into(),
        session: s.map(str::to_string),
        op: op.into(),
        args: Args {
            user: Some("u".into()),
            ..Args::default()
        },
        result: Outcome::Info,
        value: Value {
            error: Some(error::TIMEOUT.into()),
            ..Value::default()
        },
        invoke_ns: ns(t0),
        complete_ns: ns(t1),
    }
}

trait Build {
    fn tok(self, t: &str) -> Self;
    fn rid(self, r: &str) -> Self;
    fn data(self, d: &str) -> Self;
    fn expect(self, v: u64) -> Self;
    fn final_read(self) -> Self;
    fn record(self, gen: u64, version: u64, data: &str) -> Self;
    fn issued(self, t: &str) -> Self;
    fn deadline(self, ms: u64) -> Self;
    fn superseded(self, b: bool) -> Self;
    fn rotated(self, b: bool) -> Self;
    fn fail(self, code: &str) -> Self;
    fn reason(self, r: &str) -> Self;
    fn already(self, b: bool) -> Self;
    fn listed(self, ids: &[&str]) -> Self;
}

impl Build for Event {
    fn tok(mut self, t: &str) -> Self {
        self.args.token = Some(t.into());
        self
    }
    fn rid(mut self, r: &str) -> Self {
        self.args.request_id = Some(r.into());
        self
    }
    fn data(mut self, d: &str) -> Self {
        self.args.data = Some(d.into());
        self
    }
    fn expect(mut self, v: u64) -> Self {
        self.args.expected_version = Some(v);
        self
    }
    fn final_read(mut self) -> Self {
        self.args.final_read = true;
        self
    }
    /// An ok answer carrying a record (long-lived unless `deadline` follows).
    fn record(mut self, gen: u64, version: u64, data: &str) -> Self {
        self.result = Outcome::Ok;
        self.value = Value {
            generation: Some(gen),
            version: Some(version),
            data: Some(data.into()),
            expires_at_ms: Some(T + LONG),
            absolute_expires_at_ms: Some(T + LONG),
            ..Value::default()
        };
        self
    }
    fn issued(mut self, t: &str) -> Self {
        self.value.token = Some(t.into());
        self
    }
    fn deadline(mut self, ms: u64) -> Self {
        self.value.absolute_expires_at_ms = Some(T + ms);
        self.value.expires_at_ms = Some(T + ms);
        self
    }
    fn superseded(mut self, b: bool) -> Self {
        self.value.superseded = Some(b);
        self
    }
    fn rotated(mut self, b: bool) -> Self {
        self.value.rotated = Some(b);
        self
    }
    fn fail(mut self, code: &str) -> Self {
        self.result = Outcome::Fail;
        self.value = Value {
            error: Some(code.into()),
            ..Value::default()
        };
        self
    }
    fn reason(mut self, r: &str) -> Self {
        self.value.reason = Some(r.into());
        self
    }
    fn already(mut self, b: bool) -> Self {
        self.result = Outcome::Ok;
        self.value = Value {
            already_revoked: Some(b),
            ..Value::default()
        };
        self
    }
    fn listed(mut self, ids: &[&str]) -> Self {
        self.result = Outcome::Ok;
        self.value = Value {
            revoked_ids: Some(ids.iter().map(|s| s.to_string()).collect()),
            ..Value::default()
        };
        self
    }
}

/// A created session "s" with token "A", data "d1", at [0, 10] ms.
fn created() -> Event {
    ev(op::CREATE, "p1", Some("s"), 0, 10)
        .rid("c1")
        .data("d1")
        .record(0, 1, "d1")
        .issued("A")
}

fn checked(events: &[Event]) -> Report {
    check(events, &run(), &Budget::default())
}

fn kinds(r: &Report) -> Vec<ViolationKind> {
    let mut k: Vec<_> = r.violations.iter().map(|v| v.kind).collect();
    k.sort();
    k.dedup();
    k
}

#[track_caller]
fn assert_rejected(events: &[Event], kind: ViolationKind) {
    let r = checked(events);
    assert!(
        r.violations.iter().any(|v| v.kind == kind),
        "expected {kind:?}, got {:#?}",
        r
    );
    assert!(!r.passed());
}

#[track_caller]
fn assert_passes(events: &[Event]) {
    let r = checked(events);
    assert!(r.passed(), "{r:#?}");
}

// ---------------------------------------------------------------- bad histories

#[test]
fn fork_two_successors_of_one_token() {
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::ROTATE, "p2", Some("s"), 200, 210)
            .tok("A")
            .rid("r2")
            .record(1, 2, "d1")
            .issued("C")
            .rotated(true),
    ];
    assert_rejected(&h, ViolationKind::Fork);
    assert_rejected(&h, ViolationKind::NotLinearizable);
}

#[test]
fn resurrection_after_acknowledged_logout() {
    let h = vec![
        created(),
        ev(op::REVOKE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .already(false),
        ev(op::GET, "p2", Some("s"), 200, 210)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
    ];
    assert_rejected(&h, ViolationKind::Resurrection);
    assert_rejected(&h, ViolationKind::NotLinearizable);
}

#[test]
fn resurrection_after_log_out_everywhere() {
    let h = vec![
        created(),
        ev(op::REVOKE_USER, "p1", None, 100, 110)
            .rid("r1")
            .listed(&["s"]),
        ev(op::UPDATE, "p2", Some("s"), 200, 210)
            .tok("A")
            .rid("r2")
            .data("d2")
            .expect(1)
            .record(0, 2, "d2"),
    ];
    assert_rejected(&h, ViolationKind::Resurrection);
}

#[test]
fn stale_read_after_completed_update() {
    let h = vec![
        created(),
        ev(op::UPDATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .data("d2")
            .expect(1)
            .record(0, 2, "d2"),
        ev(op::GET, "p2", Some("s"), 200, 210)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
    ];
    let r = checked(&h);
    assert_eq!(kinds(&r), vec![ViolationKind::NotLinearizable], "{r:#?}");
    let d = &r.violations[0].detail;
    assert!(d.contains("cannot be placed"), "{d}");
    // The same read marked stale is allowed by contract.
    let mut h = h;
    h[2].args.consistency = Some("stale".into());
    assert_passes(&h);
}

#[test]
fn lost_write_in_final_read() {
    let h = vec![
        created(),
        ev(op::UPDATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .data("d2")
            .expect(1)
            .record(0, 2, "d2"),
        ev(op::GET, "final", Some("s"), 5000, 5010)
            .tok("A")
            .final_read()
            .record(0, 1, "d1")
            .superseded(false),
    ];
    assert_rejected(&h, ViolationKind::LostWrite);
}

#[test]
fn lost_session_in_final_read() {
    let h = vec![
        created(),
        ev(op::GET, "final", Some("s"), 5000, 5010)
            .tok("A")
            .final_read()
            .fail(error::NOT_FOUND),
    ];
    assert_rejected(&h, ViolationKind::LostWrite);
}

#[test]
fn spurious_logout_of_current_token() {
    let h = vec![
        created(),
        ev(op::GET, "p1", Some("s"), 100, 110)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
        ev(op::GET, "p2", Some("s"), 200, 210)
            .tok("A")
            .fail(error::TOKEN_REUSED),
    ];
    assert_rejected(&h, ViolationKind::SpuriousLogout);
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .fail(error::REVOKED)
            .reason("logout"),
    ];
    assert_rejected(&h, ViolationKind::SpuriousLogout);
}

#[test]
fn spurious_logout_of_previous_token_inside_grace() {
    // The race of docs/semantics.md §1.1: tab 2 still holds A right after tab 1 rotated it.
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::ROTATE, "p2", Some("s"), 150, 160)
            .tok("A")
            .rid("r2")
            .fail(error::TOKEN_REUSED),
    ];
    assert_rejected(&h, ViolationKind::SpuriousLogout);
}

#[test]
fn reuse_two_generations_behind_is_not_spurious() {
    // A tab that missed two rotations (e.g. cut off by a partition) is legitimately refused.
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::ROTATE, "p1", Some("s"), 1500, 1510)
            .tok("B")
            .rid("r2")
            .record(2, 3, "d1")
            .issued("C")
            .rotated(true),
        ev(op::GET, "p2", Some("s"), 1600, 1610)
            .tok("A")
            .fail(error::TOKEN_REUSED),
        ev(op::GET, "p1", Some("s"), 1700, 1710)
            .tok("C")
            .fail(error::REVOKED)
            .reason("reuse_detected"),
    ];
    assert_passes(&h);
}

#[test]
fn served_after_expiry() {
    let h = vec![
        ev(op::CREATE, "p1", Some("s"), 0, 10)
            .rid("c1")
            .data("d1")
            .record(0, 1, "d1")
            .issued("A")
            .deadline(1000),
        ev(op::GET, "p1", Some("s"), 2000, 2010)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false)
            .deadline(1000),
    ];
    assert_rejected(&h, ViolationKind::ServedAfterExpiry);
    assert_rejected(&h, ViolationKind::NotLinearizable);
}

#[test]
fn reused_token_accepted() {
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::GET, "p2", Some("s"), 3000, 3010)
            .tok("A")
            .record(1, 2, "d1")
            .superseded(true),
    ];
    assert_rejected(&h, ViolationKind::NotLinearizable);
}

#[test]
fn lost_rotation_after_retry_is_caught() {
    // A retry with the same request id must get the first answer, not a second rotation.
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 150)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::ROTATE, "p1", Some("s"), 1600, 1650)
            .tok("A")
            .rid("r1")
            .record(2, 3, "d1")
            .issued("C")
            .rotated(true),
    ];
    assert_rejected(&h, ViolationKind::NotLinearizable);
}

#[test]
fn revoke_user_claims_must_hold() {
    // Not listed though live and not spared: the session must have been revoked then.
    let h = vec![
        created(),
        ev(op::REVOKE_USER, "p1", None, 100, 110)
            .rid("r1")
            .listed(&[]),
        ev(op::GET, "p2", Some("s"), 200, 210)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
    ];
    assert_rejected(&h, ViolationKind::NotLinearizable);
}

#[test]
fn malformed_events_are_reported_not_fatal() {
    let mut backwards = ev(op::GET, "p1", Some("s"), 100, 110).tok("A");
    backwards.complete_ns = backwards.invoke_ns - 1;
    let h = vec![
        created(),
        backwards,
        ev("frobnicate", "p1", Some("s"), 120, 130),
        ev(op::GET, "p1", Some("s"), 140, 150)
            .tok("A")
            .fail("WEIRD"),
        {
            let mut e = ev(op::GET, "p1", Some("s"), 160, 170).tok("A");
            e.result = Outcome::Ok;
            e.value = Value::default();
            e
        },
        ev(op::GET, "p1", None, 180, 190).tok("A"),
    ];
    let r = checked(&h);
    let n = r
        .violations
        .iter()
        .filter(|v| v.kind == ViolationKind::Malformed)
        .count();
    assert_eq!(n, 5, "{r:#?}");
}

// ---------------------------------------------------------------- good histories

#[test]
fn concurrent_rotations_share_one_successor() {
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 200)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::ROTATE, "p2", Some("s"), 120, 190)
            .tok("A")
            .rid("r2")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::GET, "p2", Some("s"), 300, 310)
            .tok("B")
            .record(1, 2, "d1")
            .superseded(false),
    ];
    assert_passes(&h);
}

#[test]
fn superseded_get_inside_grace() {
    let h = vec![
        created(),
        ev(op::ROTATE, "p1", Some("s"), 100, 110)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::GET, "p2", Some("s"), 300, 310)
            .tok("A")
            .record(1, 2, "d1")
            .superseded(true),
        // Within the rotation interval: the current token comes back unchanged.
        ev(op::ROTATE, "p2", Some("s"), 400, 410)
            .tok("B")
            .rid("r2")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(false),
        // Saves and logout work with the superseded token too.
        ev(op::UPDATE, "p3", Some("s"), 500, 510)
            .tok("A")
            .rid("r3")
            .data("d2")
            .expect(2)
            .record(1, 3, "d2"),
        ev(op::REVOKE, "p3", Some("s"), 600, 610)
            .tok("A")
            .rid("r4")
            .already(false),
        ev(op::GET, "p1", Some("s"), 700, 710)
            .tok("B")
            .fail(error::REVOKED)
            .reason("logout"),
    ];
    assert_passes(&h);
}

#[test]
fn lost_rotation_response_retried_with_same_request_id() {
    let mut dropped = ev(op::ROTATE, "p1", Some("s"), 100, 150).tok("A").rid("r1");
    dropped.value.error = Some(error::DROPPED.into());
    let h = vec![
        created(),
        dropped,
        // Retried after the grace window: the store still hands back the first answer.
        ev(op::ROTATE, "p1", Some("s"), 1600, 1650)
            .tok("A")
            .rid("r1")
            .record(1, 2, "d1")
            .issued("B")
            .rotated(true),
        ev(op::GET, "p1", Some("s"), 1700, 1710)
            .tok("B")
            .record(1, 2, "d1")
            .superseded(false),
    ];
    assert_passes(&h);
}

#[test]
fn info_create_retried() {
    let mut lost = ev(op::CREATE, "p1", None, 0, 50).rid("c1").data("d1");
    lost.session = None;
    let h = vec![
        lost,
        ev(op::CREATE, "p1", Some("s"), 60, 70)
            .rid("c1")
            .data("d1")
            .record(0, 1, "d1")
            .issued("A"),
        ev(op::GET, "p1", Some("s"), 100, 110)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
    ];
    assert_passes(&h);
}

#[test]
fn info_update_that_never_took_effect() {
    let h = vec![
        created(),
        ev(op::UPDATE, "p1", Some("s"), 100, 150)
            .tok("A")
            .rid("r1")
            .data("d2")
            .expect(1),
        ev(op::GET, "p2", Some("s"), 300, 310)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
        ev(op::GET, "final", Some("s"), 9000, 9010)
            .tok("A")
            .final_read()
            .record(0, 1, "d1")
            .superseded(false),
    ];
    assert_passes(&h);
    // ... or that took effect much later (a stuck log entry committed after the heal).
    let mut late = h.clone();
    late[3] = late[3].clone().record(0, 2, "d2").superseded(false);
    assert_passes(&late);
}

#[test]
fn revoke_user_racing_a_create() {
    let base = vec![
        created(),
        ev(op::CREATE, "p2", Some("s2"), 100, 300)
            .rid("c2")
            .data("e1")
            .record(0, 1, "e1")
            .issued("X"),
    ];
    // Linearized before the create: s2 survives.
    let mut before = base.clone();
    before.push(
        ev(op::REVOKE_USER, "p1", None, 150, 250)
            .rid("r1")
            .listed(&["s"]),
    );
    before.push(
        ev(op::GET, "p2", Some("s2"), 400, 410)
            .tok("X")
            .record(0, 1, "e1")
            .superseded(false),
    );
    assert_passes(&before);
    // Linearized after it: s2 is revoked too.
    let mut after = base;
    after.push(
        ev(op::REVOKE_USER, "p1", None, 150, 250)
            .rid("r1")
            .listed(&["s", "s2"]),
    );
    after.push(
        ev(op::GET, "p2", Some("s2"), 400, 410)
            .tok("X")
            .fail(error::REVOKED)
            .reason("logout_everywhere"),
    );
    assert_passes(&after);
}

#[test]
fn get_concurrent_with_update_sees_either_version() {
    let h = vec![
        created(),
        ev(op::UPDATE, "p1", Some("s"), 100, 200)
            .tok("A")
            .rid("r1")
            .data("d2")
            .expect(1)
            .record(0, 2, "d2"),
        ev(op::GET, "p2", Some("s"), 120, 180)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false),
        ev(op::GET, "p3", Some("s"), 130, 190)
            .tok("A")
            .record(0, 2, "d2")
            .superseded(false),
        ev(op::UPDATE, "p2", Some("s"), 300, 310)
            .tok("A")
            .rid("r2")
            .data("d3")
            .expect(1)
            .fail(error::VERSION_CONFLICT),
    ];
    let mut h = h;
    h[4].value.current_version = Some(2);
    assert_passes(&h);
}

#[test]
fn expired_after_deadline() {
    let h = vec![
        ev(op::CREATE, "p1", Some("s"), 0, 10)
            .rid("c1")
            .data("d1")
            .record(0, 1, "d1")
            .issued("A")
            .deadline(1000),
        ev(op::GET, "p1", Some("s"), 500, 510)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false)
            .deadline(1000),
        // Inside the skew band both answers are fine.
        ev(op::GET, "p2", Some("s"), 1100, 1110)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false)
            .deadline(1000),
        ev(op::GET, "p1", Some("s"), 1500, 1510)
            .tok("A")
            .fail(error::EXPIRED),
        ev(op::ROTATE, "p1", Some("s"), 2000, 2010)
            .tok("A")
            .rid("r1")
            .fail(error::NOT_FOUND),
        ev(op::REVOKE, "p1", Some("s"), 2100, 2110)
            .tok("A")
            .rid("r2")
            .already(false),
        ev(op::GET, "final", Some("s"), 3000, 3010)
            .tok("A")
            .final_read()
            .fail(error::NOT_FOUND),
    ];
    assert_passes(&h);
}

#[test]
fn budget_exhaustion_is_unknown_not_pass() {
    let mut h = vec![created()];
    for i in 0..16u64 {
        h.push(
            ev(op::UPDATE, &format!("p{i}"), Some("s"), 100 + i, 120 + i)
                .tok("A")
                .rid(&format!("r{i}"))
                .data(&format!("d{}", i + 2))
                .expect(0),
        );
    }
    h.push(
        ev(op::GET, "p1", Some("s"), 5000, 5010)
            .tok("A")
            .record(0, 100, "d9")
            .superseded(false),
    );
    let r = check(
        &h,
        &run(),
        &Budget {
            max_states_per_session: 1000,
        },
    );
    assert_eq!(r.unknown, vec!["s".to_string()], "{r:#?}");
    assert!(!r.passed());
}

// ---------------------------------------------------------------- the simulator

/// A sequential store following docs/semantics.md, deciding at exact times.
struct Sim {
    rng: StdRng,
    grace: u64,
    min_interval: u64,
    revoke_on_reuse: bool,
    sessions: Vec<SimSession>,
    /// token -> (session index, generation)
    tokens: HashMap<String, (usize, u64)>,
    dedup: HashMap<String, (Outcome, Value)>,
    next: u64,
}

struct SimSession {
    id: String,
    user: String,
    gen: u64,
    version: u64,
    data: String,
    tokens: Vec<String>,
    last_rot: Option<u64>,
    revoked: Option<String>,
    deadline: u64,
    /// The client learned the session's id (a create answer reached it, or was dropped
    /// after it arrived): only such sessions are used.
    known: bool,
}

/// What an operation asks, before the store sees it.
#[derive(Clone)]
struct Req {
    op: &'static str,
    process: String,
    session: Option<String>,
    args: Args,
}

impl Sim {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn record(&self, i: usize) -> Value {
        let s = &self.sessions[i];
        Value {
            generation: Some(s.gen),
            version: Some(s.version),
            data: Some(s.data.clone()),
            expires_at_ms: Some(s.deadline),
            absolute_expires_at_ms: Some(s.deadline),
            ..Value::default()
        }
    }

    fn fail(code: &str) -> (Outcome, Value) {
        (
            Outcome::Fail,
            Value {
                error: Some(code.into()),
                ..Value::default()
            },
        )
    }

    fn revoke(&mut self, i: usize, reason: &str) {
        if self.sessions[i].revoked.is_none() {
            self.sessions[i].revoked = Some(reason.into());
        }
    }

    /// Apply a request at store time `now` (ms).
    fn apply(&mut self, r: &Req, now: u64) -> (Outcome, Value) {
        if let Some(rid) = &r.args.request_id {
            if let Some((o, v)) = self.dedup.get(rid) {
                let mut v = v.clone();
                if *o == Outcome::Ok && v.replayed.is_some() {
                    v.replayed = Some(true);
                }
                return (*o, v);
            }
        }
        let answer = self.execute(r, now);
        if let Some(rid) = &r.args.request_id {
            self.dedup.insert(rid.clone(), answer.clone());
        }
        answer
    }

    fn execute(&mut self, r: &Req, now: u64) -> (Outcome, Value) {
        if r.op == op::CREATE {
            let id = r.session.clone().unwrap_or_default();
            let token = self.fresh("tok");
            let lifetime = if self.rng.random_bool(0.3) {
                self.rng.random_range(200..2500)
            } else {
                LONG
            };
            self.sessions.push(SimSession {
                id,
                user: r.args.user.clone().unwrap_or_default(),
                gen: 0,
                version: 1,
                data: r.args.data.clone().unwrap_or_default(),
                tokens: vec![token.clone()],
                last_rot: None,
                revoked: None,
                deadline: now + lifetime,
                known: false,
            });
            let i = self.sessions.len() - 1;
            self.tokens.insert(token.clone(), (i, 0));
            let mut v = self.record(i);
            v.token = Some(token);
            v.replayed = Some(false);
            return (Outcome::Ok, v);
        }
        if r.op == op::REVOKE_USER {
            let user = r.args.user.clone().unwrap_or_default();
            let mut ids = Vec::new();
            for i in 0..self.sessions.len() {
                let s = &self.sessions[i];
                if s.user != user || s.revoked.is_some() || Some(&s.id) == r.args.except.as_ref() {
                    continue;
                }
                // Expired but not yet swept sessions may still be in the user's index.
                if now >= s.deadline && self.rng.random_bool(0.5) {
                    continue;
                }
                ids.push(s.id.clone());
                self.revoke(i, "logout_everywhere");
            }
            return (
                Outcome::Ok,
                Value {
                    revoked_ids: Some(ids),
                    ..Value::default()
                },
            );
        }
        // Find the session and classify the token.
        let (i, class) = if r.args.by_id {
            let id = r.session.clone().unwrap_or_default();
            match self.sessions.iter().position(|s| s.id == id) {
                Some(i) => (i, 0u8),
                None => return Self::fail(error::NOT_FOUND),
            }
        } else {
            let tok = r.args.token.clone().unwrap_or_default();
            let Some(&(i, g)) = self.tokens.get(&tok) else {
                return Self::fail(error::NOT_FOUND);
            };
            let s = &self.sessions[i];
            let class = if g == s.gen {
                0
            } else if g + 1 == s.gen && s.last_rot.is_some_and(|t| now < t + self.grace) {
                1
            } else {
                2
            };
            (i, class)
        };
        let s = &self.sessions[i];
        if let Some(reason) = s.revoked.clone() {
            if now >= s.deadline && self.rng.random_bool(0.5) {
                return Self::fail(error::NOT_FOUND); // tombstone swept
            }
            if r.op == op::REVOKE {
                return (
                    Outcome::Ok,
                    Value {
                        already_revoked: Some(true),
                        ..Value::default()
                    },
                );
            }
            let (o, mut v) = Self::fail(error::REVOKED);
            v.reason = Some(reason);
            return (o, v);
        }
        if now >= s.deadline {
            if r.op == op::REVOKE && self.rng.random_bool(0.3) {
                self.revoke(i, "logout");
                return (
                    Outcome::Ok,
                    Value {
                        already_revoked: Some(false),
                        ..Value::default()
                    },
                );
            }
            return Self::fail(if self.rng.random_bool(0.5) {
                error::EXPIRED
            } else {
                error::NOT_FOUND
            });
        }
        if class == 2 {
            if self.revoke_on_reuse {
                self.revoke(i, "reuse_detected");
            }
            return Self::fail(error::TOKEN_REUSED);
        }
        let superseded = class == 1;
        match r.op {
            op::GET => {
                let mut v = self.record(i);
                v.superseded = Some(superseded);
                (Outcome::Ok, v)
            }
            op::ROTATE => {
                let s = &mut self.sessions[i];
                let rotate = !superseded && s.last_rot.is_none_or(|t| now >= t + self.min_interval);
                if rotate {
                    self.next += 1;
                    let token = format!("tok{}", self.next);
                    let s = &mut self.sessions[i];
                    s.gen += 1;
                    s.version += 1;
                    s.tokens.push(token.clone());
                    s.last_rot = Some(now);
                    self.tokens.insert(token, (i, s.gen));
                }
                let s = &self.sessions[i];
                let mut v = self.record(i);
                v.token = s.tokens.last().cloned();
                v.rotated = Some(rotate || superseded);
                v.replayed = Some(superseded);
                (Outcome::Ok, v)
            }
            op::UPDATE => {
                let expected = r.args.expected_version.unwrap_or(0);
                let s = &mut self.sessions[i];
                if expected != 0 && expected != s.version {
                    let (o, mut v) = Self::fail(error::VERSION_CONFLICT);
                    v.current_version = Some(s.version);
                    return (o, v);
                }
                s.version += 1;
                s.data = r.args.data.clone().unwrap_or_default();
                let mut v = self.record(i);
                v.replayed = Some(false);
                (Outcome::Ok, v)
            }
            _ => {
                self.revoke(i, "logout");
                (
                    Outcome::Ok,
                    Value {
                        already_revoked: Some(false),
                        ..Value::default()
                    },
                )
            }
        }
    }

    /// A random request against the current sessions.
    fn request(&mut self) -> Req {
        let process = format!("p{}", self.rng.random_range(0..4));
        let user = format!("u{}", self.rng.random_range(0..2));
        let known: Vec<usize> = (0..self.sessions.len())
            .filter(|&i| self.sessions[i].known)
            .collect();
        if known.is_empty() || self.rng.random_bool(0.08) {
            let id = self.fresh("s");
            let data = self.fresh("d");
            let rid = self.fresh("rid");
            return Req {
                op: op::CREATE,
                process,
                session: Some(id),
                args: Args {
                    user: Some(user),
                    data: Some(data),
                    request_id: Some(rid),
                    ..Args::default()
                },
            };
        }
        let i = known[self.rng.random_range(0..known.len())];
        let (id, user, gen, version) = {
            let s = &self.sessions[i];
            (s.id.clone(), s.user.clone(), s.gen, s.version)
        };
        let mut args = Args {
            user: Some(user),
            ..Args::default()
        };
        let pick = self.rng.random_range(0..100);
        let s = &self.sessions[i];
        args.token = Some(if pick < 75 || gen == 0 {
            s.tokens[gen as usize].clone()
        } else if pick < 92 {
            s.tokens[gen as usize - 1].clone()
        } else if pick < 97 {
            args.replay = true;
            s.tokens[self.rng.random_range(0..gen as usize)].clone()
        } else {
            "nope".to_string()
        });
        let kind = self.rng.random_range(0..100);
        let op = match kind {
            0..=34 => op::GET,
            35..=39 => {
                args.consistency = Some("stale".into());
                op::GET
            }
            40..=64 => op::ROTATE,
            65..=89 => op::UPDATE,
            90..=96 => op::REVOKE,
            _ => op::REVOKE_USER,
        };
        if op != op::GET {
            args.request_id = Some(self.fresh("rid"));
        }
        if op == op::UPDATE {
            args.data = Some(self.fresh("d"));
            args.expected_version = Some(match self.rng.random_range(0..10) {
                0 => 0,
                1 => version.saturating_sub(1).max(1),
                _ => version,
            });
        }
        if (op == op::UPDATE || op == op::REVOKE) && self.rng.random_bool(0.15) {
            args.by_id = true;
            args.token = None;
        }
        if op == op::REVOKE_USER {
            args.token = None;
            args.replay = false;
            if self.rng.random_bool(0.5) {
                args.except = Some(id.clone());
            }
        }
        Req {
            op,
            process,
            session: (op != op::REVOKE_USER).then_some(id),
            args,
        }
    }
}

/// Generate a history: a sequential execution at increasing store times, each operation
/// then stretched over a random interval around its time; some answers lost (recorded as
/// `info`, sometimes retried with the same request id, sometimes never applied at all).
fn simulate(seed: u64, steps: usize, width_ms: u64, grace: u64, min_interval: u64) -> Vec<Event> {
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(seed),
        grace,
        min_interval,
        revoke_on_reuse: !seed.is_multiple_of(3),
        sessions: Vec::new(),
        tokens: HashMap::new(),
        dedup: HashMap::new(),
        next: 0,
    };
    let mut now = T;
    let mut out = Vec::new();
    let mut retries: Vec<Req> = Vec::new();
    let stretch = |rng: &mut StdRng, at: u64| {
        let w = width_ms * 1_000_000;
        let a = at * 1_000_000 - rng.random_range(0..=w);
        let b = at * 1_000_000 + rng.random_range(0..=w);
        (a, b)
    };
    for _ in 0..steps {
        now += sim.rng.random_range(0..250);
        let req = if !retries.is_empty() && sim.rng.random_bool(0.3) {
            retries.remove(0)
        } else {
            sim.request()
        };
        let is_mutation = req.op != op::GET;
        let roll = sim.rng.random_range(0..100);
        let (invoke_ns, complete_ns) = stretch(&mut sim.rng, now);
        let mut e = Event {
            process: req.process.clone(),
            session: req.session.clone(),
            op: req.op.to_string(),
            args: req.args.clone(),
            result: Outcome::Info,
            value: Value::default(),
            invoke_ns,
            complete_ns,
        };
        if roll < 4 {
            // Never reached the store.
            e.value.error = Some(error::TIMEOUT.into());
            if req.op == op::CREATE {
                e.session = None;
            }
        } else {
            let (o, v) = sim.apply(&req, now);
            if is_mutation && o == Outcome::Ok && roll < 12 {
                // The answer is thrown away; the client retries with the same request id.
                e.value.error = Some(error::DROPPED.into());
                retries.push(req.clone());
            } else if roll < 16 {
                e.value.error = Some(error::TIMEOUT.into());
                if req.op == op::CREATE {
                    e.session = None;
                }
            } else {
                e.result = o;
                e.value = v;
            }
        }
        if req.op == op::CREATE && e.session.is_some() && e.result != Outcome::Fail {
            if let Some(s) = sim
                .sessions
                .iter_mut()
                .find(|s| Some(&s.id) == e.session.as_ref())
            {
                s.known = true;
            }
        }
        out.push(e);
    }
    // Final reads with each session's newest token.
    now += 100;
    let finals: Vec<Req> = sim
        .sessions
        .iter()
        .filter(|s| s.known)
        .map(|s| Req {
            op: op::GET,
            process: "final".into(),
            session: Some(s.id.clone()),
            args: Args {
                user: Some(s.user.clone()),
                token: s.tokens.last().cloned(),
                final_read: true,
                ..Args::default()
            },
        })
        .collect();
    for req in finals {
        now += 1;
        let (o, v) = sim.apply(&req, now);
        out.push(Event {
            process: req.process,
            session: req.session,
            op: req.op.into(),
            args: req.args,
            result: o,
            value: v,
            invoke_ns: now * 1_000_000,
            complete_ns: now * 1_000_000 + 500_000,
        });
    }
    out.sort_by_key(|e| (e.complete_ns, e.invoke_ns));
    out
}

fn sim_run(grace: u64, min_interval: u64, skew: u64, seed: u64) -> RunInfo {
    RunInfo {
        seed,
        grace_window_ms: grace,
        rotation_min_interval_ms: min_interval,
        reuse_policy: if !seed.is_multiple_of(3) {
            "revoke"
        } else {
            "reject"
        }
        .into(),
        clock_skew_ms: skew,
        stale_read_bound_ms: 600,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Sequential executions (every operation a point in time) always pass.
    #[test]
    fn sequential_histories_pass(seed in any::<u64>(), grace in 300u64..1500, min in 100u64..1500) {
        let h = simulate(seed, 120, 0, grace, min);
        let r = check(&h, &sim_run(grace, min, 0, seed), &Budget::default());
        prop_assert!(r.passed(), "seed {seed}: {r:#?}");
    }

    /// The same executions with every operation stretched over a random interval around its
    /// linearization point (so they overlap) and some answers lost still pass.
    #[test]
    fn concurrent_histories_pass(
        seed in any::<u64>(),
        width in 200u64..1200,
        grace in 300u64..1500,
        min in 100u64..1500,
        skew in 0u64..100,
    ) {
        let h = simulate(seed, 120, width, grace, min);
        let r = check(&h, &sim_run(grace, min, skew, seed), &Budget::default());
        prop_assert!(r.passed(), "seed {seed} width {width}: {r:#?}");
    }

    /// Damaging one answer of a good history is noticed (when the damage is observable: a
    /// version changed on an ok record answer).
    #[test]
    fn damaged_versions_are_caught(seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let mut h = simulate(seed, 80, 20, 1000, 1000);
        let ok_records: Vec<usize> = (0..h.len())
            .filter(|&i| {
                h[i].result == Outcome::Ok
                    && h[i].value.version.is_some()
                    && h[i].args.consistency.is_none()
            })
            .collect();
        prop_assume!(!ok_records.is_empty());
        let i = ok_records[pick.index(ok_records.len())];
        if let Some(v) = h[i].value.version.as_mut() {
            *v += 7;
        }
        let r = check(&h, &sim_run(1000, 1000, 0, seed), &Budget::default());
        prop_assert!(!r.passed(), "damage at {i} not noticed");
    }

    /// Arbitrary junk never makes the checker panic.
    #[test]
    fn junk_never_panics(
        raw in prop::collection::vec(
            (0usize..8, 0usize..3, 0u64..50, 0u64..50, prop::option::of(0u64..5), 0usize..4, any::<bool>()),
            0..40,
        )
    ) {
        let ops = ["create", "get", "rotate", "update", "revoke", "revoke_user", "nemesis", "???"];
        let results = [Outcome::Ok, Outcome::Fail, Outcome::Info];
        let codes = ["NOT_FOUND", "EXPIRED", "REVOKED", "TOKEN_REUSED"];
        let h: Vec<Event> = raw
            .into_iter()
            .map(|(o, r, a, b, n, c, flag)| Event {
                process: "p".into(),
                session: flag.then(|| "s".to_string()),
                op: ops[o].into(),
                args: Args {
                    user: Some("u".into()),
                    token: n.map(|n| format!("t{n}")),
                    by_id: !flag,
                    request_id: n.map(|n| format!("r{n}")),
                    data: n.map(|n| format!("d{n}")),
                    expected_version: n,
                    except: (!flag).then(|| "s".into()),
                    ..Args::default()
                },
                result: results[r],
                value: Value {
                    token: n.map(|n| format!("t{}", n + 1)),
                    generation: n,
                    version: n,
                    data: n.map(|n| format!("d{n}")),
                    revoked_ids: flag.then(|| vec!["s".into(), "zz".into()]),
                    error: (r == 1).then(|| codes[c].into()),
                    absolute_expires_at_ms: n.map(|n| n * 7),
                    ..Value::default()
                },
                invoke_ns: a * 1_000_000,
                complete_ns: b * 1_000_000,
            })
            .collect();
        let r = check(&h, &RunInfo::default(), &Budget { max_states_per_session: 20_000 });
        let _ = r.passed();
    }
}

/// A STALE read may return the state from before an acknowledged logout, but only within the
/// stale-read bound (600 ms here, plus the 250 ms skew) of the acknowledgment.
#[test]
fn a_stale_read_may_miss_a_logout_only_within_the_bound() {
    let revoke = ev(op::REVOKE, "p1", Some("s"), 100, 110)
        .tok("A")
        .rid("r1")
        .already(false);
    let stale_read = |t: u64| {
        let mut e = ev(op::GET, "p2", Some("s"), t, t + 10)
            .tok("A")
            .record(0, 1, "d1")
            .superseded(false);
        e.args.consistency = Some("stale".into());
        e
    };
    assert_passes(&[created(), revoke.clone(), stale_read(500)]);
    assert_rejected(
        &[created(), revoke, stale_read(2_000)],
        ViolationKind::Resurrection,
    );
}
