//! The consistency checker: is a recorded history explained by the semantics of docs/semantics.md?
//!
//! Two kinds of checks run over a history:
//! - **linearizability per session** ([`linear`]): every session's sub-history (its own
//!   operations plus the user-wide revocations of its user) must be explained by a sequential
//!   execution of the model ([`model`]) that respects real time; `info` operations may take
//!   effect at any point after their invocation, or never. Stale reads are skipped (not
//!   linearizable by contract).
//! - **direct invariants** ([`invariants`]): no resurrection after logout, at most one
//!   successor per token, no lost acknowledged write in the final reads, no spurious logout,
//!   nothing served after the absolute deadline. They name the broken promise directly.
//!
//! The model is written here from the design, never imported from the node, so a bug shared
//! by the node's state machine and its own tests cannot pass unnoticed. The checker never
//! panics on its input: malformed events are reported as such.

pub mod invariants;
pub mod linear;
pub mod model;
pub mod split;

use crate::history::{op, Event, Outcome, RunInfo};
use model::{Cause, Ctx, Kind, MOp, Obs, ObsErr, Policy, State};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// How much the linearizability search may explore before it gives up on a session (which is
/// then reported as unknown, never as passed).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Distinct (linearized set, model state) pairs explored per session.
    pub max_states_per_session: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_states_per_session: 2_000_000,
        }
    }
}

/// What was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ViolationKind {
    /// No order of the session's operations explains what the clients saw.
    NotLinearizable,
    /// Something succeeded on a session after its logout was acknowledged.
    Resurrection,
    /// A token got two different successors, or two sessions got one token.
    Fork,
    /// The final reads miss an acknowledged write or logout.
    LostWrite,
    /// A client following the protocol was logged out without a logout or a replay.
    SpuriousLogout,
    /// A session was served after its absolute deadline.
    ServedAfterExpiry,
    /// The history itself is self-contradictory or incomplete.
    Malformed,
}

impl ViolationKind {
    /// Stable snake_case name, for reports and counts.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::NotLinearizable => "not_linearizable",
            ViolationKind::Resurrection => "resurrection",
            ViolationKind::Fork => "fork",
            ViolationKind::LostWrite => "lost_write",
            ViolationKind::SpuriousLogout => "spurious_logout",
            ViolationKind::ServedAfterExpiry => "served_after_expiry",
            ViolationKind::Malformed => "malformed",
        }
    }
}

/// One finding, with enough detail for a human to find the events in the history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The session concerned, when there is one.
    pub session: Option<String>,
    pub detail: String,
}

/// The checker's verdict on a history.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Sessions found (each checked separately).
    pub sessions: usize,
    /// Client operations (nemesis events are not counted).
    pub ops: usize,
    pub violations: Vec<Violation>,
    /// Sessions whose search ran out of budget: neither passed nor failed.
    pub unknown: Vec<String>,
    pub elapsed_ms: u64,
}

impl Report {
    /// A pass needs no violation and no session left undecided.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.unknown.is_empty()
    }

    /// Violations counted by kind name (plus "unknown" for undecided sessions).
    pub fn by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.kind.name()).or_insert(0) += 1;
        }
        if !self.unknown.is_empty() {
            m.insert("unknown", self.unknown.len());
        }
        m
    }
}

/// One line describing an event, with times relative to `t0` (ms).
pub(crate) fn describe(e: &Event, t0: u64) -> String {
    let rel = |ns: u64| (ns as f64 - t0 as f64) / 1e6;
    let args = serde_json::to_string(&e.args).unwrap_or_default();
    let value = serde_json::to_string(&e.value).unwrap_or_default();
    let result = match e.result {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    };
    format!(
        "{} by {} [+{:.1}ms..+{:.1}ms] {} -> {} {}",
        e.op,
        e.process,
        rel(e.invoke_ns),
        rel(e.complete_ns),
        args,
        result,
        value
    )
}

