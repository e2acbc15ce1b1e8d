//! The session policy chaos clusters run with: windows short enough that rotations, grace
//! expiry and absolute expiry all happen several times inside a run of a few seconds.

/// Grace window, and the minimum interval between rotations (equal, as the default policy
/// has them, so a token is never more than one generation behind inside its window).
pub const GRACE_WINDOW_MS: u64 = 1_000;
/// Bound on clock skew assumed by the expiry and grace checks (nodes and harness share one
/// host clock here; the slack covers millisecond rounding and batching delay).
pub const CLOCK_SKEW_MS: u64 = 250;
/// How old a state a STALE read may return: the nodes run with this `--stale-read-bound-ms`.
pub const STALE_READ_BOUND_MS: u64 = 600;
/// Absolute lifetime of the short-lived sessions a run creates to exercise expiry.
pub const SHORT_SESSION_MS: u64 = 4_000;
/// Idle and absolute timeout of ordinary sessions: longer than any run.
pub const LONG_SESSION_MS: u64 = 3_600_000;
