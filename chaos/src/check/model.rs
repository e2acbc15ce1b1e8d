//! The sequential model of one session (docs/semantics.md), written afresh from the design and
//! apart from the node's state machine, so that a misreading shared by both cannot pass.
//!
//! The model is nondeterministic where the history cannot decide: an operation near a time
//! boundary (grace window, rotation interval, absolute deadline) may take either side within
//! the clock-skew band, a token never seen in an answer may be any generation whose token the
//! history never revealed, and an `info` operation may produce any answer. [`step`] therefore
//! returns every possible (answer, next state) pair; [`fit`] keeps those matching what the
//! client observed.

use crate::history::Outcome;

/// Marks an interned token or data fingerprint the history never revealed.
pub const UNKNOWN: u32 = u32::MAX;

/// Generations older than this many behind the current one may have been forgotten by the
/// store (it keeps at least 64 retired hashes), so they may answer NOT_FOUND instead of
/// TOKEN_REUSED.
const RETIRED_KEPT: u32 = 64;

/// The operations the model knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Create,
    Get,
    Rotate,
    Update,
    Revoke,
    RevokeUser,
}

impl Kind {
    /// The history's name of the operation.
    pub fn parse(op: &str) -> Option<Kind> {
        use crate::history::op;
        Some(match op {
            op::CREATE => Kind::Create,
            op::GET => Kind::Get,
            op::ROTATE => Kind::Rotate,
            op::UPDATE => Kind::Update,
            op::REVOKE => Kind::Revoke,
            op::REVOKE_USER => Kind::RevokeUser,
            _ => return None,
        })
    }
}

/// Why a session was revoked, as far as the checker can tell reasons apart (client-given
/// reasons such as "logout" are free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Client,
    Reuse,
    Evicted,
}

impl Cause {
    /// Classify a recorded revocation reason.
    pub fn parse(reason: &str) -> Cause {
        match reason {
            "reuse_detected" => Cause::Reuse,
            "evicted" => Cause::Evicted,
            _ => Cause::Client,
        }
    }
}

/// Where the session is in its life (expiry is tracked separately, see [`State::expired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    NotCreated,
    Live,
    Revoked(Cause),
}

/// A definite refusal the model can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fail {
    NotFound,
    Expired,
    Revoked(Cause),
    TokenReused,
    VersionConflict(u64),
}

/// An answer of the model. Tokens are named by generation slot (see [`State::tokens`]), so
/// an answer remembered for a dedup replay refers to a token the history may reveal later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ans {
    /// A session record (create, get, rotate, update).
    Record {
        gen: u32,
        version: u64,
        data: u32,
        token: Option<u32>,
        superseded: Option<bool>,
        rotated: Option<bool>,
    },
    /// revoke ok; `already: None` = either (a revoke past the deadline).
    Revoked {
        already: Option<bool>,
    },
    /// revoke_user ok: whether this session is among the ids revoked.
    Listed(bool),
    Fail(Fail),
}

/// A request id's remembered answer. A refusal may have come from a check in front of the
/// log (never remembered), so a replay of a refused request may also be evaluated afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stored {
    pub rid: u32,
    pub ans: Ans,
    pub may_redo: bool,
}

/// The state of one session, hashable for the search's memo. Times are harness nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub phase: Phase,
    /// Some operation already observed the session past its absolute deadline; time only
    /// moves forward, so every later one must too.
    pub expired: bool,
    pub gen: u32,
    pub version: u64,
    pub data: u32,
    /// Token of each generation (interned fingerprint or [`UNKNOWN`]).
    pub tokens: Vec<u32>,
    /// Bounds of the time of the last rotation (which retired generation `gen - 1`).
    pub last_rot: Option<(u64, u64)>,
    /// Remembered answers, only for request ids that occur more than once in the session's
    /// history (others can never be replayed), sorted by id.
    pub dedup: Vec<Stored>,
}

impl State {
    /// Before the session's create.
    pub fn initial() -> State {
        State {
            phase: Phase::NotCreated,
            expired: false,
            gen: 0,
            version: 0,
            data: UNKNOWN,
            tokens: Vec::new(),
            last_rot: None,
            dedup: Vec::new(),
        }
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        let phase = match self.phase {
            Phase::NotCreated => "not created".to_string(),
            Phase::Live => "live".to_string(),
            Phase::Revoked(c) => format!("revoked ({c:?})"),
        };
        format!(
            "{phase}{}, generation {}, version {}",
            if self.expired { ", expired" } else { "" },
            self.gen,
            self.version
        )
    }

