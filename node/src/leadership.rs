//! What a node does when it becomes leader: say which entries it committed late.
//!
//! A batch carries the stamp of the leader that proposed it. When that leader is cut off
//! after appending it, a later leader may commit it — seconds (an election) or hours (the
//! whole cluster down) later — still carrying its old stamp. A rotation in it would then
//! start its grace window in the past, and a tab presenting the previous token right after
//! the rotation became visible would be judged a reuse and logged out. So a new leader's
//! first entry is `LeaderCommitted { from_index }`: the entries from just past the highest
//! commit index it had been told up to that entry became visible only now
//! ([`sessiond_state::record::LateCommit`]).

use crate::batcher::{ProposeError, Proposer};
use crate::freshness::Freshness;
use crate::raft_types::Raft;
use openraft::ServerState;
use sessiond_state::command::Command;
use std::time::Duration;

/// How often a new leader tries to get its first entry in before it gives up for the term.
const ATTEMPTS: u32 = 100;
/// Pause between attempts.
const RETRY: Duration = Duration::from_millis(50);

/// Follow `raft`'s reports. On becoming leader of a new term, propose `LeaderCommitted` from
/// just past the commit index this node had been told; while leading, count what it applied
/// of its own term as told (so a later term of its own starts from there).
pub fn watch(raft: Raft, proposer: Proposer, freshness: Freshness) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut announced_term = 0;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    let term = m.current_term;
                    if term != announced_term {
                        // Read before this term's own commits are counted below.
                        let from_index = freshness.commit_heard().saturating_add(1);
                        announced_term = term;
                        tokio::spawn(announce(raft.clone(), proposer.clone(), term, from_index));
                    }
                    if let Some(applied) = m.last_applied.filter(|l| l.leader_id.term == term) {
                        // An applied entry of its own term: everything up to it is committed.
                        freshness.heard_commit(applied.index);
                    }
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Propose `LeaderCommitted` until it is in, or this node no longer leads `term`.
async fn announce(raft: Raft, proposer: Proposer, term: u64, from_index: u64) {
    for _ in 0..ATTEMPTS {
        if !leads(&raft, term) {
            return;
        }
        match proposer
            .propose(Command::LeaderCommitted { from_index })
            .await
        {
            Ok(_) => {
                tracing::debug!(term, from_index, "first entry of the term committed");
                return;
            }
            Err(ProposeError::NotLeader { .. }) => return,
            Err(ProposeError::Unavailable(e)) => {
                tracing::debug!(term, error = %e, "first entry of the term not in yet");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    tracing::warn!(term, "could not commit the first entry of the term");
}

fn leads(raft: &Raft, term: u64) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Leader && m.current_term == term
}
