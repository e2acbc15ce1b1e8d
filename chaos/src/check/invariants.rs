//! Direct checks of the properties docs/semantics.md §11 promises, each reported under its own kind so a
//! failure says what went wrong in the application's terms (a linearizability failure alone
//! says only that no order explains the history). They overlap the search on purpose, and
//! they are deliberately conservative: each flags only what no legal execution can produce.

use super::split::SessionEvents;
use super::{describe, Violation, ViolationKind};
use crate::history::{error, op, Event, Outcome};
use std::collections::{HashMap, HashSet};

/// The policy in harness nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub grace_ns: u64,
    pub min_interval_ns: u64,
    pub skew_ns: u64,
    /// How old a state a STALE read may return (plus the skew, for message delays).
    pub stale_bound_ns: u64,
    /// The history's first invoke, for readable relative times.
    pub t0: u64,
}

/// Collects offenders per (kind, session) and reports the first of each with a count, so a
/// single bug does not bury the report.
#[derive(Default)]
pub struct Findings {
    found: Vec<(ViolationKind, Option<String>, String, usize)>,
}

impl Findings {
    pub fn add(&mut self, kind: ViolationKind, session: Option<&str>, detail: String) {
        let session = session.map(str::to_string);
        if let Some(f) = self
            .found
            .iter_mut()
            .find(|f| f.0 == kind && f.1 == session)
        {
            f.3 += 1;
            return;
        }
        self.found.push((kind, session, detail, 1));
    }

    pub fn into_violations(self) -> Vec<Violation> {
        self.found
            .into_iter()
            .map(|(kind, session, detail, n)| Violation {
                kind,
                session,
                detail: if n > 1 {
                    format!("{detail} (and {} more like it)", n - 1)
                } else {
                    detail
                },
            })
            .collect()
    }
}

fn is_stale(e: &Event) -> bool {
    e.args.consistency.as_deref() == Some("stale")
}

/// At most one successor per token, and no token issued to two sessions.
pub fn forks(events: &[Event], usable: &[bool], t: &Times, out: &mut Findings) {
    let mut successor: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut owner: HashMap<&str, (&str, usize)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if !usable[i] || e.result != Outcome::Ok {
            continue;
        }
        if e.op != op::CREATE && e.op != op::ROTATE {
            continue;
        }
        let Some(new) = e.value.token.as_deref() else {
            continue;
        };
        if let Some(sid) = e.session.as_deref() {
            match owner.get(new) {
                Some(&(other, j)) if other != sid => out.add(
                    ViolationKind::Fork,
                    Some(sid),
                    format!(
                        "token {new} issued to two sessions ({other} and {sid}): {} / {}",
                        describe(&events[j], t.t0),
                        describe(e, t.t0)
                    ),
                ),
                Some(_) => {}
                None => {
                    owner.insert(new, (sid, i));
                }
            }
        }
        if e.op != op::ROTATE {
            continue;
        }
        let Some(old) = e.args.token.as_deref() else {
            continue;
        };
        if old == new {
            continue;
        }
        match successor.get(old) {
            Some(&(other, j)) if other != new => out.add(
                ViolationKind::Fork,
                e.session.as_deref(),
                format!(
                    "token {old} has two successors, {other} and {new}: {} / {}",
                    describe(&events[j], t.t0),
                    describe(e, t.t0)
                ),
            ),
            Some(_) => {}
            None => {
                successor.insert(old, (new, i));
            }
        }
    }
}

/// A request id answered for two different sessions (exactly-once broken across sessions,
/// which the per-session search cannot see).
pub fn request_ids(events: &[Event], usable: &[bool], t: &Times, out: &mut Findings) {
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if !usable[i] || e.result != Outcome::Ok || e.op == op::REVOKE_USER {
            continue;
        }
        let (Some(rid), Some(sid)) = (e.args.request_id.as_deref(), e.session.as_deref()) else {
            continue;
        };
        match seen.get(rid) {
            Some(&(other, j)) if other != sid => out.add(
                ViolationKind::NotLinearizable,
                Some(sid),
                format!(
                    "request id {rid} answered for sessions {other} and {sid}: {} / {}",
                    describe(&events[j], t.t0),
                    describe(e, t.t0)
                ),
            ),
            Some(_) => {}
            None => {
                seen.insert(rid, (sid, i));
            }
        }
    }
}

/// What the direct per-session checks need.
pub struct View<'a> {
    pub s: &'a SessionEvents,
    pub events: &'a [Event],
    pub t: Times,
}

