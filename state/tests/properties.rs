//! Property tests: arbitrary command sequences keep replicas byte-identical and every index
//! equal to what the records imply.

mod common;

use common::Sm;
use proptest::prelude::*;
use sessiond_state::command::{Command, Reply, Successor, Target};
use sessiond_state::record::{CapPolicy, Policy, ReusePolicy};
use sessiond_state::token::{RequestId, SessionId, Token};
use std::collections::BTreeMap;

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, prop_oneof![Just(None), (1u64..5_000).prop_map(Some)])
            .prop_map(|(user, idle)| Op::Create { user, idle }),
        3 => any::<usize>().prop_map(|token| Op::Rotate { token }),
        2 => (any::<usize>(), 0u64..4, any::<bool>())
            .prop_map(|(token, expected, by_id)| Op::Update { token, expected, by_id }),
        1 => any::<usize>().prop_map(|token| Op::Touch { token }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(token, by_id)| Op::Revoke { token, by_id }),
        1 => (0u8..3, proptest::option::of(any::<usize>()))
            .prop_map(|(user, except)| Op::RevokeUser { user, except }),
        1 => any::<usize>().prop_map(|token| Op::ReportReuse { token }),
        1 => (1u32..20).prop_map(|limit| Op::Expire { limit }),
        1 => any::<usize>().prop_map(|earlier| Op::Retry { earlier }),
    ]
}

/// Turns ops into commands the way a leader would: fresh random values come from a counter so
/// the run is reproducible, and every token a reply reveals joins the pool.
struct Driver {
    counter: u64,
    tokens: Vec<Token>,
    ids: Vec<SessionId>,
    sent: Vec<Command>,
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
        Some(match op {
            Op::Create { user, idle } => {
                let token = Token::from_bytes(self.bytes());
                let id = SessionId(self.bytes());
                self.tokens.push(token.clone());
                self.ids.push(id);
                Command::Create {
                    request_id: rid.key(),
                    id,
                    token_hash: token.hash(),
                    sealed_token: rid.seal(&token),
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
                    request_id: rid.key(),
                    token_hash: presented.hash(),
                    new_token_hash: next.hash(),
                    sealed_successor: presented.seal(&next),
                }
            }
            Op::Update {
                token,
                expected,
                by_id,
            } => Command::Update {
                request_id: rid.key(),
                target: self.target(*token, *by_id)?,
                expected_version: *expected,
                data: Some(vec![1, 2, 3]),
                attributes: None,
            },
            Op::Touch { token } => Command::Touch {
                token_hash: Self::pick(&self.tokens, *token)?.hash(),
            },
            Op::Revoke { token, by_id } => Command::Revoke {
                request_id: rid.key(),
                target: self.target(*token, *by_id)?,
                reason: String::new(),
            },
            Op::RevokeUser { user, except } => Command::RevokeUser {
                request_id: rid.key(),
                user_id: format!("user{user}"),
                except: except.and_then(|e| Self::pick(&self.ids, e)),
                reason: "all".into(),
            },
            Op::ReportReuse { token } => Command::ReportReuse {
                token_hash: Self::pick(&self.tokens, *token)?.hash(),
            },
            Op::Expire { limit } => Command::Expire { limit: *limit },
            Op::Retry { earlier } => Self::pick(&self.sent, *earlier)?,
        })
    }

    fn target(&self, i: usize, by_id: bool) -> Option<Target> {
        if by_id {
            Self::pick(&self.ids, i).map(Target::Id)
        } else {
            Self::pick(&self.tokens, i).map(|t| Target::Token(t.hash()))
        }
    }

    /// Learn the successor tokens a batch revealed.
    fn learn(&mut self, commands: &[Command], outcomes: &[sessiond_state::command::Outcome]) {
        for (c, o) in commands.iter().zip(outcomes) {
            if let (
                Command::Rotate { token_hash, .. },
                Ok(Reply::Rotated {
                    successor: Successor::Sealed(s),
                    ..
                }),
            ) = (c, o)
            {
                if let Some(t) = self
                    .tokens
                    .iter()
                    .find(|t| t.hash() == *token_hash)
                    .cloned()
                {
                    let next = t.open(s);
                    if !self.tokens.contains(&next) {
                        self.tokens.push(next);
                    }
                }
            }
        }
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
            ..Policy::default()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Two replicas fed the same log end byte-identical, and invariants hold after every entry
    /// (checked inside `Sm::apply`).
    #[test]
    fn replicas_stay_identical(
        p in policy(),
        batches in proptest::collection::vec(
            (proptest::collection::vec(op(), 1..5), -500i64..2_000),
            1..40,
        ),
    ) {
        let mut a = Sm::with_policy(p.clone());
        let mut b = Sm::with_policy(p);
        let mut d = Driver { counter: 0, tokens: Vec::new(), ids: Vec::new(), sent: Vec::new() };
        let mut stamp: i64 = 1_000_000;
        for (ops, step) in batches {
            stamp += step;
            let commands: Vec<Command> = ops.iter().filter_map(|o| d.command(o)).collect();
            let out_a = a.apply(stamp as u64, commands.clone());
            let out_b = b.apply(stamp as u64, commands.clone());
            prop_assert_eq!(&out_a, &out_b);
            d.learn(&commands, &out_a);
            d.sent.extend(commands);
        }
        prop_assert_eq!(a.kv.dump(), b.kv.dump());
    }
}
