//! Property tests: arbitrary command sequences keep replicas byte-identical, every index equal
//! to what the records imply, and the guarantees of docs/semantics.md (exactly-once replies, request
//! ids scoped to a principal and bound to the request, one successor per token, no
//! resurrection) intact, whatever the order, the clock and the grouping of commands into log
//! entries.

mod common;

use common::{
    client_part, is_replay_of, is_reuse_refusal, request_key, seal_key, set_request_key, Sm,
    PRINCIPAL,
};
use proptest::prelude::*;
use sessiond_state::codec::{decode, encode};
use sessiond_state::command::{Command, Outcome, Reply, Successor, Target};
use sessiond_state::kv::{Cf, KvRead, MemKv};
use sessiond_state::record::{
    CapPolicy, Policy, ReusePolicy, RevocationEvent, SessionRecord, TokenRow, Tombstone,
};
use sessiond_state::token::{RequestId, RequestKey, SessionId, Token, TokenHash};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Create {
        user: u8,
        idle: Option<u64>,
    },
    Rotate {
        token: usize,
    },
    Update {
        token: usize,
        expected: u64,
        by_id: bool,
        data_len: usize,
        attributes: bool,
    },
    Touch {
        token: usize,
    },
    Revoke {
        token: usize,
        by_id: bool,
    },
    RevokeUser {
        user: u8,
        except: Option<usize>,
    },
    ReportReuse {
        token: usize,
    },
    Expire {
        limit: u32,
    },
    Retry {
        earlier: usize,
    },
    /// An earlier request id, same principal, with one client field changed.
    Misuse {
        earlier: usize,
        field: u8,
    },
    /// An earlier request id and request, sent by the other principal.
    OtherPrincipal {
        earlier: usize,
    },
}

/// The principal `Op::OtherPrincipal` switches to (and back from).
const OTHER_PRINCIPAL: &str = "billing";

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, prop_oneof![Just(None), (1u64..5_000).prop_map(Some)])
            .prop_map(|(user, idle)| Op::Create { user, idle }),
        3 => any::<usize>().prop_map(|token| Op::Rotate { token }),
        2 => (any::<usize>(), 0u64..4, any::<bool>(), 0usize..24, any::<bool>()).prop_map(
            |(token, expected, by_id, data_len, attributes)| Op::Update {
                token,
                expected,
                by_id,
                data_len,
                attributes,
            }
        ),
        1 => any::<usize>().prop_map(|token| Op::Touch { token }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(token, by_id)| Op::Revoke { token, by_id }),
        1 => (0u8..3, proptest::option::of(any::<usize>()))
            .prop_map(|(user, except)| Op::RevokeUser { user, except }),
        1 => any::<usize>().prop_map(|token| Op::ReportReuse { token }),
        1 => (1u32..20).prop_map(|limit| Op::Expire { limit }),
        2 => any::<usize>().prop_map(|earlier| Op::Retry { earlier }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(earlier, field)| Op::Misuse { earlier, field }),
        1 => any::<usize>().prop_map(|earlier| Op::OtherPrincipal { earlier }),
    ]
}

/// Clock steps between entries: mostly small, sometimes backwards, sometimes far enough to
/// pass absolute expiry.
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -500i64..2_000,
        1 => 5_000i64..25_000,
    ]
}

type Entries = Vec<(Vec<Op>, i64)>;

fn entries() -> impl Strategy<Value = Entries> {
    proptest::collection::vec((proptest::collection::vec(op(), 0..6), step()), 1..40)
}

/// Turns ops into commands the way a leader would: fresh random values come from a counter so
/// the run is reproducible, and every token a reply reveals joins the pool.
#[derive(Default)]
struct Driver {
    counter: u64,
    tokens: Vec<Token>,
    ids: Vec<SessionId>,
    sent: Vec<Command>,
    /// Each request key's id, principal, and the id's draw number: the (draw, principal)
    /// pair names a request key independently of how the key is derived.
    request_ids: BTreeMap<RequestKey, (RequestId, &'static str, usize)>,
    drawn_ids: usize,
}

impl Driver {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        self.counter += 1;
        let mut b = [0u8; N];
        for (i, x) in b.iter_mut().enumerate() {
            *x =
                (self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
        b
    }

    fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
        (!v.is_empty()).then(|| v[i % v.len()].clone())
    }

