//! Time for a node: the wall clock it reads, the cluster time the leader stamps entries with,
//! and the replicated time reads judge expiry by. Apply never reads a clock: the stamp is an
//! input of the state machine.
//!
//! One wrong clock must not decide for the cluster (replicated time only moves forward, so a
//! leader a day ahead would expire every session and freeze time for a day). So:
//! - **Stamps** follow the median wall clock of the voters. The leader samples each peer's
//!   clock from its AppendEntries replies (the midpoint of the round trip on its monotonic
//!   clock) and advances every sample by its monotonic clock. With samples from a majority of
//!   the voters, the stamp is their median, else it is the replicated time advanced by the
//!   monotonic clock; and never less than the last stamp or the replicated time, so time keeps
//!   moving at the monotonic rate whatever the clocks do. A leader whose own clock is a day
//!   off is outvoted by the others. Of two sampled clocks (two of three voters reachable) the
//!   one nearer the best floor is taken — the floor being replicated time advanced since it
//!   was applied, the leader's own or one a peer reports in its reply, whichever is later — so
//!   a leader just restarted on an old log does not follow its own wrong clock.
//! - **Skew**: every node knows how far its clock is from the cluster time (the leader from the
//!   median, a follower from the cluster time each AppendEntries carries) and reports it past
//!   `--max-clock-skew-ms` (metric, log, `Status`).
//! - **Reads** judge expiry by the replicated time advanced by the monotonic clock since it
//!   was applied here, never by a bare wall clock.

use crate::raft_types::{NodeId, Raft};
use crate::store::StateReader;
use sessiond_state::query;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time. Production nodes read the system clock; the chaos harness gives
/// each in-process node its own, so that one node's clock can be wrong.
pub trait WallClock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Samples older than this no longer count towards the median.
const SAMPLE_TTL_MS: u64 = 5_000;

/// A peer's wall clock as read at a monotonic instant.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall_ms: u64,
    at: Instant,
}

#[derive(Debug)]
struct State {
    /// Peers' clocks, from AppendEntries replies.
    samples: BTreeMap<NodeId, Sample>,
    /// Peers' replicated time advanced by their monotonic clocks (their floors), from the
    /// same replies.
    floors: BTreeMap<NodeId, Sample>,
    /// Replicated time as last applied here, and when.
    applied: Option<Sample>,
    /// The last stamp handed out.
    last_stamp: u64,
    /// This node's id and the current voters (from Raft's membership).
    self_id: NodeId,
    voters: Vec<NodeId>,
    /// The voters' median clock a leader last told this node, and when it arrived.
    told: Option<Sample>,
}

/// The node's clocks: wall clock, peers' clock samples and replicated time. Cheap to clone.
#[derive(Clone)]
pub struct Clocks {
    wall: Arc<dyn WallClock>,
    state: Arc<Mutex<State>>,
    /// This node's clock minus the cluster time, as last measured.
    skew_ms: Arc<AtomicI64>,
    skewed: Arc<AtomicBool>,
    max_skew_ms: u64,
}

impl std::fmt::Debug for Clocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clocks")
            .field("skew_ms", &self.skew_ms())
            .field("max_skew_ms", &self.max_skew_ms)
            .finish()
    }
}

fn advanced(s: Sample, now: Instant) -> u64 {
    s.wall_ms
        .saturating_add(now.saturating_duration_since(s.at).as_millis() as u64)
}

/// The median of `v`; `None` if empty. For an even count (two of three voters sampled, say)
/// the two middle clocks are candidates and the one nearer `anchor` (the replicated time
/// advanced by the monotonic clock) is taken: when they disagree, one of them is wrong, and
/// the cluster's own time tells which — a clock ahead or behind by more than the gap since the
/// last stamp never drives the stamp, in either direction.
fn median(mut v: Vec<u64>, anchor: u64) -> Option<u64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => {
            let (lo, hi) = (v[n / 2 - 1], v[n / 2]);
            Some(match hi.abs_diff(anchor) < lo.abs_diff(anchor) {
                true => hi,
                false => lo,
            })
        }
    }
}

