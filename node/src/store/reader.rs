//! Read views of the applied state for the request path.

use super::{cf, StoreFault};
use rocksdb::{Direction, IteratorMode, SnapshotWithThreadMode, DB};
use sessiond_state::kv::{Cf, KvRead, Pairs, StorageError};
use std::sync::Arc;
use tokio::sync::watch;

/// Read access to applied state, cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) db: Arc<DB>,
    pub(crate) applied: watch::Receiver<u64>,
}

impl StateReader {
    /// A consistent point-in-time view: several reads through it see one applied state, never
    /// half of a batch.
    pub fn view(&self) -> StateView<'_> {
        StateView {
            db: &self.db,
            snap: Some(self.db.snapshot()),
        }
    }

    /// Index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// RocksDB's estimate of the number of keys in a family (for metrics; not exact).
    pub fn estimate_keys(&self, family: Cf) -> Option<u64> {
        let handle = cf(&self.db, family.name()).ok()?;
        self.db
            .property_int_value_cf(handle, "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
    }

    /// Bytes a column family occupies: its live SST files plus its memtables. Disk per table,
    /// for operators sizing a node; the RocksDB WAL and the snapshot file are not included.
    pub fn family_bytes(&self, name: &str) -> Option<u64> {
        let handle = cf(&self.db, name).ok()?;
        let prop = |p: &str| self.db.property_int_value_cf(handle, p).ok().flatten();
        Some(prop("rocksdb.total-sst-files-size")? + prop("rocksdb.cur-size-all-mem-tables")?)
    }

    /// Notified after every apply.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// A view of the state machine's column families, either pinned to a RocksDB snapshot or (for
/// apply itself, the only writer) reading the latest state.
pub struct StateView<'a> {
    pub(crate) db: &'a DB,
    pub(crate) snap: Option<SnapshotWithThreadMode<'a, DB>>,
}

fn fault(e: StoreFault) -> StorageError {
    StorageError(e.to_string())
}

impl KvRead for StateView<'_> {
    fn get(&self, family: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let handle = cf(self.db, family.name()).map_err(fault)?;
        let got = match &self.snap {
            Some(s) => s.get_cf(handle, key),
            None => self.db.get_cf(handle, key),
        };
        got.map_err(|e| fault(e.into()))
    }

    fn scan(
        &self,
        family: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Pairs, StorageError> {
        let handle = cf(self.db, family.name()).map_err(fault)?;
        let mode = IteratorMode::From(start, Direction::Forward);
        let iter = match &self.snap {
            Some(s) => s.iterator_cf(handle, mode),
            None => self.db.iterator_cf(handle, mode),
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| fault(e.into()))?;
            if end.is_some_and(|e| k.as_ref() >= e) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}
