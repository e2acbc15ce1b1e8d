//! Target 6: random command sequences applied both by `sessiond_state::apply::apply_batch`
//! and by the model of docs/semantics.md in [`crate::model`], compared after every command
//! (answer), after every entry (the sessions, tombstones and remembered request ids, what a
//! `GetSession` of each known token answers) and checked with `invariants::check`.
//!
//! Values come from small pools, so request ids are retried and reused for other requests,
//! tokens are presented after rotation, revocation and expiry, and drawn ids and tokens
//! sometimes collide with existing ones. Times move by steps near the policy's windows (and
//! sometimes back); now and then a new leader's first entry dates a few entries before it as
//! committed late. An input whose first byte has its high bit set stands for a long run
//! ([`crate::input::expand`]): the random engine's inputs are short.

use crate::input::Source;
use crate::model::{Answer, By, Model, Op, Req, Tok};
use sessiond_state::apply::apply_batch;
use sessiond_state::codec::decode;
use sessiond_state::command::{Batch, Command, Target};
use sessiond_state::invariants;
use sessiond_state::kv::{Cf, KvRead, MemKv, Txn};
use sessiond_state::query;
use sessiond_state::record::{
    CapPolicy, Policy, ReusePolicy, SessionRecord, Tombstone, MIN_RETIRED_GENERATIONS,
};
use sessiond_state::token::SessionId;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The first entry's stamp.
const T0: u64 = 1_000_000;
/// Most entries per input.
const MAX_ENTRIES: usize = 300;
const USERS: [&str; 3] = ["ann", "bob", "cy"];
/// Most leader changes per input: the state machine need not remember more than a few
/// dozen late-commit ranges (§7 does not say how many), so the model is not asked to.
const MAX_LEADER_CHANGES: usize = 30;

/// One input: a policy, then entries of commands. Panics on the first disagreement, with
/// the history that led to it.
pub fn run(input: &[u8]) {
    trace(input);
}

/// [`run`], returning the commands and the answers both sides agreed on, in order.
pub fn trace(input: &[u8]) -> Vec<(Op, Answer)> {
    let input = crate::input::expand(
        input,
        256 + usize::from(input.get(9).copied().unwrap_or(0)) * 24,
    );
    let mut answers = Vec::new();
    let mut g = Gen::new(&input);
    let mut kv = MemKv::new();
    let mut model = Model::new();
    let mut history = String::new();
    let mut stamp = T0;
    let mut index = 0u64;
    let first = Op::Configure(g.policy());
    let mut entry = vec![first];
    loop {
        index += 1;
        let _ = writeln!(history, "entry {index} stamp {stamp}:");
        model.begin(index, stamp);
        let commands: Vec<Command> = entry.iter().map(command).collect();
        let batch = Batch {
            stamp_ms: stamp,
            commands,
        };
        let mut txn = Txn::new(&kv);
        let outcomes = match apply_batch(&mut txn, index, &batch) {
            Ok(o) => o,
            Err(e) => fail(&history, &format!("apply failed: {e}")),
        };
        let writes = txn.into_writes();
        for (op, outcome) in entry.iter().zip(&outcomes) {
            let _ = writeln!(history, "  {op:?}");
            let want = model.apply(op);
            let got = Answer::of(op, outcome);
            let _ = writeln!(history, "    -> {got:?}");
            if got != want {
                fail(
                    &history,
                    &format!("answers differ\n state machine: {got:?}\n model:         {want:?}"),
                );
            }
            g.learn(op, &want);
            answers.push((op.clone(), want));
        }
        kv.commit(&writes);
        compare_state(&kv, &model, &g.issued, &history);
        if g.src.is_empty() || index as usize >= MAX_ENTRIES {
            return answers;
        }
        stamp = g.next_stamp(stamp, &model.policy);
        entry = if g.leader_changes < MAX_LEADER_CHANGES && g.src.one_in(16) {
            // A new leader's first entry: it committed a few entries before it late.
            g.leader_changes += 1;
            let back = g.src.below(5) as u64;
            vec![Op::LeaderCommitted {
                from_index: (index + 1).saturating_sub(back),
            }]
        } else {
            g.entry(&model)
        };
    }
}