impl Clocks {
    /// Clocks reading `wall`, reporting a skew beyond `max_skew_ms`.
    pub fn new(wall: Arc<dyn WallClock>, max_skew_ms: u64) -> Self {
        Clocks {
            wall,
            state: Arc::new(Mutex::new(State {
                samples: BTreeMap::new(),
                floors: BTreeMap::new(),
                applied: None,
                last_stamp: 0,
                self_id: 0,
                voters: Vec::new(),
                told: None,
            })),
            skew_ms: Arc::new(AtomicI64::new(0)),
            skewed: Arc::new(AtomicBool::new(false)),
            max_skew_ms,
        }
    }

    /// This node's wall clock.
    pub fn wall_ms(&self) -> u64 {
        self.wall.now_ms()
    }

    /// The largest skew tolerated before it is reported.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// This node's clock minus the cluster time, as last measured (0 before any measure).
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Whether the last measured skew exceeds the tolerated one.
    pub fn skewed(&self) -> bool {
        self.skewed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a harmful
        // way (each field is replaced whole), so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leader: peer `id` answered a message sent at `sent` with its wall clock `wall_ms` and
    /// its floor (replicated time advanced since it applied it), received now.
    pub fn peer_sample(&self, id: NodeId, wall_ms: u64, floor_ms: Option<u64>, sent: Instant) {
        let now = Instant::now();
        let at = sent + now.saturating_duration_since(sent) / 2;
        let mut st = self.lock();
        st.samples.insert(id, Sample { wall_ms, at });
        if let Some(floor) = floor_ms {
            st.floors.insert(id, Sample { wall_ms: floor, at });
        }
    }

    /// This node's floor: the replicated time it applied last, advanced by its monotonic clock
    /// since (`None` before it applied any).
    pub fn floor_ms(&self) -> Option<u64> {
        let now = Instant::now();
        self.lock().applied.map(|s| advanced(s, now))
    }

    /// The replicated (state-machine) time after an apply, observed now.
    pub fn applied(&self, replicated_ms: u64) {
        let now = Instant::now();
        let mut st = self.lock();
        // Replicated time never runs backwards here: an older time applied later (a follower
        // catching up) leaves the advanced earlier observation in place.
        if st.applied.is_none_or(|s| replicated_ms > advanced(s, now)) {
            st.applied = Some(Sample {
                wall_ms: replicated_ms,
                at: now,
            });
        }
    }

    /// Time for judging expiry on reads: the replicated time advanced by the monotonic clock
    /// since it was applied here (`replicated_ms`, the state machine's, if nothing was
    /// observed) — or the voters' median clock where this node has sampled a majority of it
    /// (a leader) and it is later: after a whole-cluster outage the replicated time is from
    /// before it, and what expired meanwhile must read as expired before the next stamp.
    pub fn read_now(&self, replicated_ms: u64) -> u64 {
        let st = self.lock();
        let (_, median) = self.estimate(&st, replicated_ms);
        let now = Instant::now();
        st.applied
            .map_or(replicated_ms, |s| advanced(s, now))
            .max(replicated_ms)
            .max(median.unwrap_or(0))
    }

    /// Leader: cluster time now (see the module doc) given the voters' ids and the
    /// replicated time, not below the last stamp; measures this node's skew on the way.
    /// Returns the time, and the voters' median clock if a majority was sampled.
    fn estimate(&self, st: &State, replicated_ms: u64) -> (u64, Option<u64>) {
        let (self_id, voters) = (st.self_id, st.voters.as_slice());
        let now = Instant::now();
        let own = self.wall.now_ms();
        let fresh =
            |s: &&Sample| now.saturating_duration_since(s.at).as_millis() as u64 <= SAMPLE_TTL_MS;
        let clocks: Vec<u64> = voters
            .iter()
            .filter_map(|id| match *id == self_id {
                true => Some(own),
                false => st.samples.get(id).filter(fresh).map(|s| advanced(*s, now)),
            })
            .collect();
        // The best lower bound of cluster time, to tell two disagreeing clocks apart: this
        // node's floor, or a voter's that applied a later stamp more recently (this node may
        // have just restarted on an old log).
        let peer_floor = voters
            .iter()
            .filter_map(|id| st.floors.get(id).filter(fresh).map(|s| advanced(*s, now)))
            .max()
            .unwrap_or(0);
        let replicated = st
            .applied
            .map_or(replicated_ms, |s| advanced(s, now))
            .max(replicated_ms);
        let anchor = replicated.max(peer_floor).max(st.last_stamp);
        let median = match clocks.len() > voters.len() / 2 {
            true => median(clocks, anchor),
            false => None,
        };
        if let (Some(m), true) = (median, voters.contains(&self_id)) {
            self.measured(own as i64 - m as i64);
        }
        // The peers' floors only choose between clocks: a peer's word alone never moves time.
        let time = median
            .unwrap_or(replicated)
            .max(replicated)
            .max(st.last_stamp);
        (time, median)
    }

    /// Leader: the stamp for the next log entry.
    pub fn stamp(&self, replicated_ms: u64) -> u64 {
        let mut st = self.lock();
        let (stamp, _) = self.estimate(&st, replicated_ms);
        st.last_stamp = stamp;
        stamp
    }

    /// Leader: the voters' median clock now, to tell followers so they can measure their own
    /// skew; `None` until a majority of the voters' clocks has been sampled.
    pub fn voters_median(&self) -> Option<u64> {
        let st = self.lock();
        self.estimate(&st, 0).1
    }

    /// This node is `self_id`; the voters are `voters` (kept current from Raft's membership).
    pub fn set_membership(&self, self_id: NodeId, voters: Vec<NodeId>) {
        let mut st = self.lock();
        st.self_id = self_id;
        st.voters = voters;
    }

    /// Follower: a leader said the cluster time was `cluster_ms` when it sent a message that
    /// arrived now.
    pub fn told_cluster_time(&self, cluster_ms: u64) {
        let own = self.wall.now_ms();
        self.lock().told = Some(Sample {
            wall_ms: cluster_ms,
            at: Instant::now(),
        });
        self.measured(own as i64 - cluster_ms as i64);
    }

    /// The voters' median clock now as this node reckons it: its own sampled median (a
    /// leader), else the median a leader last told it advanced by the monotonic clock since
    /// (however long ago: a partition does not stop the monotonic clock); `None` before either
    /// is known. What a forwarded call's deadline is dated by, on both ends: the nodes agree
    /// on it within a message's latency, whatever one node's own clock says.
    pub fn median_now(&self) -> Option<u64> {
        let st = self.lock();
        self.estimate(&st, 0)
            .1
            .or_else(|| st.told.map(|s| advanced(s, Instant::now())))
    }

    fn measured(&self, skew: i64) {
        self.skew_ms.store(skew, Ordering::Relaxed);
        let over = skew.unsigned_abs() > self.max_skew_ms;
        let was = self.skewed.swap(over, Ordering::Relaxed);
        if over && !was {
            tracing::warn!(
                skew_ms = skew,
                max_skew_ms = self.max_skew_ms,
                "this node's clock disagrees with the cluster's; it does not drive replicated \
                 time (check NTP)"
            );
        } else if !over && was {
            tracing::info!(
                skew_ms = skew,
                "this node's clock agrees with the cluster's again"
            );
        }
    }
}

/// Keep `clocks`' view of the voters current from `raft`'s reports.
pub fn watch_membership(raft: Raft, clocks: Clocks) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut last: Option<Vec<NodeId>> = None;
        loop {
            let voters: Vec<NodeId> = {
                let m = metrics.borrow_and_update();
                m.membership_config.membership().voter_ids().collect()
            };
            if last.as_ref() != Some(&voters) {
                clocks.set_membership(raft_id(&raft), voters.clone());
                last = Some(voters);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}

fn raft_id(raft: &Raft) -> NodeId {
    raft.metrics().borrow().id
}

/// Keep `clocks`' replicated time current: observe the state machine's time after every apply.
pub fn watch_applied(state: StateReader, clocks: Clocks) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut applied = state.subscribe_applied();
        loop {
            match query::clock(&state.view()) {
                Ok(t) => clocks.applied(t),
                Err(e) => tracing::error!(error = %e, "reading the replicated time failed"),
            }
            if applied.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    /// A settable wall clock.
    struct Fixed(AtomicU64);
    impl WallClock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    const DAY: u64 = 86_400_000;
    const T: u64 = 1_800_000_000_000;

    fn clocks(wall: u64) -> (Clocks, Arc<Fixed>) {
        let w = Arc::new(Fixed(AtomicU64::new(wall)));
        (Clocks::new(w.clone(), 500), w)
    }

    #[test]
    fn a_leader_a_day_ahead_stamps_the_voters_median() {
        let (c, _) = clocks(T + DAY);
        c.applied(T);
        let now = Instant::now();
        c.peer_sample(2, T + 10, None, now);
        c.peer_sample(3, T - 10, None, now);
        c.set_membership(1, vec![1, 2, 3]);
        let stamp = c.stamp(T);
        assert!(
            (T..T + 1_000).contains(&stamp),
            "stamp {stamp} not near {T}"
        );
        assert!(c.skewed(), "its own clock is reported");
        assert!(c.skew_ms() > (DAY - 1_000) as i64);
    }

    #[test]
    fn of_two_disagreeing_clocks_the_one_near_replicated_time_drives_the_stamp() {
        // Two of three voters sampled (the third is cut off), the leader's own clock wrong,
        // and replicated time a little behind (the leader restarted): the peer's right clock
        // is followed, whether the leader's is behind or ahead.
        for own in [T - 2_000, T + DAY] {
            let (c, _) = clocks(own);
            c.applied(T - 300);
            c.peer_sample(2, T, None, Instant::now());
            c.set_membership(1, vec![1, 2, 3]);
            let stamp = c.stamp(T - 300);
            assert!((T..T + 1_000).contains(&stamp), "own {own}: stamp {stamp}");
            assert!(c.skewed(), "own {own}: its clock is reported");
        }
        // The leader's clock right, the peer's wrong: its own is followed.
        for peer in [T - 2_000, T + DAY] {
            let (c, _) = clocks(T);
            c.applied(T - 300);
            c.peer_sample(2, peer, None, Instant::now());
            c.set_membership(1, vec![1, 2, 3]);
            let stamp = c.stamp(T - 300);
            assert!(
                (T..T + 1_000).contains(&stamp),
                "peer {peer}: stamp {stamp}"
            );
            assert!(!c.skewed(), "peer {peer}: the leader's clock is right");
        }
    }

    #[test]
    fn a_restarted_leader_takes_a_peers_floor_to_tell_the_right_clock() {
        // The leader's clock is 2 s behind and it re-applied its log after being down 1.1 s:
        // its own floor is 1.1 s behind, nearer its wrong clock than the right one. The peer's
        // floor (it kept applying) shows which of the two clocks is right.
        let (c, _) = clocks(T - 2_000);
        c.applied(T - 1_100);
        c.set_membership(1, vec![1, 2, 3]);
        let now = Instant::now();
        c.peer_sample(2, T, Some(T - 20), now);
        let stamp = c.stamp(T - 1_100);
        assert!((T - 20..T + 1_000).contains(&stamp), "stamp {stamp}");
        // Without the peer's floor the wrong clock would have been taken.
        let (old, _) = clocks(T - 2_000);
        old.applied(T - 1_100);
        old.set_membership(1, vec![1, 2, 3]);
        old.peer_sample(2, T, None, now);
        assert!(old.stamp(T - 1_100) < T - 500);
    }

    #[test]
    fn without_a_majority_of_samples_time_advances_from_replicated_time() {
        let (c, _) = clocks(T + DAY);
        c.applied(T);
        // Only its own clock: not a majority of three.
        c.set_membership(1, vec![1, 2, 3]);
        let stamp = c.stamp(T);
        assert!((T..T + 1_000).contains(&stamp), "stamp {stamp}");
        // A single-node cluster follows its own clock.
        let (one, _) = clocks(T + 5_000);
        one.set_membership(1, vec![1]);
        assert_eq!(one.stamp(T), T + 5_000);
    }

    #[test]
    fn time_never_freezes_behind_replicated_time() {
        // Replicated time was driven a day ahead before; the voters' clocks are right: stamps
        // keep moving from the replicated time instead of standing still.
        let (c, _) = clocks(T);
        c.applied(T + DAY);
        let now = Instant::now();
        c.peer_sample(2, T, None, now);
        c.peer_sample(3, T, None, now);
        c.set_membership(1, vec![1, 2, 3]);
        let first = c.stamp(T + DAY);
        std::thread::sleep(Duration::from_millis(30));
        let second = c.stamp(T + DAY);
        assert!(first >= T + DAY);
        assert!(second >= first + 25, "{first} then {second}");
    }

    #[test]
    fn stamps_never_go_backwards_when_clocks_step_back() {
        let (c, w) = clocks(T);
        c.set_membership(1, vec![1]);
        let a = c.stamp(0);
        w.0.store(T - 60_000, Ordering::Relaxed);
        let b = c.stamp(0);
        assert!(b >= a);
    }

    #[test]
    fn reads_advance_replicated_time_by_the_monotonic_clock() {
        let (c, w) = clocks(T + DAY);
        assert_eq!(
            c.read_now(T),
            T,
            "nothing observed: the state machine's time"
        );
        c.applied(T);
        std::thread::sleep(Duration::from_millis(20));
        let r = c.read_now(T);
        assert!((T + 20..T + 1_000).contains(&r), "{r}");
        // The wall clock plays no part.
        w.0.store(0, Ordering::Relaxed);
        assert!(c.read_now(T) >= r);
        // An older replicated time applied later (a follower catching up) does not move it back.
        c.applied(T - 5_000);
        assert!(c.read_now(T - 5_000) >= r);
    }

    #[test]
    fn after_an_outage_a_leader_reads_by_the_voters_clocks() {
        // Replicated time is from before a 10-minute outage; the voters' clocks are right.
        let (c, _) = clocks(T);
        c.set_membership(1, vec![1, 2, 3]);
        c.applied(T - 600_000);
        assert!(
            c.read_now(T - 600_000) < T - 500_000,
            "no samples yet: replicated time"
        );
        let now = Instant::now();
        c.peer_sample(2, T, None, now);
        c.peer_sample(3, T + 5, None, now);
        let r = c.read_now(T - 600_000);
        assert!((T..T + 1_000).contains(&r), "{r}");
        // A follower (no samples) keeps to replicated time.
        let (f, _) = clocks(T);
        f.set_membership(2, vec![1, 2, 3]);
        f.applied(T - 600_000);
        assert!(f.read_now(T - 600_000) < T - 500_000);
    }

    #[test]
    fn a_follower_reports_its_skew_from_the_cluster_time_it_is_told() {
        let (c, _) = clocks(T - 3_600_000);
        c.told_cluster_time(T);
        assert!(c.skewed());
        assert_eq!(c.skew_ms(), -3_600_000);
        let (ok, _) = clocks(T + 100);
        ok.told_cluster_time(T);
        assert!(!ok.skewed());
    }

    #[test]
    fn a_follower_reckons_the_median_from_what_it_was_told_not_from_its_own_clock() {
        let (f, _) = clocks(T + 600_000);
        f.set_membership(2, vec![1, 2, 3]);
        assert_eq!(f.median_now(), None, "nothing told yet");
        f.told_cluster_time(T);
        let m = f.median_now().unwrap();
        assert!((T..T + 1_000).contains(&m), "{m}");
        // A leader with a majority sampled uses its own median.
        let (l, _) = clocks(T);
        l.set_membership(1, vec![1, 2, 3]);
        l.peer_sample(2, T + 100, None, Instant::now());
        let m = l.median_now().unwrap();
        assert!((T..T + 1_000).contains(&m), "{m}");
    }

    #[test]
    fn median_of_voters() {
        assert_eq!(median(vec![], 0), None);
        assert_eq!(median(vec![5], 0), Some(5));
        assert_eq!(median(vec![9, 1, 5], 0), Some(5));
        assert_eq!(median(vec![9, 1, 5], 100), Some(5));
        // Even counts: of the two middle clocks, the one nearer the anchor.
        assert_eq!(median(vec![9, 1, 5, 7], 0), Some(5));
        assert_eq!(median(vec![9, 1, 5, 7], 7), Some(7));
        assert_eq!(median(vec![100, 2_000], 1_900), Some(2_000));
        assert_eq!(median(vec![100, 2_000], 150), Some(100));
    }
}