    fn command(&mut self, op: &Op) -> Option<Command> {
        let rid = RequestId::from_bytes(self.bytes());
        let key = rid.key(PRINCIPAL);
        self.drawn_ids += 1;
        self.request_ids
            .insert(key, (rid, PRINCIPAL, self.drawn_ids));
        Some(match op {
            Op::Create { user, idle } => {
                let token = Token::from_bytes(self.bytes());
                let id = SessionId(self.bytes());
                self.tokens.push(token.clone());
                self.ids.push(id);
                Command::Create {
                    request_id: key,
                    id,
                    token_hash: token.hash(),
                    sealed_token: rid.seal(&seal_key(), &id, &token),
                    user_id: format!("user{user}"),
                    data: vec![*user; 8],
                    attributes: BTreeMap::new(),
                    idle_timeout_ms: *idle,
                    absolute_timeout_ms: None,
                }
            }
            Op::Rotate { token } => {
                let presented = Self::pick(&self.tokens, *token)?;
                let next = Token::from_bytes(self.bytes());
                Command::Rotate {
                    request_id: key,
                    token_hash: presented.hash(),
                    new_token_hash: next.hash(),
                    sealed_successor: presented.seal(&next),
                }
            }
            Op::Update {
                token,
                expected,
                by_id,
                data_len,
                attributes,
            } => Command::Update {
                request_id: key,
                target: self.target(*token, *by_id)?,
                expected_version: *expected,
                data: Some(vec![7; *data_len]),
                attributes: attributes
                    .then(|| BTreeMap::from([("device".to_string(), "x".repeat(*data_len))])),
            },
            Op::Touch { token } => Command::Touch {
                token_hash: Self::pick(&self.tokens, *token)?.hash(),
            },
            Op::Revoke { token, by_id } => Command::Revoke {
                request_id: key,
                target: self.target(*token, *by_id)?,
                reason: String::new(),
            },
            Op::RevokeUser { user, except } => Command::RevokeUser {
                request_id: key,
                user_id: format!("user{user}"),
                except: except.and_then(|e| Self::pick(&self.ids, e)),
                reason: "all".into(),
            },
            Op::ReportReuse { token } => Command::ReportReuse {
                token_hash: Self::pick(&self.tokens, *token)?.hash(),
            },
            Op::Expire { limit } => Command::Expire { limit: *limit },
            Op::Retry { earlier } => {
                let earlier = Self::pick(&self.sent, *earlier)?;
                self.retry(earlier)
            }
            Op::Misuse { earlier, field } => {
                let earlier = Self::pick(&self.sent, *earlier)?;
                self.misuse(earlier, *field)?
            }
            Op::OtherPrincipal { earlier } => {
                let mut c = Self::pick(&self.sent, *earlier)?;
                let old = request_key(&c)?;
                let (rid, principal, draw) = self.request_ids[&old];
                let other = if principal == PRINCIPAL {
                    OTHER_PRINCIPAL
                } else {
                    PRINCIPAL
                };
                let new = rid.key(other);
                self.request_ids.insert(new, (rid, other, draw));
                set_request_key(&mut c, new);
                self.retry(c)
            }
        })
    }

    /// The same request id (and principal) with one client field of `c` changed, and fresh
    /// leader draws.
    fn misuse(&mut self, mut c: Command, field: u8) -> Option<Command> {
        match &mut c {
            Command::Create {
                user_id,
                data,
                idle_timeout_ms,
                ..
            } => match field % 3 {
                0 => user_id.push('x'),
                1 => data.push(field),
                _ => *idle_timeout_ms = idle_timeout_ms.xor(Some(2_500)),
            },
            Command::Rotate { token_hash, .. } => {
                let other = Self::pick(&self.tokens, field as usize)?;
                *token_hash = other.hash();
            }
            Command::Update {
                expected_version,
                data,
                attributes,
                ..
            } => match field % 3 {
                0 => *expected_version += 1,
                1 => *data = data.take().xor(Some(Vec::new())),
                _ => *attributes = attributes.take().xor(Some(BTreeMap::new())),
            },
            Command::Revoke { target, reason, .. } => match field % 2 {
                0 => reason.push('x'),
                _ => *target = self.target(field as usize, field % 4 == 1)?,
            },
            Command::RevokeUser { except, reason, .. } => match field % 2 {
                0 => reason.push('x'),
                _ => *except = except.xor(Self::pick(&self.ids, field as usize)),
            },
            _ => return None,
        }
        Some(self.retry(c))
    }