fn fail(history: &str, what: &str) -> ! {
    panic!("differential: {what}\nhistory:\n{history}");
}

/// The log command for an op.
pub fn command(op: &Op) -> Command {
    let target = |by: &By| match by {
        By::Token(t) => Target::Token(t.hash()),
        By::Id(id) => Target::Id(*id),
    };
    match op {
        Op::Configure(p) => Command::Configure { policy: p.clone() },
        Op::Create {
            req,
            id,
            token,
            user,
            data,
            attributes,
            idle,
            absolute,
        } => Command::Create {
            request_id: req.key(),
            id: *id,
            token_hash: token.hash(),
            sealed_token: req
                .request_id()
                .seal(&crate::model::seal_key(), id, &token.token()),
            user_id: user.clone(),
            data: data.clone(),
            attributes: attributes.clone(),
            idle_timeout_ms: *idle,
            absolute_timeout_ms: *absolute,
        },
        Op::Rotate {
            req,
            token,
            successor,
        } => Command::Rotate {
            request_id: req.key(),
            token_hash: token.hash(),
            new_token_hash: successor.hash(),
            sealed_successor: token.token().seal(&successor.token()),
        },
        Op::Update {
            req,
            by,
            expected_version,
            data,
            attributes,
        } => Command::Update {
            request_id: req.key(),
            target: target(by),
            expected_version: *expected_version,
            data: data.clone(),
            attributes: attributes.clone(),
        },
        Op::Touch { token } => Command::Touch {
            token_hash: token.hash(),
        },
        Op::Revoke { req, by, reason } => Command::Revoke {
            request_id: req.key(),
            target: target(by),
            reason: reason.clone(),
        },
        Op::RevokeUser {
            req,
            user,
            except,
            reason,
        } => Command::RevokeUser {
            request_id: req.key(),
            user_id: user.clone(),
            except: *except,
            reason: reason.clone(),
        },
        Op::ReportReuse { token } => Command::ReportReuse {
            token_hash: token.hash(),
        },
        Op::Expire { limit } => Command::Expire { limit: *limit },
        Op::LeaderCommitted { from_index } => Command::LeaderCommitted {
            from_index: *from_index,
        },
    }
}