/// What is wrong with an event: `fatal` ones keep it out of every check.
fn validate(e: &Event) -> (bool, Vec<&'static str>) {
    let mut problems = Vec::new();
    let mut fatal = false;
    let mut bad = |p: &'static str, f: bool| {
        problems.push(p);
        fatal |= f;
    };
    if e.complete_ns < e.invoke_ns {
        bad("completes before it is invoked", true);
    }
    if e.op == op::NEMESIS {
        return (fatal, problems);
    }
    let Some(kind) = Kind::parse(&e.op) else {
        bad("unknown operation", true);
        return (fatal, problems);
    };
    let v = &e.value;
    match kind {
        Kind::Create => {
            if e.result == Outcome::Ok && e.session.is_none() {
                bad("successful create without a session id", true);
            }
        }
        Kind::RevokeUser => {
            if e.args.user.is_none() {
                bad("revoke_user without a user", true);
            }
        }
        _ => {
            if e.session.is_none() {
                bad("session operation without a session id", true);
            }
            let needs_token = matches!(kind, Kind::Get | Kind::Rotate) || !e.args.by_id;
            if needs_token && e.args.token.is_none() {
                bad("no token presented", true);
            }
        }
    }
    match e.result {
        Outcome::Ok => {
            let record = v.generation.is_some() && v.version.is_some();
            match kind {
                Kind::Create | Kind::Rotate if !(record && v.token.is_some()) => {
                    bad("ok answer without token, generation or version", false)
                }
                Kind::Get | Kind::Update if !record => {
                    bad("ok answer without generation or version", false)
                }
                Kind::RevokeUser if v.revoked_ids.is_none() => {
                    bad("ok revoke_user without revoked_ids", false)
                }
                _ => {}
            }
        }
        Outcome::Fail => match v.error.as_deref().map(ObsErr::parse) {
            None => bad("fail without an error code", true),
            Some(None) => bad("fail with an unknown error code", true),
            Some(Some(_)) => {}
        },
        Outcome::Info => {}
    }
    (fatal, problems)
}

/// Interns fingerprints (tokens and data) as small ids for hashable model states.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        let n = self.ids.len() as u32;
        *self.ids.entry(s.to_string()).or_insert(n)
    }
}

/// Compile a session's sub-history into model operations. Left out: refusals the model does
/// not judge (invalid argument, resource exhausted), stale reads except as carriers of a
/// reuse report, and acknowledged user-wide revocations that completed before the session's
/// first create was invoked and were never retried (pushed to `early` if they claim to have
/// revoked it).
fn compile(
    events: &[Event],
    s: &split::SessionEvents,
    interner: &mut Interner,
    early: &mut Vec<usize>,
) -> Vec<MOp> {
    let first_create = s
        .own
        .iter()
        .map(|&i| &events[i])
        .filter(|e| e.op == op::CREATE)
        .map(|e| e.invoke_ns)
        .min()
        .unwrap_or(0);
    let mut chosen: Vec<usize> = Vec::new();
    for &i in &s.own {
        let e = &events[i];
        let code = e.value.error.as_deref().and_then(ObsErr::parse);
        let skip = if is_stale(e) {
            // A stale read's answer proves nothing, but one that found its token reused has
            // reported the reuse through the log (revoking the session): it stays, as `info`.
            !(e.result == Outcome::Info
                || (e.result == Outcome::Fail && code == Some(ObsErr::TokenReused)))
        } else {
            e.result == Outcome::Fail && code == Some(ObsErr::Other)
        };
        if !skip {
            chosen.push(i);
        }
    }
    for &i in &s.user_wide {
        let e = &events[i];
        if e.result == Outcome::Fail {
            continue;
        }
        let retried = e.args.request_id.as_deref().is_some_and(|r| {
            s.user_wide
                .iter()
                .any(|&j| j != i && events[j].args.request_id.as_deref() == Some(r))
        });
        if e.complete_ns < first_create && e.result == Outcome::Ok && !retried {
            let listed = e
                .value
                .revoked_ids
                .as_ref()
                .is_some_and(|ids| ids.contains(&s.id));
            if e.result == Outcome::Ok && listed {
                early.push(i);
            }
            continue;
        }
        chosen.push(i);
    }
    chosen.sort_by_key(|&i| (events[i].invoke_ns, i));
    let mut rid_count: HashMap<&str, usize> = HashMap::new();
    for &i in &chosen {
        if let Some(r) = events[i].args.request_id.as_deref() {
            *rid_count.entry(r).or_insert(0) += 1;
        }
    }
    let mut ops = Vec::with_capacity(chosen.len());
    for i in chosen {
        let e = &events[i];
        let Some(kind) = Kind::parse(&e.op) else {
            continue;
        };
        let by_id = e.args.by_id && matches!(kind, Kind::Update | Kind::Revoke);
        let v = &e.value;
        let obs = Obs {
            token: v.token.as_deref().map(|t| interner.id(t)),
            gen: v.generation,
            version: v.version,
            // A replayed rotation answers the session's content only while the session is
            // still at the version of the first answer (dedup rows keep no content): its data
            // proves nothing.
            data: match (kind, v.replayed) {
                (Kind::Rotate, Some(true)) => None,
                _ => v.data.as_deref().map(|d| interner.id(d)),
            },
            superseded: v.superseded,
            rotated: v.rotated,
            already: v.already_revoked,
            listed: v.revoked_ids.as_ref().map(|ids| ids.contains(&s.id)),
            error: v.error.as_deref().and_then(ObsErr::parse),
            reason: v.reason.as_deref().map(Cause::parse),
            current_version: v.current_version,
        };
        // Stale reads are not linearizable: only their possible side effect is modelled.
        let outcome = if is_stale(e) { Outcome::Info } else { e.result };
        let rid = e
            .args
            .request_id
            .as_deref()
            .filter(|r| rid_count.get(r).copied().unwrap_or(0) > 1)
            .map(|r| interner.id(r));
        ops.push(MOp {
            ev: i,
            kind,
            invoke: e.invoke_ns,
            complete: if outcome == Outcome::Info {
                u64::MAX
            } else {
                e.complete_ns
            },
            outcome,
            token: if by_id {
                None
            } else {
                e.args.token.as_deref().map(|t| interner.id(t))
            },
            by_id,
            expected: e.args.expected_version.unwrap_or(0),
            data: e
                .args
                .data
                .as_deref()
                .map(|d| interner.id(d))
                .unwrap_or(model::UNKNOWN),
            rid,
            except_self: e.args.except.as_deref() == Some(s.id.as_str()),
            obs,
        });
    }
    ops
}

