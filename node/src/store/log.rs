//! openraft's log store on RocksDB: entries in `raft_log` keyed by index (u64 BE), and the
//! vote, committed and last purged log ids in `raft_meta`.
//!
//! Appends are written at once (readable immediately, as openraft requires) and reported to
//! openraft as flushed only after a dedicated thread has synced the write-ahead log, so an
//! acknowledged entry survives a crash. The sync happens off Raft's core task — replication
//! to followers proceeds while the leader's own disk syncs — and one sync covers every append
//! that arrived meanwhile (group commit). A failed sync is never retried (see [`Disk`]).

use super::disk::{Disk, Point};
use super::{cf, io_error, StoreFault, CF_LOG, CF_RAFT_META};
use crate::raft_types::{NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// The Raft log of one node. Clones share the database and the flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    disk: Arc<Disk>,
    flusher: Flusher,
}

/// Syncs the write-ahead log on its own thread and then completes the appends that were
/// waiting for it, in order. The thread ends when the last log store clone is dropped.
#[derive(Clone)]
struct Flusher {
    tx: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl Flusher {
    fn spawn(db: &Arc<DB>, disk: Arc<Disk>) -> Flusher {
        // A weak handle: the database closes with its last store, not with this thread.
        let db = Arc::downgrade(db);
        let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        let spawned = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let synced = match db.upgrade() {
                        Some(db) => disk.sync_wal(&db).map_err(|e| e.to_string()),
                        None => Err("the database is closed".to_string()),
                    };
                    for cb in waiting {
                        cb.log_io_completed(
                            synced.clone().map_err(|e| std::io::Error::other(e.clone())),
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the log sync thread");
        }
        Flusher { tx }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreFault> {
    postcard::to_allocvec(v).map_err(|e| StoreFault::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreFault> {
    postcard::from_bytes(b).map_err(|e| StoreFault::Corrupt(e.to_string()))
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, disk: Arc<Disk>) -> Self {
        LogStore {
            flusher: Flusher::spawn(&db, disk.clone()),
            disk,
            db,
        }
    }

    fn meta<T: DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, StoreFault> {
        let handle = cf(&self.db, CF_RAFT_META)?;
        match self.db.get_cf(handle, k)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, k: &[u8], v: &T) -> Result<(), StoreFault> {
        self.disk.writable()?;
        let handle = cf(&self.db, CF_RAFT_META)?;
        self.db.put_cf_opt(handle, k, encode(v)?, &synced())?;
        Ok(())
    }

    fn last_entry(&self) -> Result<Option<LogId<NodeId>>, StoreFault> {
        let handle = cf(&self.db, CF_LOG)?;
        match self.db.iterator_cf(handle, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item?;
                let e: Entry<TypeConfig> = decode(&v)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }

    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreFault> {
        let handle = cf(&self.db, CF_LOG)?;
        let mut out = Vec::new();
        let from = key(start);
        for item in self
            .db
            .iterator_cf(handle, IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item?;
            let idx = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StoreFault::Corrupt("log key is not 8 bytes".into()))?,
            );
            if end.is_some_and(|e| idx >= e) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e.saturating_add(1)),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        self.entries(start, end)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = |e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e);
        let purged: Option<LogId<NodeId>> = self.meta(PURGED).map_err(read)?;
        let last = self.last_entry().map_err(read)?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta(VOTE)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        let write = |e| io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        self.disk.writable().map_err(write)?;
        let handle = cf(&self.db, CF_RAFT_META).map_err(write)?;
        self.db
            .put_cf(handle, COMMITTED, encode(&committed).map_err(write)?)
            .map_err(|e| write(e.into()))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self
            .meta::<Option<LogId<NodeId>>>(COMMITTED)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let write = |e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e);
        self.disk.at(Point::LogAppend).map_err(write)?;
        let handle = cf(&self.db, CF_LOG).map_err(write)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                handle,
                key(entry.log_id.index),
                encode(&entry).map_err(write)?,
            );
        }
        self.db.write(batch).map_err(|e| write(e.into()))?;
        if let Err(std::sync::mpsc::SendError(callback)) = self.flusher.tx.send(callback) {
            // No sync thread (it could not start): sync here.
            let synced = self.disk.sync_wal(&self.db).map_err(std::io::Error::other);
            callback.log_io_completed(synced);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let write = |e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e);
        self.disk.writable().map_err(write)?;
        let handle = cf(&self.db, CF_LOG).map_err(write)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(handle, key(log_id.index), key(u64::MAX));
        batch.delete_cf(handle, key(u64::MAX));
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| write(e.into()))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let write = |e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e);
        self.disk.at(Point::Purge).map_err(write)?;
        // The purge point and the removal in one batch: the log state never shows a hole.
        let log = cf(&self.db, CF_LOG).map_err(write)?;
        let meta = cf(&self.db, CF_RAFT_META).map_err(write)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, PURGED, encode(&log_id).map_err(write)?);
        batch.delete_range_cf(log, key(0), key(log_id.index.saturating_add(1)));
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| write(e.into()))
    }
}