/// The stored state against the model's, after an entry.
fn compare_state(kv: &MemKv, model: &Model, issued: &[Tok], history: &str) {
    match invariants::check(kv) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(history, &format!("invariant broken: {e}")),
        Err(e) => fail(history, &format!("invariant check failed: {e}")),
    }
    let all = |cf| {
        kv.scan(cf, &[], None, usize::MAX)
            .unwrap_or_else(|e| fail(history, &format!("scan: {e}")))
    };
    let mut sessions = BTreeMap::new();
    for (_, v) in all(Cf::Sessions) {
        let r: SessionRecord =
            decode(&v).unwrap_or_else(|e| fail(history, &format!("stored session: {e}")));
        sessions.insert(r.id, r);
    }
    let ids = |m: &BTreeMap<SessionId, _>| m.keys().copied().collect::<Vec<_>>();
    if ids(&sessions) != model.sessions.keys().copied().collect::<Vec<_>>() {
        fail(
            history,
            &format!(
                "sessions differ\n state machine: {:?}\n model:         {:?}",
                ids(&sessions),
                model.sessions.keys().collect::<Vec<_>>()
            ),
        );
    }
    for (id, r) in &sessions {
        let m = &model.sessions[id];
        let stored = (
            r.generation,
            r.version,
            r.last_active_at,
            r.expires_at(),
            r.token_hash,
            r.last_rotated_at,
            r.retired
                .iter()
                .map(|t| (t.generation, t.hash))
                .collect::<Vec<_>>(),
        );
        let modelled = (
            m.generation,
            m.version,
            m.last_active_at,
            m.expires_at(),
            m.token,
            m.last_rotated_at,
            m.retired
                .iter()
                .map(|t| (t.generation, t.token))
                .collect::<Vec<_>>(),
        );
        if stored != modelled {
            fail(
                history,
                &format!("session {id:?} differs\n state machine: {stored:?}\n model:         {modelled:?}"),
            );
        }
    }
    let mut tombstones = BTreeMap::new();
    for (_, v) in all(Cf::Tombstones) {
        let t: Tombstone =
            decode(&v).unwrap_or_else(|e| fail(history, &format!("stored tombstone: {e}")));
        tombstones.insert(t.id, t);
    }
    let stored: Vec<_> = tombstones
        .values()
        .map(|t| {
            let mut h = t.token_hashes.clone();
            h.sort();
            (t.id, t.reason.clone(), t.expires_at, h)
        })
        .collect();
    let modelled: Vec<_> = model
        .tombstones
        .iter()
        .map(|(id, t)| {
            let mut h = t.tokens.clone();
            h.sort();
            (*id, t.reason.clone(), t.expires_at, h)
        })
        .collect();
    if stored != modelled {
        fail(
            history,
            &format!("tombstones differ\n state machine: {stored:?}\n model:         {modelled:?}"),
        );
    }
    let dedup = all(Cf::Dedup).len();
    if dedup != model.dedup_rows() {
        fail(
            history,
            &format!(
                "remembered request ids differ: state machine {dedup}, model {}",
                model.dedup_rows()
            ),
        );
    }
    for t in issued.iter().rev().take(12) {
        let got = match query::by_token(kv, &t.hash(), model.now) {
            Ok(r) => r.map(|l| {
                (
                    sessiond_state::command::SessionView::from(&l.session),
                    l.superseded,
                    l.touch_due,
                )
            }),
            Err(e) => fail(history, &format!("lookup failed: {e}")),
        };
        let got = got.map_err(|e| Answer::of(&Op::Expire { limit: 0 }, &Err(e)));
        let want = model.get(&t.hash()).map_err(Answer::Refused);
        if got != want {
            fail(
                history,
                &format!(
                    "GetSession({t:?}) at {} differs\n state machine: {got:?}\n model:         {want:?}",
                    model.now
                ),
            );
        }
    }
}

/// Draws commands from the input.
struct Gen<'a> {
    src: Source<'a>,
    counter: u32,
    /// Tokens handed to the state machine so far (created or drawn as successors).
    issued: Vec<Tok>,
    ids: Vec<SessionId>,
    rids: Vec<[u8; 16]>,
    /// Mutations sent so far, for retries.
    sent: Vec<Op>,
    leader_changes: usize,
}

impl<'a> Gen<'a> {
    fn new(input: &'a [u8]) -> Self {
        Gen {
            src: Source::new(input),
            counter: 0,
            issued: Vec::new(),
            ids: Vec::new(),
            rids: Vec::new(),
            sent: Vec::new(),
            leader_changes: 0,
        }
    }

    fn fresh(&mut self, tag: u8) -> [u8; 32] {
        self.counter += 1;
        let mut b = [tag; 32];
        b[..4].copy_from_slice(&self.counter.to_le_bytes());
        b
    }

    fn fresh_token(&mut self) -> Tok {
        Tok(self.fresh(0x70))
    }

    /// A new token as the leader draws it: fresh, sometimes one already handed out.
    fn new_token(&mut self) -> Tok {
        if !self.issued.is_empty() && self.src.one_in(8) {
            return self.src.pick(&self.issued);
        }
        self.fresh_token()
    }

    /// A presented token: mostly one handed out before, sometimes one never seen.
    fn presented(&mut self) -> Tok {
        if self.issued.is_empty() || self.src.one_in(10) {
            return self.fresh_token();
        }
        // Recent tokens more often: they are the ones still valid.
        let n = self.issued.len();
        let back = if self.src.bool() {
            self.src.below(n.min(4))
        } else {
            self.src.below(n)
        };
        self.issued[n - 1 - back]
    }

