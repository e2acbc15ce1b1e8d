//! Expiry by log entries: while this node leads, it looks for due rows in the expiry index
//! and proposes `Expire`, so that every replica removes the same records, tokens, user-index
//! rows, finished tombstones and dedup rows in one batch — and nothing depends on a timer
//! surviving a restart.

use crate::batcher::Proposer;
use crate::clock::Clocks;
use crate::observe::Observer;
use crate::raft_types::{NodeId, Raft};
use crate::store::StateReader;
use sessiond_state::command::{Command, Reply};
use sessiond_state::query;
use std::sync::Arc;
use std::time::Duration;

/// Rows swept per `Expire` entry, so one entry stays small.
pub const SWEEP_LIMIT: u32 = 5_000;

/// Run the sweeper until the process ends.
pub async fn run(
    id: NodeId,
    raft: Raft,
    state: StateReader,
    proposer: Proposer,
    clocks: Clocks,
    observer: Arc<dyn Observer>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if raft.metrics().borrow().current_leader != Some(id) {
            continue;
        }
        // Keep sweeping while full pages come back, then wait for the next tick.
        for _ in 0..100 {
            let view = state.view();
            let now = query::clock(&view).map(|c| clocks.read_now(c));
            match now.and_then(|now| query::expiry_due(&view, now)) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "reading the expiry index failed");
                    break;
                }
            }
            let result = proposer
                .propose(Command::Expire { limit: SWEEP_LIMIT })
                .await;
            if let Ok(outcome) = &result {
                observer.outcome("expire", outcome);
            }
            match result {
                Ok(Ok(Reply::Expired {
                    sessions,
                    tombstones,
                    dedup,
                })) => {
                    tracing::debug!(sessions, tombstones, dedup, "expired rows swept");
                    if sessions + tombstones + dedup < SWEEP_LIMIT {
                        break;
                    }
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to Expire");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Expire not proposed");
                    break;
                }
            }
        }
    }
}
