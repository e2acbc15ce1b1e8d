//! When a `STALE` read may be served from this node's applied state.
//!
//! The bound: a `STALE` read never misses a write acknowledged more than `bound` (plus one
//! peer message delay) before it. A node may serve one only if, within the last `bound`
//! measured on its monotonic clock, a leader told it a commit index that its applied index has
//! since reached:
//! - a follower hears the commit index in every accepted AppendEntries (heartbeats included).
//!   The contact is dated not at arrival but at the leader's last quorum acknowledgment, which
//!   the leader sends along as an age: a deposed leader cut off with a follower keeps sending
//!   heartbeats, but its quorum acknowledgment grows old, so neither serves old state for
//!   longer than the bound. A leader sends an age only once the commit index it sends is of
//!   its own term (then every entry of earlier leaders is below it).
//! - the leader itself is fresh while a quorum acknowledged it within the bound and it has
//!   applied an entry of its own term (so it has applied everything earlier leaders
//!   committed).
//!
//! A node that restarts, or heals after a partition, is therefore not fresh until it has
//! applied what the leader told it, however recently it heard from the leader: it takes the
//! linearizable path meanwhile. Only monotonic time is used: a wall clock stepped back cannot
//! keep a cut-off node fresh.

use crate::raft_types::Raft;
use openraft::ServerState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// This node's view of how recently it was told the cluster's commit index.
#[derive(Clone, Debug)]
pub struct Freshness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The zero of this node's monotonic milliseconds.
    origin: Instant,
    bound_ms: u64,
    /// Follower: the latest commit index a leader told it, and when that was true.
    told: Mutex<Option<Told>>,
    /// Leader: when (monotonic ms + 1; 0 = never) a quorum last acknowledged it, in `term`.
    quorum_at: AtomicU64,
    quorum_term: AtomicU64,
    /// The highest commit index this node knows of: told by a leader, applied before a
    /// restart, or applied of its own term while leading (for `Status` and
    /// [`crate::leadership`]).
    commit_heard: AtomicU64,
}

/// A commit index and the (monotonic) time at which a leader vouched for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Told {
    at_ms: u64,
    commit_index: u64,
}

/// What this node is, for the freshness decision of one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// The leader of `term`, whose last applied entry is of `applied_term`.
    Leader { term: u64, applied_term: u64 },
    /// Any other node, with its applied index.
    Follower { applied_index: u64 },
}

impl Freshness {
    /// A node that has not been in touch yet, allowing `bound_ms` of staleness.
    pub fn new(bound_ms: u64) -> Self {
        Freshness {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                bound_ms,
                told: Mutex::new(None),
                quorum_at: AtomicU64::new(0),
                quorum_term: AtomicU64::new(0),
                commit_heard: AtomicU64::new(0),
            }),
        }
    }

    /// The configured bound.
    pub fn bound_ms(&self) -> u64 {
        self.inner.bound_ms
    }

    /// This node's monotonic clock, in milliseconds since the node started.
    pub fn now_ms(&self) -> u64 {
        self.at_ms(Instant::now())
    }

    fn at_ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.inner.origin).as_millis() as u64
    }

    /// Leader: a quorum acknowledged this node as leader of `term` at `at`, and it has
    /// applied an entry of `term`.
    pub fn quorum_acked(&self, term: u64, at: Instant) {
        let at_ms = self.at_ms(at) + 1;
        let inner = &self.inner;
        if inner.quorum_term.load(Ordering::Acquire) != term {
            // A new term: the previous term's acknowledgment says nothing about this one.
            inner.quorum_at.store(0, Ordering::Release);
            inner.quorum_term.store(term, Ordering::Release);
        }
        inner.quorum_at.fetch_max(at_ms, Ordering::AcqRel);
    }

    /// Leader, sending AppendEntries of `term` at monotonic `now_ms`: how long ago a quorum
    /// acknowledged it in that term, if it did.
    pub fn quorum_age_ms(&self, term: u64, now_ms: u64) -> Option<u64> {
        if self.inner.quorum_term.load(Ordering::Acquire) != term {
            return None;
        }
        match self.inner.quorum_at.load(Ordering::Acquire) {
            0 => None,
            at => Some(now_ms.saturating_sub(at - 1)),
        }
    }

    /// Follower: a leader told it `commit_index` at a message whose sender's quorum
    /// acknowledgment was `age_ms` old when sent; the message arrived at monotonic `now_ms`.
    pub fn told(&self, commit_index: u64, age_ms: u64, now_ms: u64) {
        let at_ms = now_ms.saturating_sub(age_ms);
        let Ok(mut told) = self.inner.told.lock() else {
            return;
        };
        match *told {
            Some(t) if t.at_ms > at_ms => {}
            _ => {
                *told = Some(Told {
                    at_ms,
                    commit_index,
                })
            }
        }
    }

    /// `commit_index` is known to be committed: an accepted AppendEntries carried it, or this
    /// node applied it.
    pub fn heard_commit(&self, commit_index: u64) {
        self.inner
            .commit_heard
            .fetch_max(commit_index, Ordering::Relaxed);
    }

    /// The highest commit index this node knows of.
    pub fn commit_heard(&self) -> u64 {
        self.inner.commit_heard.load(Ordering::Relaxed)
    }

    /// Whether a `STALE` read may be served from local state now.
    pub fn fresh(&self, local: Local) -> bool {
        self.fresh_at(local, self.now_ms())
    }

    fn fresh_at(&self, local: Local, now_ms: u64) -> bool {
        let within = |at_ms: u64| now_ms.saturating_sub(at_ms) <= self.inner.bound_ms;
        match local {
            Local::Leader { term, applied_term } => {
                applied_term == term
                    && self
                        .quorum_age_ms(term, now_ms)
                        .is_some_and(|age| age <= self.inner.bound_ms)
            }
            Local::Follower { applied_index } => match self.inner.told.lock() {
                Ok(told) => told.is_some_and(|t| {
                    // The planted bug of the chaos harness's proof: a follower counted fresh
                    // while it is behind.
                    let caught_up = applied_index >= t.commit_index
                        || cfg!(feature = "planted-lagging-follower");
                    within(t.at_ms) && caught_up
                }),
                Err(_) => false,
            },
        }
    }
}