    fn remember(&mut self, rid: u32, ans: Ans) {
        self.dedup.retain(|d| d.rid != rid);
        let at = self.dedup.partition_point(|d| d.rid < rid);
        self.dedup.insert(
            at,
            Stored {
                rid,
                ans,
                may_redo: matches!(ans, Ans::Fail(_)),
            },
        );
    }
}

/// The run's policy in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub grace_ns: u64,
    pub min_interval_ns: u64,
    pub skew_ns: u64,
    pub revoke_on_reuse: bool,
}

/// What the model needs besides the state: the policy and the session's absolute deadline.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub policy: Policy,
    pub deadline_ns: Option<u64>,
}

/// The error code a client observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsErr {
    NotFound,
    Expired,
    Revoked,
    TokenReused,
    VersionConflict,
    /// INVALID_ARGUMENT, RESOURCE_EXHAUSTED: refusals the model does not judge.
    Other,
}

impl ObsErr {
    /// Parse a recorded error code; `None` for codes the history format does not define.
    pub fn parse(code: &str) -> Option<ObsErr> {
        use crate::history::error;
        Some(match code {
            error::NOT_FOUND => ObsErr::NotFound,
            error::EXPIRED => ObsErr::Expired,
            error::REVOKED => ObsErr::Revoked,
            error::TOKEN_REUSED => ObsErr::TokenReused,
            error::VERSION_CONFLICT => ObsErr::VersionConflict,
            error::INVALID_ARGUMENT | error::RESOURCE_EXHAUSTED => ObsErr::Other,
            _ => return None,
        })
    }
}

/// What the client observed, with fingerprints interned. `None` = not recorded (compared
/// leniently; a missing required field is reported as malformed elsewhere).
#[derive(Debug, Clone, Default)]
pub struct Obs {
    pub token: Option<u32>,
    pub gen: Option<u64>,
    pub version: Option<u64>,
    pub data: Option<u32>,
    pub superseded: Option<bool>,
    pub rotated: Option<bool>,
    pub already: Option<bool>,
    pub listed: Option<bool>,
    pub error: Option<ObsErr>,
    pub reason: Option<Cause>,
    pub current_version: Option<u64>,
}

/// One operation of a session's sub-history, ready for the model.
#[derive(Debug, Clone)]
pub struct MOp {
    /// Index of the event in the history.
    pub ev: usize,
    pub kind: Kind,
    pub invoke: u64,
    /// `u64::MAX` for `info` operations (they may take effect at any later time).
    pub complete: u64,
    pub outcome: Outcome,
    /// The presented token (interned), unless the op names its session by id.
    pub token: Option<u32>,
    pub by_id: bool,
    pub expected: u64,
    pub data: u32,
    /// The request id, only when another op of this sub-history shares it.
    pub rid: Option<u32>,
    /// revoke_user: this session is the one spared.
    pub except_self: bool,
    pub obs: Obs,
}

impl MOp {
    /// Whether the op must be linearized (ok and fail ops) or may be left out (info).
    pub fn definite(&self) -> bool {
        self.outcome != Outcome::Info
    }
}

/// Where a presented token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotMine,
    Current,
    Previous,
    Older(u32),
}

/// Every way `tok` may relate to the session: as a known generation, or bound to one whose
/// token was never revealed (the state returned then records the binding), or not at all.
fn classify(s: &State, tok: u32) -> Vec<(Class, Option<State>)> {
    let class_of = |g: u32| {
        if g == s.gen {
            Class::Current
        } else if g.checked_add(1) == Some(s.gen) {
            Class::Previous
        } else {
            Class::Older(g)
        }
    };
    if let Some(g) = s.tokens.iter().position(|&t| t == tok) {
        return vec![(class_of(g as u32), None)];
    }
    let mut v = vec![(Class::NotMine, None)];
    for (g, &t) in s.tokens.iter().enumerate() {
        if t == UNKNOWN {
            let mut st = s.clone();
            st.tokens[g] = tok;
            v.push((class_of(g as u32), Some(st)));
        }
    }
    v
}

