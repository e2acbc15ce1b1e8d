//! What a create at the per-user cap reads: the cap is decided from the `users` index, and
//! only the sessions it evicts are read, however many sessions the user holds.

use sessiond_state::apply::apply_batch;
use sessiond_state::command::{Batch, Command, Outcome, Reply};
use sessiond_state::invariants;
use sessiond_state::kv::{Cf, KvRead, MemKv, Pairs, StorageError, Txn};
use sessiond_state::record::Policy;
use sessiond_state::token::{RequestId, SealKey, SessionId, Token};
use std::cell::RefCell;
use std::collections::BTreeMap;

const T0: u64 = 1_000_000;

/// A reader that counts, per column family, the values it hands out (point reads that found
/// a value, and rows returned by scans).
struct Counting<'a> {
    kv: &'a MemKv,
    read: RefCell<BTreeMap<Cf, usize>>,
}

impl Counting<'_> {
    fn read(&self, cf: Cf) -> usize {
        self.read.borrow().get(&cf).copied().unwrap_or(0)
    }

    fn add(&self, cf: Cf, n: usize) {
        *self.read.borrow_mut().entry(cf).or_default() += n;
    }
}

impl KvRead for Counting<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let v = self.kv.get(cf, key)?;
        self.add(cf, usize::from(v.is_some()));
        Ok(v)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Pairs, StorageError> {
        let rows = self.kv.scan(cf, start, end, limit)?;
        self.add(cf, rows.len());
        Ok(rows)
    }
}

fn create(n: u32, idle: Option<u64>) -> (Command, SessionId) {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    let id = SessionId(b);
    let rid = RequestId::from_bytes(b);
    let mut t = [0u8; 32];
    t[..4].copy_from_slice(&n.to_be_bytes());
    let token = Token::from_bytes(t);
    let c = Command::Create {
        request_id: rid.key("app"),
        id,
        token_hash: token.hash(),
        sealed_token: rid.seal(&SealKey::from_bytes([1; 32]), &id, &token),
        user_id: "u".into(),
        // Large records: reading them is what must not happen.
        data: vec![7; 4096],
        attributes: BTreeMap::new(),
        idle_timeout_ms: idle,
        absolute_timeout_ms: None,
    };
    (c, id)
}

fn apply(kv: &mut MemKv, index: u64, stamp_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
    let mut txn = Txn::new(&*kv);
    let out = apply_batch(&mut txn, index, &Batch { stamp_ms, commands }).unwrap();
    let w = txn.into_writes();
    kv.commit(&w);
    out
}

/// `expired` short-lived sessions, then a full cap of long-lived ones, each created 1 ms
/// after the previous: the ids of the long-lived ones, oldest first.
fn at_cap(kv: &mut MemKv, expired: u32) -> Vec<SessionId> {
    let cap = Policy::default().max_sessions_per_user;
    let mut live = Vec::new();
    for n in 0..expired + cap {
        let idle = (n < expired).then_some(1_000);
        let (c, id) = create(n, idle);
        let out = apply(kv, u64::from(n) + 1, T0 + u64::from(n), vec![c]);
        assert!(matches!(&out[0], Ok(Reply::Created { evicted, .. }) if evicted.is_empty()));
        if n >= expired {
            live.push(id);
        }
    }
    live
}

/// One more create, counting what it reads: its outcome and the reader.
fn counted_create(kv: &mut MemKv, now: u64) -> (Outcome, usize, usize) {
    let (c, _) = create(1 << 20, None);
    let counting = Counting {
        kv,
        read: RefCell::default(),
    };
    let mut txn = Txn::new(&counting);
    let mut out = apply_batch(
        &mut txn,
        1 << 20,
        &Batch {
            stamp_ms: now,
            commands: vec![c],
        },
    )
    .unwrap();
    let w = txn.into_writes();
    let (sessions, users) = (counting.read(Cf::Sessions), counting.read(Cf::Users));
    kv.commit(&w);
    assert_eq!(invariants::check(&*kv).unwrap(), Ok(()));
    (out.remove(0), sessions, users)
}

#[test]
fn a_create_at_the_cap_reads_only_the_session_it_evicts() {
    let mut kv = MemKv::new();
    let live = at_cap(&mut kv, 0);
    let now = T0 + live.len() as u64;
    let (out, sessions, users) = counted_create(&mut kv, now);
    match out {
        Ok(Reply::Created { evicted, .. }) => assert_eq!(evicted, vec![live[0]]),
        other => panic!("{other:?}"),
    }
    assert!(sessions <= 1, "read {sessions} session records");
    // The count row (read again when the eviction changes it) and the oldest row.
    assert!(users <= 4, "read {users} users rows");
}

#[test]
fn expired_sessions_not_yet_swept_cost_index_rows_but_no_record_reads() {
    let mut kv = MemKv::new();
    let live = at_cap(&mut kv, 5);
    // The five short-lived sessions are past their deadline and not swept: they hold no
    // place, so the oldest live session goes.
    let now = T0 + 5 + live.len() as u64;
    let (out, sessions, _) = counted_create(&mut kv, now);
    match out {
        Ok(Reply::Created { evicted, .. }) => assert_eq!(evicted, vec![live[0]]),
        other => panic!("{other:?}"),
    }
    assert!(sessions <= 1, "read {sessions} session records");
}
