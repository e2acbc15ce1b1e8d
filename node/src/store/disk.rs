//! Where the node's writes reach the disk, and what the node does when the disk fails.
//!
//! A failed sync of the write-ahead log is never retried. After `fsync` has reported an error
//! the kernel may already have dropped the dirty pages it could not write, so a later sync
//! that "succeeds" proves nothing about them. The first failure is latched: every later sync
//! and every write fails with it, openraft stops (a storage error is fatal to it), and the
//! node acknowledges nothing written after the failure. A restart re-reads what the disk
//! really holds and catches up from the leader.
//!
//! Builds with the `failpoints` feature (test builds only; see `Cargo.toml`) can also be told
//! to fail at each [`Point`]: an I/O error, a crash, or a delay (a slow disk). Each point is
//! registered in the `fail` crate as `<point>@<node id>`, so several nodes of one test process
//! each have their own, e.g. `FAILPOINTS='log-sync@2=return(error)'` or, from a test,
//! `fail::cfg("apply@3", "1*sleep(200)")`. The return values understood are `error` (the
//! default) and `crash`.

use super::StoreFault;
use crate::raft_types::NodeId;
use rocksdb::DB;
use std::sync::{Arc, Mutex};

/// A persistence boundary of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before new log entries are written (not yet durable).
    LogAppend,
    /// Before the write-ahead log is synced: the fsync that makes appended entries durable.
    LogSync,
    /// After the sync succeeded, before openraft hears the entries are durable.
    LogSynced,
    /// Before a batch of applied entries is written to the state machine.
    Apply,
    /// Before a built snapshot is saved as the node's current snapshot.
    SnapshotBuild,
    /// Installing a received snapshot, after its file is saved and before the state is
    /// replaced by it.
    SnapshotInstall,
    /// Before log entries covered by a snapshot are deleted.
    Purge,
}

impl Point {
    /// Every point, in the order a write meets them.
    pub const ALL: [Point; 7] = [
        Point::LogAppend,
        Point::LogSync,
        Point::LogSynced,
        Point::Apply,
        Point::SnapshotBuild,
        Point::SnapshotInstall,
        Point::Purge,
    ];

    /// The point's name, as failpoints and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Point::LogAppend => "log-append",
            Point::LogSync => "log-sync",
            Point::LogSynced => "log-synced",
            Point::Apply => "apply",
            Point::SnapshotBuild => "snapshot-build",
            Point::SnapshotInstall => "snapshot-install",
            Point::Purge => "purge",
        }
    }

    /// The failpoint of this point on node `node`.
    pub fn failpoint(self, node: NodeId) -> String {
        format!("{}@{node}", self.name())
    }
}

/// What an injected crash does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Crash {
    /// End the process at once (`abort`): a node that runs as its own process.
    #[default]
    Abort,
    /// Write nothing more, as if the process had died at that point: nodes that share a
    /// process with others (the chaos harness's in-process layer), which restart them.
    StopWriting,
}

/// The disk of one node: the latch of its first failure, and its fault points.
#[derive(Debug)]
pub struct Disk {
    node: NodeId,
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    crash: Crash,
    failed: Mutex<Option<String>>,
}

impl Disk {
    pub fn new(node: NodeId, crash: Crash) -> Arc<Disk> {
        Arc::new(Disk {
            node,
            crash,
            failed: Mutex::new(None),
        })
    }

    /// Why this disk stopped taking writes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn latch(&self, why: String) -> StoreFault {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_none() {
            tracing::error!(
                node = self.node,
                failure = %why,
                "the disk failed: this node writes and acknowledges nothing more; restart it \
                 once the disk is healthy"
            );
            *failed = Some(why.clone());
        }
        StoreFault::DiskFailed(failed.clone().unwrap_or(why))
    }

    /// Every write passes here first: it fails once the disk has failed.
    pub fn writable(&self) -> Result<(), StoreFault> {
        match self.failure() {
            Some(why) => Err(StoreFault::DiskFailed(why)),
            None => Ok(()),
        }
    }

    /// A write at `point` may go ahead: the disk has not failed and no fault is injected.
    pub fn at(&self, point: Point) -> Result<(), StoreFault> {
        self.writable()?;
        self.inject(point)
    }

    /// Sync the write-ahead log: everything written before is durable when this returns Ok.
    /// A failure is latched and never retried.
    pub fn sync_wal(&self, db: &DB) -> Result<(), StoreFault> {
        self.at(Point::LogSync)?;
        if let Err(e) = db.flush_wal(true) {
            return Err(self.latch(format!("syncing the write-ahead log: {e}")));
        }
        self.at(Point::LogSynced)
    }

    #[cfg(feature = "failpoints")]
    fn inject(&self, point: Point) -> Result<(), StoreFault> {
        // `sleep(ms)`, `pause` and `panic` act inside `eval`; `return(x)` comes back here.
        match fail::eval(&point.failpoint(self.node), |arg| arg) {
            None => Ok(()),
            Some(arg) if arg.as_deref() == Some("crash") => match self.crash {
                Crash::Abort => {
                    tracing::error!(node = self.node, point = point.name(), "injected crash");
                    std::process::abort()
                }
                Crash::StopWriting => {
                    Err(self.latch(format!("injected crash at {}", point.name())))
                }
            },
            Some(_) => Err(self.latch(format!("injected I/O error at {}", point.name()))),
        }
    }

    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    fn inject(&self, _point: Point) -> Result<(), StoreFault> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_every_later_write_fails_with_it() {
        let disk = Disk::new(1, Crash::StopWriting);
        assert!(disk.at(Point::Apply).is_ok());
        let first = disk.latch("syncing the write-ahead log: EIO".into());
        assert!(first.to_string().contains("EIO"), "{first}");
        let _ = disk.latch("something later".into());
        for p in Point::ALL {
            let e = disk.at(p).expect_err("a failed disk refuses writes");
            assert!(e.to_string().contains("EIO"), "{e}");
        }
        assert!(disk.failure().is_some_and(|f| f.contains("EIO")));
    }

    #[test]
    fn point_names_are_distinct_and_carry_the_node() {
        let mut names: Vec<_> = Point::ALL.iter().map(|p| p.failpoint(7)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Point::ALL.len());
        assert!(names.iter().all(|n| n.ends_with("@7")));
    }
}
