//! A state machine over `MemKv`, applied entry by entry, checking invariants after each.

#![allow(dead_code)]

use sessiond_state::apply::apply_batch;
use sessiond_state::command::{Batch, Command, Outcome, Reply, Successor, Target};
use sessiond_state::invariants;
use sessiond_state::kv::{Cf, MemKv, Txn};
use sessiond_state::record::Policy;
use sessiond_state::token::{RequestId, SealKey, SessionId, Token};
use std::collections::BTreeMap;

/// The authenticated caller every helper sends its requests as.
pub const PRINCIPAL: &str = "web-frontend";

/// The cluster's seal key in these tests.
pub fn seal_key() -> SealKey {
    SealKey::from_bytes([0x5E; 32])
}

#[derive(Default, Clone)]
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
        let rid = self.rid();
        let (c, token) = self.create_as(&rid, PRINCIPAL, user, idle);
        (c, token, rid)
    }

    /// A create of `user` under `rid` sent by `principal`, with freshly drawn id and token.
    pub fn create_as(
        &mut self,
        rid: &RequestId,
        principal: &str,
        user: &str,
        idle: Option<u64>,
    ) -> (Command, Token) {
        let token = self.token();
        let id = SessionId(self.fresh());
        (
            Command::Create {
                request_id: rid.key(principal),
                id,
                token_hash: token.hash(),
                sealed_token: rid.seal(&seal_key(), &id, &token),
                user_id: user.into(),
                data: b"data".to_vec(),
                attributes: BTreeMap::new(),
                idle_timeout_ms: idle,
                absolute_timeout_ms: None,
            },
            token,
        )
    }

    /// A client's retry of create `c` (made under `rid`) as a leader proposes it: the same
    /// client fields and request key, a freshly drawn id and token.
    pub fn retry_create(&mut self, c: &Command, rid: &RequestId) -> (Command, Token) {
        let mut c = c.clone();
        let token = self.token();
        let fresh_id = SessionId(self.fresh());
        if let Command::Create {
            id,
            token_hash,
            sealed_token,
            ..
        } = &mut c
        {
            *id = fresh_id;
            *token_hash = token.hash();
            *sealed_token = rid.seal(&seal_key(), &fresh_id, &token);
        }
        (c, token)
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
        let rid = self.rid();
        self.rotate_as(&rid, PRINCIPAL, presented)
    }

    /// A rotation of `presented` under `rid` sent by `principal`, with a freshly drawn
    /// successor (so calling it again with the same arguments is a retry).
    pub fn rotate_as(
        &mut self,
        rid: &RequestId,
        principal: &str,
        presented: &Token,
    ) -> (Command, Token) {
        let next = self.token();
        (
            Command::Rotate {
                request_id: rid.key(principal),
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
                request_id: rid.key(PRINCIPAL),
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
                request_id: rid.key(PRINCIPAL),
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

/// What the client chose in `c`: the command with every value the leader draws per attempt
/// (a create's id, token hash and sealed token; a rotation's successor) blanked. Two requests
/// under one request key are the same request exactly when these are equal. A structural
/// model, independent of how `dedup::fingerprint` encodes it.
pub fn client_part(c: &Command) -> Command {
    use sessiond_state::token::{SealedToken, TokenHash};
    let mut c = c.clone();
    match &mut c {
        Command::Create {
            id,
            token_hash,
            sealed_token,
            ..
        } => {
            *id = SessionId([0; 16]);
            *token_hash = TokenHash([0; 32]);
            *sealed_token = SealedToken([0; 32]);
        }
        Command::Rotate {
            new_token_hash,
            sealed_successor,
            ..
        } => {
            *new_token_hash = TokenHash([0; 32]);
            *sealed_successor = SealedToken([0; 32]);
        }
        _ => {}
    }
    c
}

/// Whether `o` is the refusal a request id reused for another request or operation gets.
pub fn is_reuse_refusal(o: &Outcome) -> bool {
    use sessiond_state::command::SessionError;
    use sessiond_state::dedup::{REUSED_FOR_ANOTHER_OPERATION, REUSED_FOR_ANOTHER_REQUEST};
    matches!(o, Err(SessionError::InvalidArgument(m))
        if m == REUSED_FOR_ANOTHER_REQUEST || m == REUSED_FOR_ANOTHER_OPERATION)
}

/// The request key `c` carries, if it is a mutation that has one.
pub fn request_key(c: &Command) -> Option<sessiond_state::token::RequestKey> {
    match c {
        Command::Create { request_id, .. }
        | Command::Rotate { request_id, .. }
        | Command::Update { request_id, .. }
        | Command::Revoke { request_id, .. }
        | Command::RevokeUser { request_id, .. } => Some(*request_id),
        _ => None,
    }
}

/// Put `c` under another request key (no-op for commands without one).
pub fn set_request_key(c: &mut Command, key: sessiond_state::token::RequestKey) {
    match c {
        Command::Create { request_id, .. }
        | Command::Rotate { request_id, .. }
        | Command::Update { request_id, .. }
        | Command::Revoke { request_id, .. }
        | Command::RevokeUser { request_id, .. } => *request_id = key,
        _ => {}
    }
}

/// What a replay of `o` must look like: the same answer, flagged as replayed.
pub fn replayed(o: &Outcome) -> Outcome {
    o.clone().map(Reply::into_replayed)
}

/// Whether `o` is a replay of `first` answering `retry`: [`replayed`]`(first)`, or, once the
/// session has changed since, the same with the content `retry` did not carry left empty (a
/// rotation's data and attributes; an update's field it left unset). Dedup rows keep no
/// session content; see `sessiond_state::dedup`.
pub fn is_replay_of(first: &Outcome, retry: &Command, o: &Outcome) -> bool {
    let full = replayed(first);
    if *o == full {
        return true;
    }
    let mut bare = full;
    match (&mut bare, retry) {
        (Ok(Reply::Rotated { session, .. }), _) => {
            session.data.clear();
            session.attributes.clear();
        }
        (
            Ok(Reply::Updated { session, .. }),
            Command::Update {
                data, attributes, ..
            },
        ) => {
            if data.is_none() {
                session.data.clear();
            }
            if attributes.is_none() {
                session.attributes.clear();
            }
        }
        _ => return false,
    }
    *o == bare
}