fn is_stale(e: &Event) -> bool {
    e.args.consistency.as_deref() == Some("stale")
}

/// The verdict of one session's search, formatted.
enum SessionVerdict {
    Pass,
    Fail(String),
    Unknown,
}

fn check_session(events: &[Event], ops: &[MOp], ctx: &Ctx, budget: u64, t0: u64) -> SessionVerdict {
    match linear::search(ctx, ops, State::initial(), budget) {
        linear::Verdict::Linearizable => SessionVerdict::Pass,
        linear::Verdict::Unknown { .. } => SessionVerdict::Unknown,
        linear::Verdict::Violation {
            blocked,
            prefix,
            state,
        } => {
            let definite = ops.iter().filter(|o| o.definite()).count();
            let placed = prefix.iter().filter(|&&i| ops[i].definite()).count();
            let tail: Vec<String> = prefix
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(|&i| describe(&events[ops[i].ev], t0))
                .collect();
            let mut d =
                format!("no linearization: at best {placed} of {definite} definite ops placed");
            if !tail.is_empty() {
                d.push_str(&format!(", ending with [{}]", tail.join("; ")));
            }
            d.push_str(&format!(", model then: {}", state.describe()));
            if let Some(b) = blocked {
                d.push_str(&format!(
                    "; this op cannot be placed: {}",
                    describe(&events[ops[b].ev], t0)
                ));
            }
            SessionVerdict::Fail(d)
        }
    }
}