    /// A client's retry as the leader proposes it: the same request id, but every random value
    /// drawn afresh (a new id and token for a create, a new successor for a rotation).
    fn retry(&mut self, mut c: Command) -> Command {
        match &mut c {
            Command::Create {
                request_id,
                id,
                token_hash,
                sealed_token,
                ..
            } => {
                let token = Token::from_bytes(self.bytes());
                *id = SessionId(self.bytes());
                *token_hash = token.hash();
                *sealed_token = self.request_ids[request_id].0.seal(&seal_key(), id, &token);
                self.tokens.push(token);
                self.ids.push(*id);
            }
            Command::Rotate {
                token_hash,
                new_token_hash,
                sealed_successor,
                ..
            } => {
                let next = Token::from_bytes(self.bytes());
                *new_token_hash = next.hash();
                if let Some(presented) = self.token(token_hash) {
                    *sealed_successor = presented.seal(&next);
                }
            }
            _ => {}
        }
        c
    }

    fn target(&self, i: usize, by_id: bool) -> Option<Target> {
        if by_id {
            Self::pick(&self.ids, i).map(Target::Id)
        } else {
            Self::pick(&self.tokens, i).map(|t| Target::Token(t.hash()))
        }
    }

    fn token(&self, hash: &TokenHash) -> Option<Token> {
        self.tokens.iter().find(|t| t.hash() == *hash).cloned()
    }

    /// Learn the successor tokens an entry revealed.
    fn learn(&mut self, commands: &[Command], outcomes: &[Outcome]) {
        for (c, o) in commands.iter().zip(outcomes) {
            if let (
                Command::Rotate { token_hash, .. },
                Ok(Reply::Rotated {
                    successor: Successor::Sealed(s),
                    ..
                }),
            ) = (c, o)
            {
                if let Some(t) = self.token(token_hash) {
                    let next = t.open(s);
                    if !self.tokens.contains(&next) {
                        self.tokens.push(next);
                    }
                }
            }
        }
        self.sent.extend(commands.iter().cloned());
    }

    /// Commands of the next entry.
    fn entry(&mut self, ops: &[Op]) -> Vec<Command> {
        ops.iter().filter_map(|o| self.command(o)).collect()
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), any::<bool>(), 1u32..4, 0u64..3_000).prop_map(|(reject, refuse, cap, grace)| {
        Policy {
            grace_window_ms: grace,
            rotation_min_interval_ms: grace / 2,
            reuse_policy: if reject {
                ReusePolicy::Reject
            } else {
                ReusePolicy::Revoke
            },
            max_sessions_per_user: cap,
            cap_policy: if refuse {
                CapPolicy::Refuse
            } else {
                CapPolicy::EvictOldest
            },
            dedup_window_ms: 4_000,
            default_absolute_timeout_ms: 20_000,
            max_data_bytes: 16,
            max_attributes_bytes: 24,
            ..Policy::default()
        }
    })
}

fn rows(kv: &MemKv, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
    kv.scan(cf, &[], None, usize::MAX).unwrap()
}

/// Guarantees checked against the replies and the state as a run goes, independently of
/// `invariants::check` (which `Sm::apply` runs after every entry).
struct Guarantees {
    window_ms: u64,
    now: u64,
    /// First request and answer per (request id draw, principal), and until when it must be
    /// replayed.
    first: BTreeMap<(usize, &'static str), (Command, Outcome, u64)>,
    /// The one successor each token ever had.
    successors: BTreeMap<TokenHash, Token>,
    /// Ids ever tombstoned.
    revoked: BTreeSet<SessionId>,
}

impl Guarantees {
    fn new(window_ms: u64) -> Self {
        Guarantees {
            window_ms,
            now: 0,
            first: BTreeMap::new(),
            successors: BTreeMap::new(),
            revoked: BTreeSet::new(),
        }
    }

