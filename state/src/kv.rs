//! The narrow storage seam the state machine speaks to: point reads and ordered scans within
//! column families, and a write set that the caller commits atomically.
//!
//! RocksDB implements [`KvRead`] in the server; [`MemKv`] implements it for tests. Both commit a
//! [`WriteSet`] the same way, so there is one code path for apply.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Column families of the state machine. The discriminant order is part of the snapshot format.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// session id → [`crate::record::SessionRecord`]
    Sessions,
    /// token hash → [`crate::record::TokenRow`]
    Tokens,
    /// per user: user key ‖ 0 → session count (u64 BE), and user key ‖ 1 ‖ created_at (u64 BE)
    /// ‖ session id → expires_at (u64 BE), oldest session first (see [`crate::keys::user`])
    Users,
    /// kind ‖ due_at (u64 BE) ‖ key → empty
    Expiry,
    /// session id → [`crate::record::Tombstone`]
    Tombstones,
    /// request id → [`crate::record::DedupRow`]
    Dedup,
    /// log index (u64 BE) ‖ seq (u32 BE) → [`crate::record::RevocationEvent`]
    Revocations,
    /// small named values: clock, policy, and the server's last-applied / membership
    Meta,
}

impl Cf {
    /// Every column family, in snapshot order.
    pub const ALL: [Cf; 8] = [
        Cf::Sessions,
        Cf::Tokens,
        Cf::Users,
        Cf::Expiry,
        Cf::Tombstones,
        Cf::Dedup,
        Cf::Revocations,
        Cf::Meta,
    ];

    /// The RocksDB column family name.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Sessions => "sessions",
            Cf::Tokens => "tokens",
            Cf::Users => "users",
            Cf::Expiry => "expiry",
            Cf::Tombstones => "tombstones",
            Cf::Dedup => "dedup",
            Cf::Revocations => "revocations",
            Cf::Meta => "meta",
        }
    }

    /// Inverse of [`Cf::name`].
    pub fn from_name(name: &str) -> Option<Cf> {
        Cf::ALL.into_iter().find(|cf| cf.name() == name)
    }
}

/// A failure of the storage underneath. Never a client error: the server treats it as fatal
/// for the operation and reports it as unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub String);

/// Key-value pairs in key order, as a scan returns them.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Read access to the state machine's column families.
pub trait KvRead {
    /// The value under `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` pairs with `start <= key < end` (no upper bound when `end` is `None`),
    /// in ascending key order.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Pairs, StorageError>;
}

/// Pending writes, last write per key wins. Iterates in (cf, key) order so that committing it
/// is deterministic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSet {
    writes: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
}

impl WriteSet {
    /// Queue `key = value`.
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((cf, key), Some(value));
    }

    /// Queue removal of `key`.
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.writes.insert((cf, key), None);
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Number of queued writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Queued writes in (cf, key) order; `None` is a delete.
    pub fn iter(&self) -> impl Iterator<Item = (Cf, &[u8], Option<&[u8]>)> {
        self.writes
            .iter()
            .map(|((cf, k), v)| (*cf, k.as_slice(), v.as_deref()))
    }

    fn lookup(&self, cf: Cf, key: &[u8]) -> Option<Option<&Vec<u8>>> {
        // BTreeMap keyed by (Cf, Vec<u8>) cannot be probed with a borrowed slice, so copy.
        self.writes.get(&(cf, key.to_vec())).map(|v| v.as_ref())
    }

    fn range<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a Vec<u8>>)> + 'a {
        let lo = Bound::Included((cf, start.to_vec()));
        let hi = match end {
            Some(e) => Bound::Excluded((cf, e.to_vec())),
            None => match next_cf(cf) {
                Some(n) => Bound::Excluded((n, Vec::new())),
                None => Bound::Unbounded,
            },
        };
        self.writes
            .range((lo, hi))
            .map(|((_, k), v)| (k.as_slice(), v.as_ref()))
    }
}

fn next_cf(cf: Cf) -> Option<Cf> {
    let i = Cf::ALL.iter().position(|c| *c == cf)?;
    Cf::ALL.get(i + 1).copied()
}

/// A transaction over a base reader: reads see the base with this transaction's own writes
/// laid over it, so later commands of one log entry observe earlier ones.
pub struct Txn<'a, R: KvRead + ?Sized> {
    base: &'a R,
    writes: WriteSet,
}

impl<'a, R: KvRead + ?Sized> Txn<'a, R> {
    /// An empty transaction over `base`.
    pub fn new(base: &'a R) -> Self {
        Txn {
            base,
            writes: WriteSet::default(),
        }
    }

    /// Queue `key = value`.
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.writes.put(cf, key, value);
    }

    /// Queue removal of `key`.
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.writes.delete(cf, key);
    }

    /// The writes to commit atomically.
    pub fn into_writes(self) -> WriteSet {
        self.writes
    }

    /// The writes queued so far.
    pub fn writes(&self) -> &WriteSet {
        &self.writes
    }
}

impl<R: KvRead + ?Sized> KvRead for Txn<'_, R> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.writes.lookup(cf, key) {
            Some(v) => Ok(v.cloned()),
            None => self.base.get(cf, key),
        }
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Pairs, StorageError> {
        // Overlay writes can hide at most as many base rows as there are deletes in range, so
        // read enough base rows to still fill `limit` after merging.
        let overlay: Vec<(&[u8], Option<&Vec<u8>>)> = self.writes.range(cf, start, end).collect();
        let base = self
            .base
            .scan(cf, start, end, limit.saturating_add(overlay.len()))?;
        let mut out = Vec::with_capacity(limit.min(base.len() + overlay.len()));
        let (mut bi, mut oi) = (0, 0);
        while out.len() < limit && (bi < base.len() || oi < overlay.len()) {
            let take_overlay = match (base.get(bi), overlay.get(oi)) {
                (Some((bk, _)), Some((ok, _))) => {
                    if *ok == bk.as_slice() {
                        bi += 1; // the overlay shadows this base row
                        true
                    } else {
                        *ok < bk.as_slice()
                    }
                }
                (None, Some(_)) => true,
                _ => false,
            };
            if take_overlay {
                let (k, v) = overlay[oi];
                oi += 1;
                if let Some(v) = v {
                    out.push((k.to_vec(), v.clone()));
                }
            } else {
                out.push(base[bi].clone());
                bi += 1;
            }
        }
        Ok(out)
    }
}

/// An in-memory store: the reference implementation of the seam, used by tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemKv {
    data: BTreeMap<(Cf, Vec<u8>), Vec<u8>>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply a write set atomically.
    pub fn commit(&mut self, writes: &WriteSet) {
        for (cf, k, v) in writes.iter() {
            match v {
                Some(v) => {
                    self.data.insert((cf, k.to_vec()), v.to_vec());
                }
                None => {
                    self.data.remove(&(cf, k.to_vec()));
                }
            }
        }
    }

    /// Every pair in (cf, key) order: byte-level identity of two replicas is equality of this.
    pub fn dump(&self) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
        self.data
            .iter()
            .map(|((cf, k), v)| (*cf, k.clone(), v.clone()))
            .collect()
    }
}

impl KvRead for MemKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.data.get(&(cf, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Pairs, StorageError> {
        let lo = Bound::Included((cf, start.to_vec()));
        let hi = match end {
            Some(e) => Bound::Excluded((cf, e.to_vec())),
            None => match next_cf(cf) {
                Some(n) => Bound::Excluded((n, Vec::new())),
                None => Bound::Unbounded,
            },
        };
        Ok(self
            .data
            .range((lo, hi))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