/// Check a history against the semantics. Never panics; every problem is in the report.
pub fn check(events: &[Event], run: &RunInfo, budget: &Budget) -> Report {
    let started = Instant::now();
    let ms = |x: u64| x.saturating_mul(1_000_000);
    let t0 = events.iter().map(|e| e.invoke_ns).min().unwrap_or(0);
    let times = invariants::Times {
        grace_ns: ms(run.grace_window_ms),
        min_interval_ns: ms(run.rotation_min_interval_ms),
        skew_ns: ms(run.clock_skew_ms),
        stale_bound_ns: ms(run.stale_read_bound_ms),
        t0,
    };
    let policy = Policy {
        grace_ns: times.grace_ns,
        min_interval_ns: times.min_interval_ns,
        skew_ns: times.skew_ns,
        revoke_on_reuse: run.reuse_policy != "reject",
    };
    let mut report = Report {
        ops: events.iter().filter(|e| e.op != op::NEMESIS).count(),
        ..Report::default()
    };
    let mut findings = invariants::Findings::default();

    let mut usable = vec![true; events.len()];
    let mut malformed = 0usize;
    for (i, e) in events.iter().enumerate() {
        let (fatal, problems) = validate(e);
        usable[i] = !fatal;
        if !problems.is_empty() {
            malformed += 1;
            if malformed <= 20 {
                report.violations.push(Violation {
                    kind: ViolationKind::Malformed,
                    session: e.session.clone(),
                    detail: format!("{}: {}", problems.join(", "), describe(e, t0)),
                });
            }
        }
    }
    if malformed > 20 {
        report.violations.push(Violation {
            kind: ViolationKind::Malformed,
            session: None,
            detail: format!("and {} more malformed events", malformed - 20),
        });
    }

    invariants::forks(events, &usable, &times, &mut findings);
    invariants::request_ids(events, &usable, &times, &mut findings);
    let parts = split::split(events, &usable);
    report.sessions = parts.sessions.len();

    // revoke_user answers naming sessions nobody else names need a create that may have
    // made them (one whose answer was lost).
    let known: std::collections::HashSet<&str> =
        parts.sessions.iter().map(|s| s.id.as_str()).collect();
    for (i, e) in events.iter().enumerate() {
        if !usable[i] || e.op != op::REVOKE_USER || e.result != Outcome::Ok {
            continue;
        }
        for id in e.value.revoked_ids.iter().flatten() {
            if known.contains(id.as_str()) {
                continue;
            }
            let explained = parts.orphan_creates.iter().any(|&c| {
                events[c].args.user == e.args.user && events[c].invoke_ns <= e.complete_ns
            });
            if !explained {
                findings.add(
                    ViolationKind::NotLinearizable,
                    Some(id),
                    format!(
                        "revoke_user revoked a session no create can have made: {}",
                        describe(e, t0)
                    ),
                );
            }
        }
    }

    let mut interner = Interner::default();
    let mut jobs: Vec<(String, Vec<MOp>, Ctx)> = Vec::new();
    for s in &parts.sessions {
        let view = invariants::View {
            s,
            events,
            t: times,
        };
        invariants::resurrection(&view, &mut findings);
        invariants::served_after_expiry(&view, &mut findings);
        invariants::lost_writes(&view, &mut findings);
        invariants::spurious_logouts(&view, &mut findings);

        let has_create = s.own.iter().any(|&i| events[i].op == op::CREATE);
        if !has_create {
            findings.add(
                ViolationKind::Malformed,
                Some(&s.id),
                "session has operations but no create event".into(),
            );
            continue;
        }
        let mut early = Vec::new();
        let ops = compile(events, s, &mut interner, &mut early);
        for i in early {
            findings.add(
                ViolationKind::NotLinearizable,
                Some(&s.id),
                format!(
                    "revoke_user completed before the session's create was invoked, yet revoked it: {}",
                    describe(&events[i], t0)
                ),
            );
        }
        let ctx = Ctx {
            policy,
            deadline_ns: s.deadline_ms.map(ms),
        };
        jobs.push((s.id.clone(), ops, ctx));
    }

    // Sessions are independent: search them on all cores.
    let results = run_parallel(&jobs, |(_, ops, ctx)| {
        check_session(events, ops, ctx, budget.max_states_per_session, t0)
    });
    for ((id, _, _), r) in jobs.iter().zip(results) {
        match r {
            Some(SessionVerdict::Pass) => {}
            Some(SessionVerdict::Unknown) | None => report.unknown.push(id.clone()),
            Some(SessionVerdict::Fail(d)) => {
                findings.add(ViolationKind::NotLinearizable, Some(id), d)
            }
        }
    }
    report.violations.extend(findings.into_violations());
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// Map `f` over `items` on a few threads, keeping order. `None` where `f` panicked (a bug of
/// the checker: the session is then reported unknown rather than taking the report down).
fn run_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<Option<R>> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let f = |t: &T| catch_unwind(AssertUnwindSafe(|| f(t))).ok();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len())
        .max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut o) = out.lock() {
                    o[i] = r;
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_default();
    out.resize_with(items.len(), || None);
    out
}