/// Every (answer, next state) the op may produce in `s` when applied at a log time within
/// `[a, b]` (harness ns; the clock-skew band is applied here). Dedup replays come first.
pub fn step(ctx: &Ctx, s: &State, op: &MOp, a: u64, b: u64, out: &mut Vec<(Ans, State)>) {
    out.clear();
    if let Some(rid) = op.rid {
        if let Some(st) = s.dedup.iter().find(|d| d.rid == rid) {
            out.push((st.ans, s.clone()));
            if !st.may_redo {
                return;
            }
        }
    }
    let mut fresh = Vec::new();
    evaluate(ctx, s, op, a, b, &mut fresh);
    for (ans, mut st) in fresh {
        if let Some(rid) = op.rid {
            st.remember(rid, ans);
        }
        out.push((ans, st));
    }
}

fn evaluate(ctx: &Ctx, s: &State, op: &MOp, a: u64, b: u64, out: &mut Vec<(Ans, State)>) {
    let p = &ctx.policy;
    let skew = p.skew_ns;
    if s.phase == Phase::NotCreated {
        match op.kind {
            Kind::Create => {
                let st = State {
                    phase: Phase::Live,
                    expired: false,
                    gen: 0,
                    version: 1,
                    data: op.data,
                    tokens: vec![UNKNOWN],
                    last_rot: None,
                    dedup: s.dedup.clone(),
                };
                out.push((record(&st, Some(0), None, None), st));
            }
            Kind::RevokeUser => out.push((Ans::Listed(false), s.clone())),
            _ => out.push((Ans::Fail(Fail::NotFound), s.clone())),
        }
        return;
    }
    let may_expired = s.expired || ctx.deadline_ns.is_none_or(|d| b.saturating_add(skew) >= d);
    let may_live = !s.expired && ctx.deadline_ns.is_none_or(|d| a.saturating_sub(skew) < d);
    if may_expired {
        expired(s, op, out);
    }
    if !may_live {
        return;
    }
    if let Phase::Revoked(cause) = s.phase {
        revoked(ctx, s, op, cause, b, out);
        return;
    }
    // Live.
    match op.kind {
        Kind::Create => return,
        Kind::RevokeUser => {
            if op.except_self {
                out.push((Ans::Listed(false), s.clone()));
            } else {
                let mut st = s.clone();
                st.phase = Phase::Revoked(Cause::Client);
                out.push((Ans::Listed(true), st));
            }
            return;
        }
        _ => {}
    }
    if op.outcome == Outcome::Fail
        && op.obs.error == Some(ObsErr::Revoked)
        && op.obs.reason == Some(Cause::Evicted)
    {
        // The per-user cap evicted it at some point (not modelled otherwise).
        let mut st = s.clone();
        st.phase = Phase::Revoked(Cause::Evicted);
        out.push((Ans::Fail(Fail::Revoked(Cause::Evicted)), st));
    }
    if op.by_id {
        accept(ctx, s, op, false, a, b, out);
        return;
    }
    let Some(tok) = op.token else { return };
    for (class, bound) in classify(s, tok) {
        let st = bound.as_ref().unwrap_or(s);
        match class {
            Class::NotMine => out.push((Ans::Fail(Fail::NotFound), st.clone())),
            Class::Current => accept(ctx, st, op, false, a, b, out),
            Class::Previous => {
                let (ra, rb) = st.last_rot.unwrap_or((0, u64::MAX));
                if a.saturating_sub(skew) < rb.saturating_add(p.grace_ns) {
                    accept(ctx, st, op, true, a, b, out);
                }
                if b.saturating_add(skew) >= ra.saturating_add(p.grace_ns) {
                    reused(ctx, st, out);
                }
            }
            Class::Older(g) => {
                reused(ctx, st, out);
                if g.saturating_add(RETIRED_KEPT) < st.gen {
                    out.push((Ans::Fail(Fail::NotFound), st.clone()));
                }
            }
        }
    }
}

/// The session record as an answer.
fn record(s: &State, token: Option<u32>, superseded: Option<bool>, rotated: Option<bool>) -> Ans {
    Ans::Record {
        gen: s.gen,
        version: s.version,
        data: s.data,
        token,
        superseded,
        rotated,
    }
}

