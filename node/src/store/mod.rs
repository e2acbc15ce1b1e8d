//! RocksDB storage of a node: the Raft log and its metadata, and the state machine's column
//! families (see [`sessiond_state::kv::Cf`]), all in one database so that one WAL orders them.
//!
//! - [`log`]: openraft's log store (`raft_log`, `raft_meta`).
//! - [`machine`]: openraft's state machine, applying batches through `sessiond_state`.
//! - [`snapshot`]: the snapshot stream format and its durable file.
//! - [`reader`]: consistent read views of applied state for the request path.
//! - [`disk`]: the persistence points, the latch of a failed sync, and injected faults.

pub mod backup;
pub mod disk;
pub mod format;
pub mod log;
pub mod machine;
pub mod reader;
pub mod snapshot;

pub use disk::{Crash, Disk, Point};
pub use log::LogStore;
pub use machine::{SnapshotBuilder, StateMachineStore};
pub use reader::{StateReader, StateView};

use crate::raft_types::StorageError;
use anyhow::Context;
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};
use sessiond_state::kv::Cf;
use std::path::Path;
use std::sync::Arc;

/// Column family of Raft log entries: index (u64 BE) → entry.
pub(crate) const CF_LOG: &str = "raft_log";
/// Column family of Raft metadata: vote, committed, last purged.
pub(crate) const CF_RAFT_META: &str = "raft_meta";

/// Every column family of the database, Raft's own included.
pub fn family_names() -> impl Iterator<Item = &'static str> {
    [CF_LOG, CF_RAFT_META]
        .into_iter()
        .chain(Cf::ALL.iter().map(|c| c.name()))
}

/// Opens a node's database.
pub struct Store;

/// RocksDB memory knobs of a node.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Size of each column family's memtable. Smaller memtables keep the skiplists that every
    /// apply searches shallower (and in cache); larger ones flush less often.
    pub write_buffer_mib: usize,
    /// One LRU block cache shared by every column family.
    pub block_cache_mib: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            write_buffer_mib: 16,
            block_cache_mib: 128,
        }
    }
}

/// Bits per key of the SST and memtable bloom filters: most point lookups of an apply are
/// misses (a fresh request id in `dedup`, no tombstone), which the filters answer without a
/// search.
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// The WAL is kept to this many memtables' worth of bytes (see `open_on`).
const WAL_BUFFERS: usize = 4;

impl Store {
    /// Open (or create) the database under `dir` with default tuning.
    pub fn open(dir: &Path) -> anyhow::Result<(LogStore, StateMachineStore, StateReader)> {
        Store::open_on(dir, Tuning::default(), Disk::new(0, Crash::default()))
    }

    /// Open (or create) the database under `dir` on `disk` and hand out its three faces.
    pub fn open_on(
        dir: &Path,
        tuning: Tuning,
        disk: Arc<Disk>,
    ) -> anyhow::Result<(LogStore, StateMachineStore, StateReader)> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        // One WAL serves every column family, and RocksDB deletes a WAL file only once every
        // family with data in it has flushed. Families written rarely (tombstones,
        // revocations, raft_meta) would pin gigabytes of WAL; past this total the oldest
        // families are flushed instead. (At 200 000 sessions the WAL was 40 % of the disk.)
        opts.set_max_total_wal_size(((tuning.write_buffer_mib.max(1) * WAL_BUFFERS) as u64) << 20);
        let cache = rocksdb::Cache::new_lru_cache(tuning.block_cache_mib.max(1) << 20);
        let cfs = family_names()
            .map(|n| {
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_block_cache(&cache);
                table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
                table.set_whole_key_filtering(true);
                table.set_cache_index_and_filter_blocks(true);
                table.set_pin_l0_filter_and_index_blocks_in_cache(true);
                let mut o = Options::default();
                o.set_compression_type(rocksdb::DBCompressionType::None);
                o.set_write_buffer_size(tuning.write_buffer_mib.max(1) << 20);
                o.set_memtable_prefix_bloom_ratio(0.05);
                o.set_memtable_whole_key_filtering(true);
                o.set_block_based_table_factory(&table);
                ColumnFamilyDescriptor::new(n, o)
            })
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)
            .with_context(|| format!("opening RocksDB under {}", dir.display()))?;
        format::check(&db).with_context(|| format!("opening {}", dir.display()))?;
        let db = Arc::new(db);
        let machine = StateMachineStore::open(db.clone(), dir.join("snapshot"), disk.clone())?;
        let reader = machine.reader();
        Ok((LogStore::new(db, disk), machine, reader))
    }
}

/// What can go wrong underneath the stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreFault {
    #[error(transparent)]
    Rocks(#[from] rocksdb::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("column family {0} is missing")]
    MissingCf(String),
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    #[error("state machine: {0}")]
    State(String),
    #[error("the disk failed earlier ({0}); nothing more is written until the node restarts")]
    DiskFailed(String),
    #[error("stored format: {0}")]
    Format(String),
}

/// The handle of a column family that `Store::open` created.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreFault> {
    // Every family is created at open; a missing one is a broken database, reported as an
    // error rather than a panic.
    db.cf_handle(name)
        .ok_or_else(|| StoreFault::MissingCf(name.to_string()))
}

/// An openraft storage error.
pub(crate) fn io_error(subject: ErrorSubject<u64>, verb: ErrorVerb, e: StoreFault) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&e)),
    }
}