    fn new_id(&mut self) -> SessionId {
        if !self.ids.is_empty() && self.src.one_in(12) {
            return self.src.pick(&self.ids);
        }
        let b = self.fresh(0x1d);
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[..16]);
        SessionId(id)
    }

    fn known_id(&mut self) -> SessionId {
        if self.ids.is_empty() || self.src.one_in(10) {
            return self.new_id();
        }
        let n = self.ids.len();
        let back = self.src.below(n.min(6));
        self.ids[n - 1 - back]
    }

    fn req(&mut self) -> Req {
        let principal = usize::from(self.src.one_in(8));
        let rid = if !self.rids.is_empty() && self.src.one_in(8) {
            self.src.pick(&self.rids)
        } else {
            let b = self.fresh(0x2e);
            let mut rid = [0u8; 16];
            rid.copy_from_slice(&b[..16]);
            self.rids.push(rid);
            rid
        };
        Req { principal, rid }
    }

    fn user(&mut self) -> String {
        match self.src.u8() % 48 {
            0 => String::new(),
            1 => "u".repeat(257),
            2 => "u".repeat(256),
            n => USERS[usize::from(n) % USERS.len()].to_string(),
        }
    }

    /// Session data: at most the policy's 8 bytes, sometimes one more.
    fn data(&mut self) -> Vec<u8> {
        self.src.bytes(9)
    }

    /// Attributes: mostly within the policy's 8 bytes, sometimes past them or with an
    /// empty name.
    fn attributes(&mut self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if self.src.bool() {
            return a;
        }
        for _ in 0..1 + self.src.below(2) {
            let k = match self.src.u8() % 12 {
                0 => "",
                1 => "theme",
                n if n % 2 == 0 => "k",
                _ => "l",
            };
            let v = self.src.pick(&["", "v", "dark", "v"]).to_string();
            a.insert(k.to_string(), v);
        }
        a
    }

    fn reason(&mut self) -> String {
        match self.src.u8() % 16 {
            0 => "r".repeat(129),
            1 => "r".repeat(128),
            2..=8 => String::new(),
            _ => "bye".to_string(),
        }
    }

    fn by(&mut self) -> By {
        if self.src.one_in(3) {
            By::Id(self.known_id())
        } else {
            By::Token(self.presented())
        }
    }

    fn timeout(&mut self, values: &[u64]) -> Option<u64> {
        if self.src.one_in(3) {
            Some(self.src.pick(values))
        } else {
            None
        }
    }

    /// A policy the state machine accepts, with windows of a few hundred milliseconds.
    fn policy(&mut self) -> Policy {
        let grace = self.src.pick(&[0, 100, 1_000]);
        let max = 20_000;
        Policy {
            grace_window_ms: grace,
            rotation_min_interval_ms: self.src.pick(&[0, grace / 2, grace, grace * 2]),
            reuse_policy: if self.src.one_in(3) {
                ReusePolicy::Reject
            } else {
                ReusePolicy::Revoke
            },
            retired_generations: MIN_RETIRED_GENERATIONS,
            max_sessions_per_user: self.src.pick(&[1, 2, 3, 1_000]),
            cap_policy: if self.src.one_in(3) {
                CapPolicy::Refuse
            } else {
                CapPolicy::EvictOldest
            },
            dedup_window_ms: self.src.pick(&[1, 500, 5_000]),
            default_idle_timeout_ms: self.src.pick(&[300, 2_000, max]),
            default_absolute_timeout_ms: self.src.pick(&[1_000, 6_000, max]),
            max_idle_timeout_ms: max,
            max_absolute_timeout_ms: max,
            max_data_bytes: 8,
            max_attributes_bytes: 8,
            touch_interval_ms: self.src.pick(&[None, Some(0), Some(50), Some(1_000)]),
        }
    }

    /// The next entry's stamp: a step near one of the policy's windows, sometimes back.
    fn next_stamp(&mut self, stamp: u64, p: &Policy) -> u64 {
        let steps = [
            0,
            1,
            2,
            p.grace_window_ms.saturating_sub(1),
            p.grace_window_ms,
            p.grace_window_ms + 1,
            p.rotation_min_interval_ms,
            p.default_idle_timeout_ms / 10,
            p.default_idle_timeout_ms,
            p.default_absolute_timeout_ms,
            p.dedup_window_ms,
            u64::from(self.src.u8()) * 16,
        ];
        // Half of the entries follow closely: sessions live for a few hundred milliseconds.
        let step = if self.src.bool() {
            u64::from(self.src.u8() % 8)
        } else {
            self.src.pick(&steps)
        };
        if self.src.one_in(12) {
            stamp.saturating_sub(step)
        } else {
            stamp + step
        }
    }

    /// One entry: usually one command, sometimes a few.
    fn entry(&mut self, model: &Model) -> Vec<Op> {
        let n = if self.src.one_in(4) {
            1 + self.src.below(4)
        } else {
            1
        };
        (0..n).map(|_| self.op(model)).collect()
    }

    fn op(&mut self, model: &Model) -> Op {
        let op = match self.src.u8() % 32 {
            0..=5 => Op::Create {
                req: self.req(),
                id: self.new_id(),
                token: self.new_token(),
                user: self.user(),
                data: self.data(),
                attributes: self.attributes(),
                idle: self.timeout(&[50, 500, 5_000, 20_000, 1, 0, 20_001, 300]),
                absolute: self.timeout(&[100, 1_000, 8_000, 20_000, 1, 0, 20_001, 3_000]),
            },
            6..=11 => Op::Rotate {
                req: self.req(),
                token: self.presented(),
                successor: self.new_token(),
            },
            12..=14 => Op::Update {
                req: self.req(),
                by: self.by(),
                expected_version: if self.src.bool() {
                    0
                } else {
                    self.src.below(6) as u64
                },
                data: self.src.bool().then(|| self.data()),
                attributes: self.src.one_in(3).then(|| self.attributes()),
            },
            15..=17 => Op::Touch {
                token: self.presented(),
            },
            18..=19 => Op::Revoke {
                req: self.req(),
                by: self.by(),
                reason: self.reason(),
            },
            20 => Op::RevokeUser {
                req: self.req(),
                user: self.user(),
                except: self.src.bool().then(|| self.known_id()),
                reason: self.reason(),
            },
            21 => Op::ReportReuse {
                token: self.presented(),
            },
            22..=23 => Op::Expire {
                limit: self.src.pick(&[1, 2, 5_000]),
            },
            24 => {
                let mut p = self.policy();
                // Keep the cap sometimes below what users hold: evictions of several.
                if self.src.bool() {
                    p.max_sessions_per_user = model.policy.max_sessions_per_user.min(2);
                }
                Op::Configure(p)
            }
            _ if !self.sent.is_empty() => self.retry(),
            _ => Op::Expire { limit: 5_000 },
        };
        if matches!(
            op,
            Op::Create { .. }
                | Op::Rotate { .. }
                | Op::Update { .. }
                | Op::Revoke { .. }
                | Op::RevokeUser { .. }
        ) {
            self.sent.push(op.clone());
        }
        op
    }

    /// A retry of an earlier mutation: the same request id and client fields, with what
    /// the leader draws drawn again (or, as after a lost answer to the same leader, not).
    fn retry(&mut self) -> Op {
        let n = self.sent.len();
        let back = self.src.below(n.min(8));
        let mut op = self.sent[n - 1 - back].clone();
        if self.src.bool() {
            match &mut op {
                Op::Create { id, token, .. } => {
                    *id = self.new_id();
                    *token = self.new_token();
                }
                Op::Rotate { successor, .. } => *successor = self.new_token(),
                _ => {}
            }
        }
        op
    }

    /// Remember what an op handed out, for later commands to present: the token of a new
    /// session, the successor of a rotation that made one. (Drawn tokens that were refused
    /// or discarded stay unknown; `presented` makes up unknown tokens of its own.)
    fn learn(&mut self, op: &Op, answer: &Answer) {
        match (op, answer) {
            (
                Op::Create { token, .. },
                Answer::Created {
                    session,
                    replayed: false,
                    ..
                },
            ) => {
                self.issued.push(*token);
                self.ids.push(session.id);
            }
            (Op::Create { id, .. }, _) if !self.ids.contains(id) => self.ids.push(*id),
            (
                Op::Rotate { successor, .. },
                Answer::Rotated {
                    successor: Some(s),
                    replayed: false,
                    ..
                },
            ) if *s == successor.hash() => self.issued.push(*successor),
            _ => {}
        }
    }
}