    fn entry(
        &mut self,
        d: &Driver,
        kv: &MemKv,
        stamp: u64,
        commands: &[Command],
        outcomes: &[Outcome],
    ) -> Result<(), TestCaseError> {
        self.now = self.now.max(stamp);
        for (c, o) in commands.iter().zip(outcomes) {
            self.exactly_once(d, c, o)?;
            self.one_successor(d, c, o)?;
            self.no_reply_for_revoked(o)?;
        }
        self.state(kv)
    }

    /// A retry inside the dedup window gets the first answer, flagged replayed; a different
    /// request under the same key is refused, and the first answer stays. Another principal's
    /// use of the same id is a different key, so it is fresh.
    fn exactly_once(&mut self, d: &Driver, c: &Command, o: &Outcome) -> Result<(), TestCaseError> {
        let Some(key) = request_key(c) else {
            return Ok(());
        };
        let (_, principal, draw) = d.request_ids[&key];
        let key = (draw, principal);
        match self.first.get(&key) {
            Some((cmd, first, until)) if self.now < *until => {
                if client_part(cmd) == client_part(c) {
                    prop_assert!(
                        is_replay_of(first, c, o),
                        "retry of {:?}: {:?}, first {:?}",
                        c,
                        o,
                        first
                    );
                } else {
                    prop_assert!(is_reuse_refusal(o), "{:?} reused {:?}: {:?}", c, cmd, o);
                }
            }
            _ => {
                // (A racing rotation of a superseded token is fresh yet `replayed`: the
                // rotation it joins already happened.)
                if !matches!(c, Command::Rotate { .. }) {
                    prop_assert!(
                        !is_replayed(o),
                        "fresh request answered as a replay: {:?}",
                        o
                    );
                }
                prop_assert!(!is_reuse_refusal(o), "fresh request refused as a reuse");
                self.first
                    .insert(key, (c.clone(), o.clone(), self.now + self.window_ms));
            }
        }
        Ok(())
    }

    /// Every rotation of one token, racing or retried, hands out the same successor.
    fn one_successor(&mut self, d: &Driver, c: &Command, o: &Outcome) -> Result<(), TestCaseError> {
        let (
            Command::Rotate { token_hash, .. },
            Ok(Reply::Rotated {
                successor: Successor::Sealed(s),
                session,
                ..
            }),
        ) = (c, o)
        else {
            return Ok(());
        };
        let presented = d
            .token(token_hash)
            .expect("the driver presents known tokens");
        let next = presented.open(s);
        prop_assert!(session.generation >= 1);
        if let Some(prev) = self.successors.get(token_hash) {
            prop_assert_eq!(prev, &next, "a second successor for one token");
        } else {
            self.successors.insert(*token_hash, next);
        }
        Ok(())
    }

    /// No fresh answer hands out a session that was revoked before.
    fn no_reply_for_revoked(&self, o: &Outcome) -> Result<(), TestCaseError> {
        let session = match o {
            Ok(Reply::Created {
                session,
                replayed: false,
                ..
            })
            | Ok(Reply::Rotated {
                session,
                replayed: false,
                ..
            })
            | Ok(Reply::Updated {
                session,
                replayed: false,
            })
            | Ok(Reply::Touched { session, .. }) => session,
            _ => return Ok(()),
        };
        prop_assert!(
            !self.revoked.contains(&session.id),
            "{:?} answered after its revocation",
            session.id
        );
        Ok(())
    }