impl View<'_> {
    fn own(&self) -> impl Iterator<Item = &Event> + '_ {
        self.s.own.iter().map(|&i| &self.events[i])
    }

    fn user_wide(&self) -> impl Iterator<Item = &Event> + '_ {
        self.s.user_wide.iter().map(|&i| &self.events[i])
    }

    fn lists_me(&self, e: &Event) -> bool {
        e.value
            .revoked_ids
            .as_ref()
            .is_some_and(|ids| ids.contains(&self.s.id))
    }

    /// Whether `e` is a retry of a request first sent earlier: the store answers it with the
    /// first answer, whatever happened since.
    fn is_replay(&self, e: &Event) -> bool {
        let Some(rid) = e.args.request_id.as_deref() else {
            return false;
        };
        self.own()
            .chain(self.user_wide())
            .any(|o| o.invoke_ns < e.invoke_ns && o.args.request_id.as_deref() == Some(rid))
    }

    /// When the first acknowledged revocation covering this session completed.
    fn revoked_ack(&self) -> Option<u64> {
        let own = self
            .own()
            .filter(|e| e.op == op::REVOKE && e.result == Outcome::Ok)
            .map(|e| e.complete_ns);
        let wide = self
            .user_wide()
            .filter(|e| e.result == Outcome::Ok && self.lists_me(e))
            .map(|e| e.complete_ns);
        own.chain(wide).min()
    }

    fn deadline_ns(&self) -> Option<u64> {
        self.s.deadline_ms.map(|d| d.saturating_mul(1_000_000))
    }

    fn d(&self, e: &Event) -> String {
        describe(e, self.t.t0)
    }

    fn sid(&self) -> Option<&str> {
        Some(self.s.id.as_str())
    }
}

/// After an acknowledged logout, nothing invoked later on the session succeeds; a STALE
/// read may still return the state from before it, but only within the stale-read bound.
pub fn resurrection(v: &View, out: &mut Findings) {
    let Some(t) = v.revoked_ack() else { return };
    let stale_until = t
        .saturating_add(v.t.stale_bound_ns)
        .saturating_add(v.t.skew_ns);
    let offends = |e: &Event| {
        if e.result != Outcome::Ok || e.invoke_ns <= t || v.is_replay(e) {
            return false;
        }
        if is_stale(e) && e.invoke_ns <= stale_until {
            return false;
        }
        match e.op.as_str() {
            op::GET | op::ROTATE | op::UPDATE | op::CREATE => true,
            op::REVOKE => e.value.already_revoked == Some(false),
            op::REVOKE_USER => v.lists_me(e),
            _ => false,
        }
    };
    for e in v.own().chain(v.user_wide()) {
        if offends(e) {
            out.add(
                ViolationKind::Resurrection,
                v.sid(),
                format!(
                    "succeeded after a logout acknowledged at +{:.1}ms: {}",
                    ms(t, v.t.t0),
                    v.d(e)
                ),
            );
        }
    }
}

/// An ok answer (any consistency) to a request made after the absolute deadline.
pub fn served_after_expiry(v: &View, out: &mut Findings) {
    let Some(d) = v.deadline_ns() else { return };
    let limit = d.saturating_add(v.t.skew_ns);
    for e in v.own() {
        let served = matches!(
            e.op.as_str(),
            op::GET | op::ROTATE | op::UPDATE | op::CREATE
        );
        if served && e.result == Outcome::Ok && e.invoke_ns > limit && !v.is_replay(e) {
            out.add(
                ViolationKind::ServedAfterExpiry,
                v.sid(),
                format!(
                    "deadline +{:.1}ms (+{}ms skew), yet served: {}",
                    ms(d, v.t.t0),
                    v.t.skew_ns / 1_000_000,
                    v.d(e)
                ),
            );
        }
    }
}

/// The final reads reflect every acknowledged mutation.
pub fn lost_writes(v: &View, out: &mut Findings) {
    for f in v.own().filter(|e| e.args.final_read && e.op == op::GET) {
        let before = |e: &&Event| e.complete_ns < f.invoke_ns && !e.args.final_read;
        let acked: Vec<&Event> = v
            .own()
            .filter(before)
            .filter(|e| e.result == Outcome::Ok)
            .collect();
        let max_version = acked
            .iter()
            .filter_map(|e| e.value.version)
            .chain(
                v.own()
                    .filter(before)
                    .filter(|e| e.value.error.as_deref() == Some(error::VERSION_CONFLICT))
                    .filter_map(|e| e.value.current_version),
            )
            .max();
        let max_gen = acked.iter().filter_map(|e| e.value.generation).max();
        let created = acked.iter().any(|e| e.op == op::CREATE);
        let logged_out = v.revoked_ack().is_some_and(|t| t < f.invoke_ns);
        match f.result {
            Outcome::Ok => {
                if logged_out {
                    out.add(
                        ViolationKind::LostWrite,
                        v.sid(),
                        format!(
                            "final read succeeds after an acknowledged logout: {}",
                            v.d(f)
                        ),
                    );
                }
                if let (Some(m), Some(got)) = (max_version, f.value.version) {
                    if got < m {
                        out.add(
                            ViolationKind::LostWrite,
                            v.sid(),
                            format!(
                                "final read shows version {got}, but version {m} was acknowledged: {}",
                                v.d(f)
                            ),
                        );
                    }
                }
                if let (Some(m), Some(got)) = (max_gen, f.value.generation) {
                    if got < m {
                        out.add(
                            ViolationKind::LostWrite,
                            v.sid(),
                            format!(
                                "final read shows generation {got}, but generation {m} was acknowledged: {}",
                                v.d(f)
                            ),
                        );
                    }
                }
            }
            Outcome::Fail => {
                let not_found = f.value.error.as_deref() == Some(error::NOT_FOUND);
                let alive = v
                    .deadline_ns()
                    .is_some_and(|d| f.complete_ns < d.saturating_sub(v.t.skew_ns));
                if not_found && created && alive {
                    out.add(
                        ViolationKind::LostWrite,
                        v.sid(),
                        format!(
                            "final read finds no session, yet its create was acknowledged and it has not expired: {}",
                            v.d(f)
                        ),
                    );
                }
            }
            Outcome::Info => {}
        }
    }
}

