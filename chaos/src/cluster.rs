//! What the nemesis can do to a cluster, whichever layer runs it: in-process nodes with a
//! fault-injecting transport ([`crate::inproc`]), or containers partitioned with iptables
//! ([`crate::docker`]).

use std::collections::HashSet;
use std::path::Path;

/// A node's id in the cluster.
pub type NodeId = u64;

/// How a node is reached: what `AddLearner` needs, and where clients connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: NodeId,
    /// `host:port` the cluster advertises for clients (forwarding, NOT_LEADER hints).
    pub client_addr: String,
    /// `host:port` of the Raft peer port.
    pub peer_addr: String,
    /// `http://host:port` the harness's clients connect to.
    pub endpoint: String,
}

/// Faults a layer cannot produce answer this error; the nemesis skips that event.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("this layer cannot {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Failed(String),
}

impl From<anyhow::Error> for FaultError {
    fn from(e: anyhow::Error) -> Self {
        FaultError::Failed(format!("{e:#}"))
    }
}

/// A running cluster under test. Node ids are stable; a removed node's id is never reused.
#[allow(async_fn_in_trait)]
pub trait Cluster {
    /// Every node currently running or stopped (not removed), by id.
    fn nodes(&self) -> Vec<NodeSpec>;

    /// Cut traffic between groups: nodes talk only to nodes in their own group. A node in
    /// no group is cut from everyone. Replaces any earlier network fault.
    async fn partition(&mut self, groups: &[Vec<NodeId>]) -> Result<(), FaultError>;

    /// Drop messages from `from` to `to` (one way); adds to the current faults.
    async fn cut_one_way(&mut self, from: NodeId, to: NodeId) -> Result<(), FaultError>;

    /// Remove every network fault.
    async fn heal(&mut self) -> Result<(), FaultError>;

    /// Stop the node abruptly (SIGKILL, or the nearest equivalent); its data dir stays.
    async fn kill(&mut self, id: NodeId) -> Result<(), FaultError>;

    /// Start a killed node again on the same data dir and addresses, re-applying any
    /// network fault that concerns it.
    async fn restart(&mut self, id: NodeId) -> Result<(), FaultError>;

    /// Freeze the node's process (SIGSTOP / docker pause).
    async fn pause(&mut self, id: NodeId) -> Result<(), FaultError>;

    /// Thaw a paused node.
    async fn resume(&mut self, id: NodeId) -> Result<(), FaultError>;

    /// Set node `id`'s wall clock to run `offset_ms` ahead of true time (negative: behind);
    /// 0 puts it right. Monotonic clocks stay true. Survives restarts of the node.
    async fn set_clock_offset(&mut self, id: NodeId, offset_ms: i64) -> Result<(), FaultError>;

    /// Arm `actions` (the `fail` crate's syntax, e.g. `1*return(crash)`, `sleep(100)`) at
    /// persistence point `point` of node `id`; `None` disarms it. Only layers whose nodes
    /// are built with the `failpoints` feature can.
    async fn disk_fault(
        &mut self,
        id: NodeId,
        point: sessiond::store::Point,
        actions: Option<&str>,
    ) -> Result<(), FaultError>;

    /// Start a new, empty node (not yet a member: the caller adds it through the admin API).
    async fn start_fresh(&mut self) -> Result<NodeSpec, FaultError>;

    /// Stop a node for good and delete its data (after it left the membership).
    async fn destroy(&mut self, id: NodeId) -> Result<(), FaultError>;

    /// Copy every node's log (and anything else worth keeping) into `dir`.
    async fn collect_logs(&self, dir: &Path) -> anyhow::Result<()>;

    /// Stop everything and free the resources (ports, dirs, containers).
    async fn shutdown(self) -> anyhow::Result<()>;
}

/// A free loopback port for a node (see [`sessiond_workload::ports::free`]).
pub fn free_port() -> anyhow::Result<u16> {
    sessiond_workload::ports::free().ok_or_else(|| anyhow::anyhow!("no free loopback port"))
}

/// The directed links `(from, to)` a partition into `groups` cuts: every pair of distinct
/// nodes not in the same group (a node in no group is cut from everyone).
pub fn links_cut(ids: &[NodeId], groups: &[Vec<NodeId>]) -> HashSet<(NodeId, NodeId)> {
    let group_of = |n: NodeId| groups.iter().position(|g| g.contains(&n));
    let mut down = HashSet::new();
    for &a in ids {
        for &b in ids {
            if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                down.insert((a, b));
            }
        }
    }
    down
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_cuts_exactly_the_cross_links() {
        let cut = links_cut(&[1, 2, 3, 4], &[vec![1, 2], vec![3]]);
        assert!(!cut.contains(&(1, 2)) && !cut.contains(&(2, 1)));
        assert!(cut.contains(&(1, 3)) && cut.contains(&(3, 2)));
        // Node 4 is in no group: cut both ways from everyone.
        assert!(cut.contains(&(4, 3)) && cut.contains(&(1, 4)));
        assert_eq!(cut.len(), 12 - 2);
    }
}
