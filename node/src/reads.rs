//! Linearizable reads with shared leadership checks.
//!
//! Every linearizable read needs the leader to confirm, with a quorum, that it still leads
//! (ReadIndex). Reads that arrive while one check is running wait for the next check and
//! share it: one round of heartbeats serves them all. A read never reuses a check that began
//! before it arrived, which is what keeps it linearizable.

use crate::raft_types::{NodeId, NodeInfo, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

/// Why a linearizable read could not be confirmed here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    },
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Handle to the read-barrier task.
#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::Sender<oneshot::Sender<Result<(), ReadError>>>,
}

/// Observations of the read barrier, for metrics.
pub trait ReadObserver: Send + Sync + 'static {
    /// One leadership check served `readers` reads.
    fn check_shared(&self, readers: usize);
}

/// Checks that fail for want of a quorum are retried this many times: right after an election
/// or a restart a follower may miss one heartbeat round, which is no reason to fail a read.
const QUORUM_RETRIES: u32 = 3;

async fn confirm(raft: &Raft) -> Result<(), ReadError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match raft.ensure_linearizable().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                return Err(ReadError::NotLeader {
                    leader_id: f.leader_id,
                    leader: f.leader_node,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))
                if attempt <= QUORUM_RETRIES =>
            {
                tracing::debug!(error = %e, attempt, "leadership check without quorum; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(ReadError::Unavailable(e.to_string())),
        }
    }
}

impl ReadBarrier {
    /// Start the task that runs leadership checks for `raft`.
    pub fn spawn(raft: Raft, observer: std::sync::Arc<dyn ReadObserver>) -> ReadBarrier {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Result<(), ReadError>>>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                observer.check_shared(waiters.len());
                let result = confirm(&raft).await;
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        ReadBarrier { tx }
    }

    /// Wait until this node is confirmed leader and has applied everything committed before
    /// the call; local state may then be read linearizably.
    pub async fn confirm(&self) -> Result<(), ReadError> {
        // The planted bug the chaos harness must catch: serve "linearizable" reads from local
        // state without confirming leadership.
        if cfg!(feature = "planted-stale-reads") {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| ReadError::Unavailable("node is shutting down".into()))?;
        rx.await
            .map_err(|_| ReadError::Unavailable("node is shutting down".into()))?
    }
}