/// Past the absolute deadline: the session is gone (EXPIRED until swept, NOT_FOUND after; a
/// tombstone answers REVOKED until swept). A revoke may answer anything.
fn expired(s: &State, op: &MOp, out: &mut Vec<(Ans, State)>) {
    let mut st = s.clone();
    st.expired = true;
    let revoked = match s.phase {
        Phase::Revoked(c) => Some(c),
        _ => None,
    };
    // A revocation of an expired but not yet swept record still leaves a tombstone.
    let mut tombstoned = st.clone();
    if revoked.is_none() {
        tombstoned.phase = Phase::Revoked(Cause::Client);
    }
    let mut push = |a: Ans| out.push((a, st.clone()));
    match op.kind {
        Kind::Create => {}
        Kind::Get | Kind::Rotate | Kind::Update => {
            push(Ans::Fail(Fail::Expired));
            push(Ans::Fail(Fail::NotFound));
            if let Some(c) = revoked {
                push(Ans::Fail(Fail::Revoked(c)));
            }
        }
        Kind::Revoke => {
            push(Ans::Revoked { already: None });
            push(Ans::Fail(Fail::Expired));
            push(Ans::Fail(Fail::NotFound));
            push(Ans::Fail(Fail::TokenReused));
            if let Some(c) = revoked {
                push(Ans::Fail(Fail::Revoked(c)));
            } else {
                out.push((Ans::Revoked { already: None }, tombstoned));
            }
        }
        Kind::RevokeUser => {
            push(Ans::Listed(false));
            if revoked.is_none() && !op.except_self {
                out.push((Ans::Listed(true), tombstoned));
            }
        }
    }
}

/// A revoked (tombstoned) session before its deadline: every token of it answers REVOKED;
/// a revoke is idempotent.
fn revoked(ctx: &Ctx, s: &State, op: &MOp, cause: Cause, b: u64, out: &mut Vec<(Ans, State)>) {
    let hit = match op.kind {
        Kind::Create => return,
        Kind::RevokeUser => {
            out.push((Ans::Listed(false), s.clone()));
            return;
        }
        Kind::Revoke => Ans::Revoked {
            already: Some(true),
        },
        _ => Ans::Fail(Fail::Revoked(cause)),
    };
    if op.by_id {
        out.push((hit, s.clone()));
        return;
    }
    let Some(tok) = op.token else { return };
    for (class, bound) in classify(s, tok) {
        let st = bound.unwrap_or_else(|| s.clone());
        match class {
            Class::NotMine => out.push((Ans::Fail(Fail::NotFound), st)),
            _ => {
                // A get that found its token reused reports it through a separate log entry;
                // a revocation may land in between, and the get still answers TOKEN_REUSED.
                let maybe_reused = match class {
                    Class::Older(_) => true,
                    Class::Previous => st.last_rot.is_none_or(|(ra, _)| {
                        b.saturating_add(ctx.policy.skew_ns)
                            >= ra.saturating_add(ctx.policy.grace_ns)
                    }),
                    _ => false,
                };
                if op.kind == Kind::Get && maybe_reused {
                    out.push((Ans::Fail(Fail::TokenReused), st.clone()));
                }
                out.push((hit, st));
            }
        }
    }
}

/// A reused token: refused, and under the `revoke` policy the session is revoked with it.
fn reused(ctx: &Ctx, s: &State, out: &mut Vec<(Ans, State)>) {
    let mut st = s.clone();
    if ctx.policy.revoke_on_reuse {
        st.phase = Phase::Revoked(Cause::Reuse);
    }
    out.push((Ans::Fail(Fail::TokenReused), st));
}

