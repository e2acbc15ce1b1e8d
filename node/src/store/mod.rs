//! RocksDB storage of a node: the Raft log and its metadata, and the state machine's column
//! families (see [`sessiond_state::kv::Cf`]), all in one database so that one WAL orders them.
//!
//! - [`log`]: openraft's log store (`raft_log`, `raft_meta`).
//! - [`machine`]: openraft's state machine, applying batches through `sessiond_state`.
//! - [`snapshot`]: the snapshot stream format and its durable file.
//! - [`reader`]: consistent read views of applied state for the request path.

pub mod log;
pub mod machine;
pub mod reader;
pub mod snapshot;

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

/// Opens a node's database.
pub struct Store;

impl Store {
    /// Open (or create) the database under `dir` and hand out its three faces.
    pub fn open(dir: &Path) -> anyhow::Result<(LogStore, StateMachineStore, StateReader)> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let names = [CF_LOG, CF_RAFT_META]
            .into_iter()
            .chain(Cf::ALL.iter().map(|c| c.name()));
        let cfs = names
            .map(|n| {
                let mut o = Options::default();
                o.set_compression_type(rocksdb::DBCompressionType::None);
                ColumnFamilyDescriptor::new(n, o)
            })
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)
            .with_context(|| format!("opening RocksDB under {}", dir.display()))?;
        let db = Arc::new(db);
        let machine = StateMachineStore::open(db.clone(), dir.join("snapshot"))?;
        let reader = machine.reader();
        Ok((LogStore::new(db), machine, reader))
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
