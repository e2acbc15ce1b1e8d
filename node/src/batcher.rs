//! Write batching: concurrent commands are coalesced into one log entry.
//!
//! openraft 0.9 syncs the log once per `client_write`, so proposing every command on its own
//! would cost one fsync each. The batcher takes whatever commands are waiting when a slot
//! frees up (at most `max_batch`), stamps them with the cluster time ([`crate::clock`]), proposes them as
//! one [`Batch`], and hands each caller its own outcome. While an entry is being replicated
//! the next batch fills up, so batch size adapts to load with no added latency when idle.

use crate::clock::Clocks;
use crate::raft_types::{NodeId, NodeInfo, Raft};
use crate::store::StateReader;
use openraft::error::{ClientWriteError, RaftError};
use sessiond_state::command::{Batch, Command, Outcome};
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::record::Policy;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Why a proposal produced no outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; nothing was appended, so forwarding is safe.
    #[error("not the leader")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    },
    /// The outcome is unknown (leadership lost after appending, node shutting down, ...):
    /// the caller must retry with the same request id.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Makes sure the cluster policy is in the state before the first command runs under it.
///
/// A freshly bootstrapped cluster has no policy in its state; the first batch a leader
/// proposes then starts with `Configure` carrying this node's configured policy, so even the
/// very first create is judged by the operator's rules rather than built-in defaults.
struct PolicyGuard {
    policy: Policy,
    state: StateReader,
    configured: bool,
}

impl PolicyGuard {
    fn command(&mut self) -> Option<Command> {
        if self.configured {
            return None;
        }
        match self.state.view().get(Cf::Meta, POLICY_KEY) {
            Ok(Some(_)) => {
                self.configured = true;
                None
            }
            Ok(None) => Some(Command::Configure {
                policy: self.policy.clone(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the policy; proposing without it");
                None
            }
        }
    }
}

/// Meta key under which the state machine keeps the policy (absent until configured).
pub const POLICY_KEY: &[u8] = b"policy";

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Outcome, ProposeError>>,
}

/// Largest log entry the batcher builds, in encoded command bytes. With openraft's
/// `max_payload_entries` (see `node::raft_config`) this bounds an AppendEntries message well
/// below the peer port's message cap, so replication never sends what the peer must refuse.
pub const MAX_ENTRY_BYTES: usize = 512 * 1024;

/// Encoded size of a command, without encoding it.
fn encoded_len(c: &Command) -> usize {
    postcard::serialize_with_flavor(c, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX)
}

/// Whether a command of `size` bytes joins a batch of `count` commands holding `bytes`: while
/// under both limits, and always as the first (a single command is bounded by the request
/// limits, far below the entry size).
fn fits(count: usize, bytes: usize, size: usize, max_batch: usize) -> bool {
    count == 0 || (count < max_batch && bytes.saturating_add(size) <= MAX_ENTRY_BYTES)
}

/// Handle to the batcher task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

/// Observations of the batcher, for metrics.
pub trait BatchObserver: Send + Sync + 'static {
    /// A batch of `size` commands was proposed.
    fn batch_proposed(&self, size: usize);
}

impl Proposer {
    /// Start the batcher task for `raft`.
    pub fn spawn(
        raft: Raft,
        clocks: Clocks,
        state: StateReader,
        policy: Policy,
        limits: BatchLimits,
        observer: Arc<dyn BatchObserver>,
    ) -> Proposer {
        let (tx, rx) = mpsc::channel(limits.max_batch.saturating_mul(4).max(64));
        let guard = PolicyGuard {
            policy,
            state,
            configured: false,
        };
        tokio::spawn(run(raft, clocks, rx, limits, guard, observer));
        Proposer { tx }
    }

    /// Propose one command and wait for its outcome.
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { command, reply })
            .await
            .map_err(|_| ProposeError::Unavailable("node is shutting down".into()))?;
        rx.await
            .map_err(|_| ProposeError::Unavailable("node is shutting down".into()))?
    }
}

/// How large batches get and how many are in flight.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_inflight: usize,
    /// A leader that has not heard from a quorum for longer than this proposes nothing: an
    /// entry appended then commits only when the quorum is back, carrying the old stamp, and a
    /// rotation in it would lose that much of its grace window once it is visible. The
    /// callers get `Unavailable` (nothing was appended) and retry with the same request id.
    pub max_quorum_age_ms: u64,
}

/// How long ago a quorum last acknowledged this node, if it leads and that is longer than
/// `max_ms`.
fn quorum_lost(raft: &Raft, max_ms: u64) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    match (m.state, m.millis_since_quorum_ack) {
        (openraft::ServerState::Leader, Some(age)) if age > max_ms => Some(age),
        _ => None,
    }
}