/// An accepted token (or a live id) on a live session.
fn accept(
    ctx: &Ctx,
    s: &State,
    op: &MOp,
    superseded: bool,
    a: u64,
    b: u64,
    out: &mut Vec<(Ans, State)>,
) {
    let p = &ctx.policy;
    match op.kind {
        Kind::Create | Kind::RevokeUser => {}
        Kind::Get => out.push((record(s, None, Some(superseded), None), s.clone())),
        Kind::Rotate => {
            if superseded {
                // Idempotent rotation: the successor the first rotation produced.
                out.push((record(s, Some(s.gen), None, Some(true)), s.clone()));
                return;
            }
            let may_rotate = s.last_rot.is_none_or(|(ta, _)| {
                b.saturating_add(p.skew_ns) >= ta.saturating_add(p.min_interval_ns)
            });
            let may_keep = s.last_rot.is_some_and(|(_, tb)| {
                a.saturating_sub(p.skew_ns) < tb.saturating_add(p.min_interval_ns)
            });
            if may_keep {
                out.push((record(s, Some(s.gen), None, Some(false)), s.clone()));
            }
            if may_rotate {
                let mut st = s.clone();
                st.gen = st.gen.saturating_add(1);
                st.version = st.version.saturating_add(1);
                st.tokens.push(UNKNOWN);
                st.last_rot = Some((a, b));
                out.push((record(&st, Some(st.gen), None, Some(true)), st));
            }
        }
        Kind::Update => {
            if op.expected != 0 && op.expected != s.version {
                out.push((Ans::Fail(Fail::VersionConflict(s.version)), s.clone()));
            } else {
                let mut st = s.clone();
                st.version = st.version.saturating_add(1);
                st.data = op.data;
                out.push((record(&st, None, None, None), st));
            }
        }
        Kind::Revoke => {
            let mut st = s.clone();
            st.phase = Phase::Revoked(Cause::Client);
            out.push((
                Ans::Revoked {
                    already: Some(false),
                },
                st,
            ));
        }
    }
}

/// Bind generation `slot` to the observed token `tok`, or check it is already that token.
fn bind(st: &mut State, slot: u32, tok: u32) -> bool {
    let Some(&have) = st.tokens.get(slot as usize) else {
        return false;
    };
    if have == tok {
        return true;
    }
    if have != UNKNOWN || st.tokens.contains(&tok) {
        return false;
    }
    st.tokens[slot as usize] = tok;
    true
}

fn agree<T: PartialEq>(model: Option<T>, seen: Option<T>) -> bool {
    match (model, seen) {
        (Some(m), Some(s)) => m == s,
        _ => true,
    }
}

