//! openraft's state machine on RocksDB. Apply runs `sessiond_state::apply::apply_batch` over
//! the latest state and commits everything one `apply` call produced — records, every index,
//! the last applied log id and membership — as one `WriteBatch`.

use super::disk::{Disk, Point};
use super::reader::{StateReader, StateView};
use super::snapshot::{self, SnapshotDir};
use super::{cf, io_error, StoreFault};
use crate::raft_types::{BatchResponse, NodeId, NodeInfo, StorageError, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use sessiond_state::apply::apply_batch;
use sessiond_state::kv::{Cf, Txn};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const LAST_APPLIED: &[u8] = b"last_applied";
const LAST_MEMBERSHIP: &[u8] = b"last_membership";

pub(crate) type Membership = StoredMembership<NodeId, NodeInfo>;

/// The state machine of one node.
pub struct StateMachineStore {
    db: Arc<DB>,
    disk: Arc<Disk>,
    snapshots: SnapshotDir,
    applied_tx: watch::Sender<u64>,
    applied_rx: watch::Receiver<u64>,
}

fn sm_err(verb: ErrorVerb) -> impl Fn(StoreFault) -> StorageError {
    move |e| io_error(ErrorSubject::StateMachine, verb, e)
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreFault> {
    postcard::to_allocvec(v).map_err(|e| StoreFault::Corrupt(e.to_string()))
}

fn read_applied(db: &DB) -> Result<(Option<LogId<NodeId>>, Membership), StoreFault> {
    let meta = cf(db, Cf::Meta.name())?;
    let applied = match db.get_cf(meta, LAST_APPLIED)? {
        Some(b) => postcard::from_bytes(&b).map_err(|e| StoreFault::Corrupt(e.to_string()))?,
        None => None,
    };
    let membership = match db.get_cf(meta, LAST_MEMBERSHIP)? {
        Some(b) => postcard::from_bytes(&b).map_err(|e| StoreFault::Corrupt(e.to_string()))?,
        None => Membership::default(),
    };
    Ok((applied, membership))
}

impl StateMachineStore {
    pub(crate) fn open(db: Arc<DB>, dir: PathBuf, disk: Arc<Disk>) -> anyhow::Result<Self> {
        let (applied, _) = read_applied(&db)?;
        let (applied_tx, applied_rx) = watch::channel(applied.map(|l| l.index).unwrap_or(0));
        let mut store = StateMachineStore {
            db,
            disk,
            snapshots: SnapshotDir::new(dir),
            applied_tx,
            applied_rx,
        };
        // An install saves the snapshot file before it writes the state: a crash between the
        // two leaves a snapshot newer than the state, finished here, before Raft starts.
        if let Some((meta, stream)) = store.snapshots.load()? {
            if meta.last_log_id > applied {
                tracing::warn!(
                    snapshot = %meta.snapshot_id,
                    "the last snapshot install did not finish; installing it again"
                );
                store.write_state(&meta, &stream)?;
            }
        }
        Ok(store)
    }

    /// A reader of this state machine's applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            db: self.db.clone(),
            applied: self.applied_rx.clone(),
        }
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry<TypeConfig>>,
    ) -> Result<Vec<BatchResponse>, StoreFault> {
        let latest = StateView {
            db: &self.db,
            snap: None,
        };
        let mut txn = Txn::new(&latest);
        let mut responses = Vec::with_capacity(entries.len());
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Vec::new()),
                EntryPayload::Normal(batch) => responses.push(
                    apply_batch(&mut txn, entry.log_id.index, &batch)
                        .map_err(|e| StoreFault::State(e.0))?,
                ),
                EntryPayload::Membership(m) => {
                    membership = Some(Membership::new(Some(entry.log_id), m));
                    responses.push(Vec::new());
                }
            }
        }
        let writes = txn.into_writes();
        let mut batch = WriteBatch::default();
        for (family, k, v) in writes.iter() {
            let handle = cf(&self.db, family.name())?;
            match v {
                Some(v) => batch.put_cf(handle, k, v),
                None => batch.delete_cf(handle, k),
            }
        }
        let meta = cf(&self.db, Cf::Meta.name())?;
        if let Some(last) = last {
            batch.put_cf(meta, LAST_APPLIED, encode(&Some(last))?);
        }
        if let Some(m) = &membership {
            batch.put_cf(meta, LAST_MEMBERSHIP, encode(m)?);
        }
        // Not synced: the synced Raft log is the source of truth, and an entry lost here is
        // applied again on restart (last_applied is in the same batch). Snapshots sync the WAL
        // before the log behind them may be purged.
        self.disk.at(Point::Apply)?;
        self.db.write(batch)?;
        if let Some(last) = last {
            self.applied_tx.send_replace(last.index);
        }
        Ok(responses)
    }

    /// Replace the state with a snapshot's: the file first, then the state (see below).
    pub(crate) fn install(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        stream: &[u8],
    ) -> Result<(), StoreFault> {
        // Refuse a damaged stream before anything changes.
        snapshot::decode(stream)?;
        // The snapshot file first, durably: whatever happens after, the kept snapshot reaches
        // at least as far as the state (and the log openraft purges behind it). A crash
        // before the state is written is finished on the next open.
        self.disk.writable()?;
        self.snapshots.save(meta, stream)?;
        self.disk.at(Point::SnapshotInstall)?;
        self.write_state(meta, stream)
    }

    /// Replace the whole state with the snapshot's, synced, in one batch.
    fn write_state(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        stream: &[u8],
    ) -> Result<(), StoreFault> {
        let pairs = snapshot::decode(stream)?;
        let mut batch = WriteBatch::default();
        for family in Cf::ALL {
            // Clear the family's whole key space: everything from the empty key up to its
            // current last key, and that key. Apply is the only writer and install runs in its
            // place, so nothing lands past that key meanwhile.
            let handle = cf(&self.db, family.name())?;
            if let Some(item) = self.db.iterator_cf(handle, IteratorMode::End).next() {
                let (last, _) = item?;
                batch.delete_range_cf(handle, &[][..], &last[..]);
                batch.delete_cf(handle, &last[..]);
            }
        }
        for (family, k, v) in pairs {
            batch.put_cf(cf(&self.db, family.name())?, k, v);
        }
        let m = cf(&self.db, Cf::Meta.name())?;
        batch.put_cf(m, LAST_APPLIED, encode(&meta.last_log_id)?);
        batch.put_cf(m, LAST_MEMBERSHIP, encode(&meta.last_membership)?);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync)?;
        self.applied_tx
            .send_replace(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError> {
        read_applied(&self.db).map_err(sm_err(ErrorVerb::Read))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.apply_entries(entries)
            .map_err(sm_err(ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            disk: self.disk.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stream = snapshot.into_inner();
        self.install(meta, &stream).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let loaded = self
            .snapshots
            .load()
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds snapshots from a consistent RocksDB view, off the apply path (openraft runs it in a
/// task of its own; the RocksDB work itself runs on a blocking thread).
pub struct SnapshotBuilder {
    db: Arc<DB>,
    disk: Arc<Disk>,
    snapshots: SnapshotDir,
}

/// Distinguishes snapshots built at the same log id within one millisecond.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

fn snapshot_id(last_applied: Option<LogId<NodeId>>) -> String {
    let (term, index) = last_applied
        .map(|l| (l.leader_id.term, l.index))
        .unwrap_or((0, 0));
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{term}-{index}-{stamp}-{seq}")
}

/// The applied log id, the membership and the snapshot stream of a state dump.
pub(crate) type Dump = (Option<LogId<NodeId>>, Membership, Vec<u8>);

/// Every pair of the applied state as a snapshot stream, from one consistent RocksDB view,
/// with the applied log id and membership it holds (kept beside the stream, not in it).
pub(crate) fn dump(db: &DB) -> Result<Dump, StoreFault> {
    let snap = db.snapshot();
    let meta_cf = cf(db, Cf::Meta.name())?;
    let decode_err = |e: postcard::Error| StoreFault::Corrupt(e.to_string());
    let last_applied: Option<LogId<NodeId>> = match snap.get_cf(meta_cf, LAST_APPLIED)? {
        Some(b) => postcard::from_bytes(&b).map_err(decode_err)?,
        None => None,
    };
    let membership: Membership = match snap.get_cf(meta_cf, LAST_MEMBERSHIP)? {
        Some(b) => postcard::from_bytes(&b).map_err(decode_err)?,
        None => Membership::default(),
    };
    let mut enc = snapshot::Encoder::default();
    for family in Cf::ALL {
        let handle = cf(db, family.name())?;
        for item in snap.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item?;
            if family == Cf::Meta && (k.as_ref() == LAST_APPLIED || k.as_ref() == LAST_MEMBERSHIP) {
                continue;
            }
            enc.push(family, &k, &v);
        }
    }
    Ok((last_applied, membership, enc.finish()))
}

impl SnapshotBuilder {
    fn build(&self) -> Result<(SnapshotMeta<NodeId, NodeInfo>, Vec<u8>), StoreFault> {
        // Make every applied write durable before the log behind this snapshot can be purged.
        self.disk.sync_wal(&self.db)?;
        let (last_applied, membership, stream) = dump(&self.db)?;
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: snapshot_id(last_applied),
        };
        self.disk.at(Point::SnapshotBuild)?;
        if !self.snapshots.save(&meta, &stream)? {
            tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot is kept as current");
        }
        Ok((meta, stream))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let builder = SnapshotBuilder {
            db: self.db.clone(),
            disk: self.disk.clone(),
            snapshots: self.snapshots.clone(),
        };
        let (meta, stream) = tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(|e| StoreFault::Io(std::io::Error::other(e)))
            .and_then(|built| built)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = stream.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stream)),
        })
    }
}
