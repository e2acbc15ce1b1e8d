//! Target 3: log entries. Whatever bytes decode as a `Batch` (with the codec the log store
//! and apply use) are applied with `apply_batch` to an in-memory state that already holds
//! live, rotated, revoked and remembered sessions — up to four entries per input.
//!
//! Input: per entry, a byte chooses between raw bytes (a little-endian u16 length, then
//! that many bytes) and a recipe for a well-typed batch that is then encoded and, half of
//! the time, damaged a little. A short input can stand for a long one (see
//! [`crate::input::expand`]).
//!
//! Asserted: no panic; apply never fails on a decodable batch (a storage error from the
//! in-memory store means the state machine read back something it could not have written);
//! one outcome per command; applying the same batch twice to the same state gives the same
//! outcomes and writes (determinism); `invariants::check` holds after every entry; a decoded
//! batch encodes to bytes that decode to the same batch.

use crate::arbitrary::{self, Known};
use crate::input::{mutate, Source};
use crate::model::{By, Op, Req, Tok};
use crate::targets::differential::command;
use sessiond_state::apply::apply_batch;
use sessiond_state::codec;
use sessiond_state::command::{Batch, Command};
use sessiond_state::invariants;
use sessiond_state::kv::{MemKv, Txn};
use sessiond_state::query;
use sessiond_state::record::Policy;
use sessiond_state::token::SessionId;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Entries applied per input at most.
const ENTRIES: usize = 4;
/// Log index of the base state's last entry.
const BASE_INDEX: u64 = 10;

/// The first byte of an entry given as raw bytes; the length follows.
pub const RAW: u8 = 0;

pub fn run(input: &[u8]) {
    let (base, known) = base();
    let mut kv = base.clone();
    let mut known = known.clone();
    let input = crate::input::expand(input, 2048);
    let mut src = Source::new(&input);
    let mut index = BASE_INDEX;
    for _ in 0..ENTRIES {
        if src.is_empty() {
            break;
        }
        let bytes = if src.u8() % 2 == RAW {
            let n = usize::from(src.u16());
            src.take(n).to_vec()
        } else {
            let mut b = codec::encode(&arbitrary::batch(&mut src, &known));
            if src.bool() {
                mutate(&mut b, &mut src);
            }
            b
        };
        let Ok(batch) = codec::decode::<Batch>(&bytes) else {
            continue;
        };
        let again: Batch = codec::decode(&codec::encode(&batch)).expect("an encoded batch decodes");
        assert_eq!(again, batch, "a batch does not read back as written");
        index += 1;
        apply_checked(&mut kv, index, &batch);
        known.stamp = query::clock(&kv).expect("clock");
    }
}

/// Apply one entry with every check of this target, and commit it.
pub fn apply_checked(kv: &mut MemKv, index: u64, batch: &Batch) {
    let mut txn = Txn::new(&*kv);
    let outcomes = match apply_batch(&mut txn, index, batch) {
        Ok(o) => o,
        Err(e) => panic!("apply failed on a decodable batch: {e}\nbatch: {batch:?}"),
    };
    assert_eq!(
        outcomes.len(),
        batch.commands.len(),
        "one outcome per command"
    );
    let writes = txn.into_writes();
    let mut again = Txn::new(&*kv);
    let outcomes_again = apply_batch(&mut again, index, batch).expect("apply again");
    assert_eq!(outcomes, outcomes_again, "apply is not deterministic");
    assert!(writes == again.into_writes(), "apply is not deterministic");
    kv.commit(&writes);
    match invariants::check(&*kv) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("invariant broken: {e}\nbatch: {batch:?}\noutcomes: {outcomes:?}"),
        Err(e) => panic!("invariant check failed: {e}\nbatch: {batch:?}"),
    }
}

fn tok(n: u8) -> Tok {
    Tok([n; 32])
}

fn req(n: u8) -> Req {
    Req {
        principal: 0,
        rid: [n; 16],
    }
}

/// The state every input starts from, and what it holds: sessions of three users (one
/// rotated twice, one revoked, one updated), remembered request ids, a policy with a small
/// per-user cap.
pub fn base() -> &'static (MemKv, Known) {
    static BASE: OnceLock<(MemKv, Known)> = OnceLock::new();
    BASE.get_or_init(|| {
        let t0 = 1_000_000;
        let create = |n: u8, user: &str| Op::Create {
            req: req(n),
            id: SessionId([n; 16]),
            token: tok(n),
            user: user.to_string(),
            data: vec![n],
            attributes: BTreeMap::from([("k".to_string(), "v".to_string())]),
            idle: None,
            absolute: Some(3_600_000),
        };
        let entries: Vec<(u64, Vec<Op>)> = vec![
            (
                t0,
                vec![Op::Configure(Policy {
                    max_sessions_per_user: 3,
                    ..Policy::default()
                })],
            ),
            (
                t0,
                vec![create(1, "ann"), create(2, "ann"), create(3, "bob")],
            ),
            (t0 + 1, vec![create(4, "cy")]),
            (
                t0 + 60_000,
                vec![Op::Rotate {
                    req: req(20),
                    token: tok(1),
                    successor: tok(21),
                }],
            ),
            (
                t0 + 120_000,
                vec![Op::Rotate {
                    req: req(22),
                    token: tok(21),
                    successor: tok(23),
                }],
            ),
            (
                t0 + 120_001,
                vec![
                    Op::Revoke {
                        req: req(30),
                        by: By::Id(SessionId([2; 16])),
                        reason: String::new(),
                    },
                    Op::Update {
                        req: req(31),
                        by: By::Token(tok(3)),
                        expected_version: 1,
                        data: Some(b"x".to_vec()),
                        attributes: None,
                    },
                ],
            ),
        ];
        let mut kv = MemKv::new();
        let mut stamp = t0;
        for (i, (s, ops)) in entries.iter().enumerate() {
            stamp = *s;
            let batch = Batch {
                stamp_ms: *s,
                commands: ops.iter().map(command).collect::<Vec<Command>>(),
            };
            apply_checked(
                &mut kv,
                BASE_INDEX - entries.len() as u64 + 1 + i as u64,
                &batch,
            );
        }
        let mut tokens: Vec<_> = [1, 2, 3, 4, 21, 23]
            .iter()
            .map(|n| tok(*n).hash())
            .collect();
        tokens.push(tok(99).hash());
        let known = Known {
            ids: (1..=4).map(|n| SessionId([n; 16])).collect(),
            tokens,
            requests: [1, 2, 3, 4, 20, 22, 30, 31]
                .iter()
                .map(|n| req(*n).key())
                .collect(),
            users: vec!["ann".into(), "bob".into(), "cy".into()],
            stamp,
        };
        (kv, known)
    })
}