    /// Model-free checks of the whole state.
    fn state(&mut self, kv: &MemKv) -> Result<(), TestCaseError> {
        let mut owners = BTreeSet::new();
        for (_, v) in rows(kv, Cf::Tombstones) {
            let t: Tombstone = decode(&v).unwrap();
            owners.insert(t.id);
            self.revoked.insert(t.id);
        }
        for (_, v) in rows(kv, Cf::Sessions) {
            let r: SessionRecord = decode(&v).unwrap();
            prop_assert!(owners.insert(r.id), "{:?} is live and tombstoned", r.id);
            prop_assert!(!self.revoked.contains(&r.id), "{:?} was resurrected", r.id);
        }
        for (k, v) in rows(kv, Cf::Tokens) {
            let row: TokenRow = decode(&v).unwrap();
            prop_assert!(
                owners.contains(&row.id),
                "token row {:?} points at {:?}, which has neither session nor tombstone",
                k,
                row.id
            );
        }
        Ok(())
    }
}

fn is_replayed(o: &Outcome) -> bool {
    matches!(
        o,
        Ok(Reply::Created { replayed: true, .. })
            | Ok(Reply::Rotated { replayed: true, .. })
            | Ok(Reply::Updated { replayed: true, .. })
            | Ok(Reply::Revoked { replayed: true, .. })
            | Ok(Reply::RevokedUser { replayed: true, .. })
    )
}

/// A dump with the log-index-derived parts (revocation feed keys and event indexes) replaced by
/// their rank, so runs that group the same commands into different entries compare equal.
fn normalized(kv: &MemKv) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    let rank: BTreeMap<Vec<u8>, Vec<u8>> = rows(kv, Cf::Revocations)
        .into_iter()
        .enumerate()
        .map(|(i, (k, _))| (k, (i as u64).to_be_bytes().to_vec()))
        .collect();
    kv.dump()
        .into_iter()
        .map(|(cf, k, v)| match cf {
            Cf::Revocations => {
                let mut e: RevocationEvent = decode(&v).unwrap();
                e.index = 0;
                (cf, rank[&k].clone(), encode(&e))
            }
            Cf::Tombstones => {
                let mut t: Tombstone = decode(&v).unwrap();
                t.feed_key = rank.get(&t.feed_key).cloned().unwrap_or_default();
                (cf, k, encode(&t))
            }
            Cf::Sessions => {
                let mut r: SessionRecord = decode(&v).unwrap();
                for t in &mut r.retired {
                    t.retired_index = 0;
                }
                (cf, k, encode(&r))
            }
            _ => (cf, k, v),
        })
        .collect()
}

const START: i64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Two replicas fed the same log end byte-identical with identical answers; invariants hold
    /// after every entry (checked inside `Sm::apply`); retries get the first answer; a token
    /// has one successor; no token row outlives its session or tombstone; nothing comes back
    /// from revocation.
    #[test]
    fn replicas_stay_identical(p in policy(), entries in entries()) {
        let mut a = Sm::with_policy(p.clone());
        let mut b = Sm::with_policy(p.clone());
        let mut d = Driver::default();
        let mut g = Guarantees::new(p.dedup_window_ms);
        let mut stamp = START;
        for (ops, step) in entries {
            stamp += step;
            let commands = d.entry(&ops);
            let out_a = a.apply(stamp as u64, commands.clone());
            let out_b = b.apply(stamp as u64, commands.clone());
            prop_assert_eq!(&out_a, &out_b);
            g.entry(&d, &a.kv, stamp as u64, &commands, &out_a)?;
            d.learn(&commands, &out_a);
        }
        prop_assert_eq!(a.kv.dump(), b.kv.dump());
    }

    /// Grouping commands into log entries does not change any answer or the state: one
    /// command per entry (same stamps) equals many per entry, up to the log indexes that key
    /// the revocation feed and date rotations.
    #[test]
    fn grouping_into_entries_does_not_matter(p in policy(), entries in entries()) {
        let mut many = Sm::with_policy(p.clone());
        let mut single = Sm::with_policy(p);
        let mut d = Driver::default();
        let mut stamp = START;
        for (ops, step) in entries {
            stamp += step;
            let commands = d.entry(&ops);
            let out_many = many.apply(stamp as u64, commands.clone());
            let mut out_single = Vec::new();
            if commands.is_empty() {
                single.apply(stamp as u64, Vec::new());
            }
            for c in &commands {
                out_single.extend(single.apply(stamp as u64, vec![c.clone()]));
            }
            prop_assert_eq!(&out_many, &out_single);
            d.learn(&commands, &out_many);
        }
        prop_assert_eq!(normalized(&many.kv), normalized(&single.kv));
    }
}

/// The property checks above must be able to fail: a state with a token row whose session is
/// gone is caught by the model-free check.
#[test]
fn orphan_token_rows_are_caught() {
    let mut sm = Sm::new();
    let (id, _) = sm.create(START as u64, "u");
    let mut w = sessiond_state::kv::WriteSet::default();
    w.delete(Cf::Sessions, id.0.to_vec());
    sm.kv.commit(&w);
    let mut g = Guarantees::new(1);
    assert!(g.state(&sm.kv).is_err());
    assert!(sessiond_state::invariants::check(&sm.kv).unwrap().is_err());
}