/// A client that follows the protocol is never logged out by a race: REVOKED or
/// TOKEN_REUSED with no logout and no replay in sight, for a token that cannot yet have
/// become reused.
pub fn spurious_logouts(v: &View, out: &mut Findings) {
    let t = &v.t;
    let settle = t.grace_ns.min(t.min_interval_ns);
    let issued: HashSet<&str> = v
        .own()
        .filter(|e| e.result == Outcome::Ok && (e.op == op::CREATE || e.op == op::ROTATE))
        .filter_map(|e| e.value.token.as_deref())
        .collect();
    // When each token may first have been rotated away: the earliest rotation presenting it
    // that may have rotated (only a rotation of the current token retires it).
    let mut retired_from: HashMap<&str, u64> = HashMap::new();
    for e in v.own().filter(|e| e.op == op::ROTATE) {
        let Some(tok) = e.args.token.as_deref() else {
            continue;
        };
        let may_rotate = match e.result {
            Outcome::Info => true,
            Outcome::Ok => e.value.token.as_deref() != Some(tok),
            Outcome::Fail => false,
        };
        if may_rotate {
            let r = retired_from.entry(tok).or_insert(e.invoke_ns);
            *r = (*r).min(e.invoke_ns);
        }
    }
    // Whether `tok` may be reused at harness time `at` (the store's clock may lead by skew,
    // and the rotation's own stamp may lag its invoke by skew).
    let may_be_reused = |tok: &str, at: u64| {
        !issued.contains(tok)
            || retired_from
                .get(tok)
                .is_some_and(|&r| at.saturating_add(2 * t.skew_ns) >= r.saturating_add(settle))
    };
    let first_logout = v
        .own()
        .filter(|e| e.op == op::REVOKE)
        .chain(v.user_wide())
        .map(|e| e.invoke_ns)
        .min();
    let first_replay = v.own().filter(|e| e.args.replay).map(|e| e.invoke_ns).min();
    for e in v.own() {
        if e.result != Outcome::Fail || e.args.replay {
            continue;
        }
        let code = e.value.error.as_deref();
        if code != Some(error::REVOKED) && code != Some(error::TOKEN_REUSED) {
            continue;
        }
        if first_logout.is_some_and(|x| x <= e.complete_ns)
            || first_replay.is_some_and(|x| x <= e.complete_ns)
        {
            continue;
        }
        let why = if code == Some(error::TOKEN_REUSED) {
            let Some(tok) = e.args.token.as_deref() else {
                continue;
            };
            if may_be_reused(tok, e.complete_ns) {
                continue;
            }
            format!(
                "token {tok} refused as reused though no rotation could have retired it{}",
                match retired_from.get(tok) {
                    Some(&r) => format!(
                        " long enough before (first rotation of it invoked at +{:.1}ms)",
                        ms(r, t.t0)
                    ),
                    None => String::new(),
                }
            )
        } else {
            match e.value.reason.as_deref() {
                Some("evicted") => continue,
                Some("reuse_detected") => {
                    let trigger = v.own().any(|y| {
                        y.invoke_ns <= e.complete_ns
                            && y.args.token.as_deref().is_some_and(|tok| {
                                let end = if y.result == Outcome::Info {
                                    e.complete_ns
                                } else {
                                    y.complete_ns.min(e.complete_ns)
                                };
                                may_be_reused(tok, end)
                            })
                    });
                    if trigger {
                        continue;
                    }
                    "revoked for reuse, but no request presented a token that could be reused"
                        .to_string()
                }
                _ => "revoked, but no logout was requested".to_string(),
            }
        };
        out.add(
            ViolationKind::SpuriousLogout,
            v.sid(),
            format!("{why}: {}", v.d(e)),
        );
    }
}

fn ms(ns: u64, t0: u64) -> f64 {
    (ns as f64 - t0 as f64) / 1e6
}
