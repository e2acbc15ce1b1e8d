//! A state machine over `MemKv`, applied entry by entry, checking invariants after each.

#![allow(dead_code)]

use sessiond_state::apply::apply_batch;
use sessiond_state::command::{Batch, Command, Outcome, Reply, Successor, Target};
use sessiond_state::invariants;
use sessiond_state::kv::{Cf, MemKv, Txn};
use sessiond_state::record::Policy;
use sessiond_state::token::{RequestId, SessionId, Token};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Sm {
    pub kv: MemKv,
    pub index: u64,
    seed: u8,
}

impl Sm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_policy(p: Policy) -> Self {
        let mut sm = Sm::new();
        let out = sm.apply(1, vec![Command::Configure { policy: p }]);
        assert_eq!(out[0], Ok(Reply::Configured));
        sm
    }

    pub fn apply(&mut self, stamp_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
        self.index += 1;
        let mut txn = Txn::new(&self.kv);
        let out = apply_batch(&mut txn, self.index, &Batch { stamp_ms, commands })
            .expect("no storage error");
        let writes = txn.into_writes();
        self.kv.commit(&writes);
        invariants::check(&self.kv)
            .unwrap()
            .expect("invariants hold");
        out
    }

    pub fn one(&mut self, stamp_ms: u64, c: Command) -> Outcome {
        self.apply(stamp_ms, vec![c]).remove(0)
    }

    fn fresh<const N: usize>(&mut self) -> [u8; N] {
        self.seed = self.seed.wrapping_add(1);
        let mut b = [self.seed; N];
        b[0] = self.seed.wrapping_mul(31);
        b[N - 1] = (self.index as u8).wrapping_add(7);
        b
    }

    pub fn token(&mut self) -> Token {
        Token::from_bytes(self.fresh())
    }

    pub fn rid(&mut self) -> RequestId {
        RequestId::from_bytes(self.fresh())
    }

    pub fn create_cmd(&mut self, user: &str, idle: Option<u64>) -> (Command, Token, RequestId) {
        let token = self.token();
        let rid = self.rid();
        let id = SessionId(self.fresh());
        (
            Command::Create {
                request_id: rid.key(),
                id,
                token_hash: token.hash(),
                sealed_token: rid.seal(&token),
                user_id: user.into(),
                data: b"data".to_vec(),
                attributes: BTreeMap::new(),
                idle_timeout_ms: idle,
                absolute_timeout_ms: None,
            },
            token,
            rid,
        )
    }

    /// Create a session at `now`; its id and token.
    pub fn create(&mut self, now: u64, user: &str) -> (SessionId, Token) {
        let (c, token, _) = self.create_cmd(user, None);
        match self.one(now, c) {
            Ok(Reply::Created { session, .. }) => (session.id, token),
            other => panic!("create failed: {other:?}"),
        }
    }

    pub fn rotate_cmd(&mut self, presented: &Token) -> (Command, Token) {
        let next = self.token();
        let rid = self.rid();
        (
            Command::Rotate {
                request_id: rid.key(),
                token_hash: presented.hash(),
                new_token_hash: next.hash(),
                sealed_successor: presented.seal(&next),
            },
            next,
        )
    }

    /// Rotate and open whatever successor comes back.
    #[allow(clippy::result_large_err)]
    pub fn rotate(&mut self, now: u64, presented: &Token) -> Result<(Token, bool), Outcome> {
        let (c, _) = self.rotate_cmd(presented);
        match self.one(now, c) {
            Ok(Reply::Rotated {
                successor: Successor::Sealed(s),
                replayed,
                ..
            }) => Ok((presented.open(&s), replayed)),
            Ok(Reply::Rotated {
                successor: Successor::Unchanged,
                ..
            }) => Ok((presented.clone(), false)),
            other => Err(other),
        }
    }

    pub fn update(&mut self, now: u64, target: Target, expected: u64, data: &[u8]) -> Outcome {
        let rid = self.rid();
        self.one(
            now,
            Command::Update {
                request_id: rid.key(),
                target,
                expected_version: expected,
                data: Some(data.to_vec()),
                attributes: None,
            },
        )
    }

    pub fn revoke(&mut self, now: u64, target: Target, reason: &str) -> Outcome {
        let rid = self.rid();
        self.one(
            now,
            Command::Revoke {
                request_id: rid.key(),
                target,
                reason: reason.into(),
            },
        )
    }
}

/// The state without what every command with a request id writes (the clock, dedup rows and
/// their expiry rows): equal before and after means the command changed nothing else.
pub fn session_state(kv: &MemKv) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    kv.dump()
        .into_iter()
        .filter(|(cf, k, _)| match cf {
            Cf::Meta => k.as_slice() != b"clock",
            Cf::Dedup => false,
            Cf::Expiry => k.first() != Some(&2),
            _ => true,
        })
        .collect()
}
