//! How stale a `STALE` read may be.
//!
//! A node serves `STALE` reads from its own applied state only while it has recently been in
//! touch with a legitimate leader: a follower when it last accepted an AppendEntries
//! (heartbeats included) from the leader, the leader when a quorum last confirmed it (a read
//! barrier or a committed write). Past `bound`, the read takes the linearizable path instead,
//! which refreshes the contact on the leader. A partitioned node therefore stops serving
//! `STALE` reads after `bound` rather than serving old state forever.

use crate::clock::wall_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Last time this node knew itself to be in touch with the cluster's leader.
#[derive(Clone, Debug)]
pub struct Freshness {
    last_contact_ms: Arc<AtomicU64>,
    bound_ms: u64,
}

impl Freshness {
    /// A node that has not been in touch yet, allowing `bound_ms` of staleness.
    pub fn new(bound_ms: u64) -> Self {
        Freshness {
            last_contact_ms: Arc::new(AtomicU64::new(0)),
            bound_ms,
        }
    }

    /// Record contact now.
    pub fn touch(&self) {
        self.last_contact_ms.fetch_max(wall_ms(), Ordering::Relaxed);
    }

    /// Whether a `STALE` read may be served locally.
    pub fn fresh(&self) -> bool {
        wall_ms().saturating_sub(self.last_contact_ms.load(Ordering::Relaxed)) <= self.bound_ms
    }

    /// The configured bound.
    pub fn bound_ms(&self) -> u64 {
        self.bound_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_after_contact_and_within_bound() {
        let f = Freshness::new(60_000);
        assert!(!f.fresh(), "never in touch");
        f.touch();
        assert!(f.fresh());
        let zero = Freshness::new(0);
        zero.last_contact_ms.store(wall_ms() - 5, Ordering::Relaxed);
        assert!(!zero.fresh());
    }
}