async fn run(
    raft: Raft,
    clocks: Clocks,
    mut rx: mpsc::Receiver<Pending>,
    limits: BatchLimits,
    mut guard: PolicyGuard,
    observer: Arc<dyn BatchObserver>,
) {
    let max_batch = limits.max_batch;
    let slots = Arc::new(Semaphore::new(limits.max_inflight));
    // A command that did not fit the previous batch opens the next one.
    let mut carried: Option<(Pending, usize)> = None;
    loop {
        // Wait for a free slot first, so commands keep queueing (and batching) meanwhile.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(p) => {
                    let size = encoded_len(&p.command);
                    (p, size)
                }
                None => return,
            },
        };
        let mut bytes = first.1;
        let mut pending = vec![first.0];
        while pending.len() < max_batch {
            let Ok(p) = rx.try_recv() else { break };
            let size = encoded_len(&p.command);
            if !fits(pending.len(), bytes, size, max_batch) {
                carried = Some((p, size));
                break;
            }
            bytes += size;
            pending.push(p);
        }
        observer.batch_proposed(pending.len());
        let configure = guard.command();
        let raft = raft.clone();
        let clocks = clocks.clone();
        tokio::spawn(async move {
            let skip = usize::from(configure.is_some());
            let (commands, replies): (Vec<_>, Vec<_>) = configure
                .into_iter()
                .map(|c| (c, None))
                .chain(pending.into_iter().map(|p| (p.command, Some(p.reply))))
                .unzip();
            let replies: Vec<_> = replies.into_iter().flatten().collect();
            if let Some(age) = quorum_lost(&raft, limits.max_quorum_age_ms) {
                for r in replies {
                    let _ = r.send(Err(ProposeError::Unavailable(format!(
                        "the leader has not heard from a quorum for {age} ms; nothing was \
                         written"
                    ))));
                }
                return;
            }
            let batch = Batch {
                // The replicated time is folded in by the applied watcher. The planted bug of
                // the chaos harness's proof stamps the leader's own wall clock instead.
                stamp_ms: match cfg!(feature = "planted-wall-clock-stamp") {
                    true => clocks.wall_ms(),
                    false => clocks.stamp(0),
                },
                commands,
            };
            let n = replies.len();
            match raft.client_write(batch).await {
                Ok(resp) => {
                    let mut outcomes = resp.data;
                    if skip > 0 && outcomes.len() == n + skip {
                        if let Some(Err(e)) = outcomes.first() {
                            tracing::error!(error = %e, "the configured policy was refused");
                        }
                        outcomes.drain(..skip);
                    }
                    if outcomes.len() != n {
                        let err = ProposeError::Unavailable(format!(
                            "state machine answered {} outcomes for {n} commands",
                            outcomes.len()
                        ));
                        for r in replies {
                            let _ = r.send(Err(err.clone()));
                        }
                    } else {
                        for (r, o) in replies.into_iter().zip(outcomes) {
                            let _ = r.send(Ok(o));
                        }
                    }
                }
                Err(e) => {
                    let err = propose_error(e);
                    for r in replies {
                        let _ = r.send(Err(err.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

fn propose_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader_id: f.leader_id,
            leader: f.leader_node,
        },
        other => ProposeError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_in_bytes_as_well_as_count() {
        // A first command always fits, whatever its size.
        assert!(fits(0, 0, MAX_ENTRY_BYTES * 2, 512));
        // 64 KiB commands: at most eight per entry.
        let big = 64 * 1024;
        let mut n = 0;
        let mut bytes = 0;
        while fits(n, bytes, big, 512) {
            n += 1;
            bytes += big;
        }
        assert_eq!(n, MAX_ENTRY_BYTES / big);
        // Small commands: the count limit.
        let (mut n, mut bytes) = (0, 0);
        while fits(n, bytes, 100, 512) {
            n += 1;
            bytes += 100;
        }
        assert_eq!(n, 512);
    }

    #[test]
    fn encoded_len_counts_the_session_data() {
        use sessiond_state::command::Command;
        use sessiond_state::token::{RequestKey, SealedToken, SessionId, TokenHash, TOKEN_BYTES};
        let create = |data: usize| Command::Create {
            request_id: RequestKey([1; 16]),
            id: SessionId([1; 16]),
            token_hash: TokenHash([1; 32]),
            sealed_token: SealedToken([1; TOKEN_BYTES]),
            user_id: "u".into(),
            data: vec![7; data],
            attributes: Default::default(),
            idle_timeout_ms: None,
            absolute_timeout_ms: None,
        };
        let empty = encoded_len(&create(0));
        assert_eq!(encoded_len(&create(65_536)), empty + 65_536 + 2);
        assert_eq!(
            encoded_len(&create(100)),
            postcard::to_allocvec(&create(100)).expect("encodes").len()
        );
    }
}
