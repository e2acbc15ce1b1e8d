//! The node's wall clock. Only the leader's batcher (to stamp entries) and the read path (to
//! judge expiry as `max(local clock, state-machine time)`) read it; apply never does.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