/// Follow `raft`'s reports: while it leads, record its quorum acknowledgments.
pub fn watch_quorum(raft: Raft, freshness: Freshness) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let (ServerState::Leader, Some(age)) = (m.state, m.millis_since_quorum_ack) {
                    let at = Instant::now()
                        .checked_sub(std::time::Duration::from_millis(age))
                        .unwrap_or(freshness.inner.origin);
                    freshness.quorum_acked(m.current_term, at);
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}

/// What `raft` is now, with `applied_index` from the state machine, for [`Freshness::fresh`].
pub fn local(raft: &Raft, applied_index: u64) -> Local {
    let m = raft.metrics();
    let m = m.borrow();
    match m.state {
        ServerState::Leader => Local::Leader {
            term: m.current_term,
            applied_term: m.last_applied.map_or(0, |l| l.leader_id.term),
        },
        _ => Local::Follower { applied_index },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_follower_is_fresh_only_once_it_applied_what_it_was_told() {
        let f = Freshness::new(1_000);
        let now = f.now_ms() + 10_000;
        assert!(
            !f.fresh_at(Local::Follower { applied_index: 99 }, now),
            "never told"
        );
        f.told(100, 0, now);
        assert!(
            !f.fresh_at(Local::Follower { applied_index: 99 }, now),
            "behind"
        );
        assert!(f.fresh_at(Local::Follower { applied_index: 100 }, now));
        assert!(f.fresh_at(Local::Follower { applied_index: 100 }, now + 1_000));
        assert!(
            !f.fresh_at(Local::Follower { applied_index: 100 }, now + 1_001),
            "past bound"
        );
    }

    #[test]
    fn a_follower_dates_contact_by_the_leaders_quorum_acknowledgment() {
        let f = Freshness::new(1_000);
        let now = f.now_ms() + 10_000;
        // A deposed leader's heartbeat: arrives now, but its quorum is 5 s old.
        f.told(100, 5_000, now);
        assert!(!f.fresh_at(Local::Follower { applied_index: 100 }, now));
        // A later, older-dated message does not replace a newer one.
        f.told(200, 0, now);
        f.told(150, 900, now);
        assert!(!f.fresh_at(Local::Follower { applied_index: 150 }, now));
        assert!(f.fresh_at(Local::Follower { applied_index: 200 }, now));
    }

    #[test]
    fn a_leader_is_fresh_within_the_bound_of_its_quorum_in_its_own_term() {
        let f = Freshness::new(1_000);
        let t0 = Instant::now();
        let leader = Local::Leader {
            term: 3,
            applied_term: 3,
        };
        assert!(!f.fresh(leader), "no quorum yet");
        f.quorum_acked(3, t0);
        let at = f.at_ms(t0);
        assert!(f.fresh_at(leader, at + 1_000));
        assert!(!f.fresh_at(leader, at + 1_001));
        let catching_up = Local::Leader {
            term: 3,
            applied_term: 2,
        };
        assert!(
            !f.fresh_at(catching_up, at),
            "earlier terms' entries not applied yet"
        );
        let next_term = Local::Leader {
            term: 4,
            applied_term: 4,
        };
        assert!(
            !f.fresh_at(next_term, at),
            "a quorum of term 3 says nothing of term 4"
        );
        assert_eq!(f.quorum_age_ms(3, at + 7), Some(7));
        assert_eq!(f.quorum_age_ms(4, at + 7), None);
    }

    proptest! {
        /// Whatever messages arrive, a follower is fresh only if some message dated within
        /// the bound carried a commit index it has reached.
        #[test]
        fn fresh_implies_a_recent_message_it_has_caught_up_with(
            msgs in prop::collection::vec((0u64..1_000, 0u64..3_000, 0u64..10_000), 0..20),
            applied in 0u64..1_000,
            read_at in 0u64..12_000,
        ) {
            let f = Freshness::new(1_000);
            let mut arrivals = msgs.clone();
            arrivals.sort_by_key(|m| m.2);
            let mut latest: Option<(u64, u64)> = None;
            for (commit, age, at) in arrivals.iter().copied().filter(|m| m.2 <= read_at) {
                f.told(commit, age, at);
                let dated = at.saturating_sub(age);
                if latest.is_none_or(|(d, _)| dated >= d) {
                    latest = Some((dated, commit));
                }
            }
            let fresh = f.fresh_at(Local::Follower { applied_index: applied }, read_at);
            let expected = latest
                .is_some_and(|(d, c)| read_at.saturating_sub(d) <= 1_000 && applied >= c);
            prop_assert_eq!(fresh, expected);
        }
    }
}