/// Whether the model's answer is what the client observed; binds revealed tokens in `st`.
/// Every answer fits an `info` op.
pub fn fit(op: &MOp, ans: &Ans, st: &mut State) -> bool {
    let o = &op.obs;
    match op.outcome {
        Outcome::Info => true,
        Outcome::Ok => match *ans {
            Ans::Record {
                gen,
                version,
                data,
                token,
                superseded,
                rotated,
            } => {
                if !matches!(
                    op.kind,
                    Kind::Create | Kind::Get | Kind::Rotate | Kind::Update
                ) {
                    return false;
                }
                let data_ok = data == UNKNOWN || o.data.is_none_or(|d| d == data);
                if !(agree(Some(gen as u64), o.gen)
                    && agree(Some(version), o.version)
                    && data_ok
                    && agree(superseded, o.superseded)
                    && agree(rotated, o.rotated))
                {
                    return false;
                }
                match (token, o.token) {
                    (Some(slot), Some(t)) => bind(st, slot, t),
                    _ => true,
                }
            }
            Ans::Revoked { already } => op.kind == Kind::Revoke && agree(already, o.already),
            Ans::Listed(l) => op.kind == Kind::RevokeUser && agree(Some(l), o.listed),
            Ans::Fail(_) => false,
        },
        Outcome::Fail => {
            let Ans::Fail(f) = *ans else { return false };
            let Some(e) = o.error else { return true };
            match (f, e) {
                (Fail::NotFound, ObsErr::NotFound)
                | (Fail::Expired, ObsErr::Expired)
                | (Fail::TokenReused, ObsErr::TokenReused) => true,
                (Fail::Revoked(c), ObsErr::Revoked) => agree(Some(c), o.reason),
                (Fail::VersionConflict(v), ObsErr::VersionConflict) => {
                    agree(Some(v), o.current_version)
                }
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ctx() -> Ctx {
        Ctx {
            policy: Policy {
                grace_ns: 1000 * MS,
                min_interval_ns: 1000 * MS,
                skew_ns: 100 * MS,
                revoke_on_reuse: true,
            },
            deadline_ns: Some(100_000 * MS),
        }
    }

    fn op(kind: Kind, token: Option<u32>, outcome: Outcome) -> MOp {
        MOp {
            ev: 0,
            kind,
            invoke: 0,
            complete: 0,
            outcome,
            token,
            by_id: false,
            expected: 0,
            data: 7,
            rid: None,
            except_self: false,
            obs: Obs::default(),
        }
    }

    fn created() -> State {
        let c = ctx();
        let mut out = Vec::new();
        step(
            &c,
            &State::initial(),
            &op(Kind::Create, None, Outcome::Info),
            0,
            10,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let mut s = out.remove(0).1;
        s.tokens[0] = 100;
        s
    }

    #[test]
    fn rotation_then_superseded_then_reused() {
        let c = ctx();
        let s = created();
        let mut out = Vec::new();
        step(
            &c,
            &s,
            &op(Kind::Rotate, Some(100), Outcome::Info),
            1000 * MS,
            1001 * MS,
            &mut out,
        );
        assert_eq!(out.len(), 1, "fresh session: exactly one rotation");
        let (_, s1) = out.remove(0);
        assert_eq!((s1.gen, s1.version), (1, 2));
        // Well inside the grace window: superseded, accepted.
        step(
            &c,
            &s1,
            &op(Kind::Get, Some(100), Outcome::Info),
            1200 * MS,
            1300 * MS,
            &mut out,
        );
        assert!(matches!(
            out[..],
            [(
                Ans::Record {
                    superseded: Some(true),
                    ..
                },
                _
            )]
        ));
        // Far past it: reused, and the session is revoked.
        step(
            &c,
            &s1,
            &op(Kind::Get, Some(100), Outcome::Info),
            5000 * MS,
            5001 * MS,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Ans::Fail(Fail::TokenReused));
        assert_eq!(out[0].1.phase, Phase::Revoked(Cause::Reuse));
        // At the boundary, within the skew band: both.
        step(
            &c,
            &s1,
            &op(Kind::Get, Some(100), Outcome::Info),
            2000 * MS,
            2001 * MS,
            &mut out,
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn rotation_interval_returns_same_token() {
        let c = ctx();
        let mut out = Vec::new();
        let s = created();
        step(
            &c,
            &s,
            &op(Kind::Rotate, Some(100), Outcome::Info),
            0,
            MS,
            &mut out,
        );
        let (_, mut s1) = out.remove(0);
        s1.tokens[1] = 101;
        step(
            &c,
            &s1,
            &op(Kind::Rotate, Some(101), Outcome::Info),
            300 * MS,
            400 * MS,
            &mut out,
        );
        assert!(matches!(
            out[..],
            [(
                Ans::Record {
                    rotated: Some(false),
                    gen: 1,
                    ..
                },
                _
            )]
        ));
    }

    #[test]
    fn unknown_token_may_bind_to_unrevealed_generation() {
        let c = ctx();
        let mut out = Vec::new();
        let s = created();
        step(
            &c,
            &s,
            &op(Kind::Rotate, Some(100), Outcome::Info),
            0,
            MS,
            &mut out,
        );
        let (_, s1) = out.remove(0);
        step(
            &c,
            &s1,
            &op(Kind::Get, Some(555), Outcome::Info),
            2 * MS,
            3 * MS,
            &mut out,
        );
        // Not this session's, or the unrevealed current token.
        assert_eq!(out.len(), 2);
        assert!(out.iter().any(|(_, st)| st.tokens[1] == 555));
    }

    #[test]
    fn replay_returns_first_answer() {
        let c = ctx();
        let mut out = Vec::new();
        let s = created();
        let mut upd = op(Kind::Update, Some(100), Outcome::Info);
        upd.rid = Some(9);
        step(&c, &s, &upd, 0, MS, &mut out);
        let (first, s1) = out.remove(0);
        upd.data = 8;
        step(&c, &s1, &upd, 2 * MS, 3 * MS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, first);
        assert_eq!(out[0].1, s1);
    }

    #[test]
    fn fit_binds_and_checks() {
        let s = created();
        let mut o = op(Kind::Get, Some(100), Outcome::Ok);
        o.obs.version = Some(2);
        let ans = record(&s, None, Some(false), None);
        let mut st = s.clone();
        assert!(!fit(&o, &ans, &mut st), "version 2 is not version 1");
        o.obs.version = Some(1);
        assert!(fit(&o, &ans, &mut st));
    }
}
