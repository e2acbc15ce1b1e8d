//! The nemesis: a seeded schedule of faults, carried out against any [`Cluster`] while the
//! workload runs, each fault logged into the history.

use crate::cluster::{Cluster, FaultError, NodeId, NodeSpec};
use crate::history::{op, Args, Clock, Event, Outcome, Value};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use sessiond::store::Point;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::{
    AddLearnerRequest, ChangeMembershipRequest, Role, StatusRequest, StatusResponse,
    TriggerSnapshotRequest,
};
use std::time::Duration;

/// One kind of fault. Which nodes it hits is decided when it happens (the leader is only
/// known then), from the schedule's own random stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Split the nodes into two random halves.
    Partition,
    /// Cut the leader off from every other node.
    IsolateLeader,
    /// Drop messages in one direction between two nodes.
    OneWay,
    /// Two halves that both reach one bridge node.
    Bridge,
    /// SIGKILL a node and start it again on the same data.
    KillRestart,
    /// Freeze a node's process for a while.
    Pause,
    /// Restart every node, one after the other.
    RollingRestart,
    /// Remove a follower from the membership and add a fresh, empty node.
    ReplaceMember,
    /// Remove every network fault.
    Heal,
    /// Set one node's wall clock ahead or behind (seconds to a day), or right again. At most
    /// one node's clock is wrong at a time: a minority, which the design tolerates.
    ClockJump,
    /// Flip one node's wall clock back and forth between wrong and right, quickly.
    ClockStrobe,
    /// At one persistence point of one node (the leader half of the time): an I/O error or a
    /// crash at the next write there — after which the node is restarted, as its supervisor
    /// would — or a slow disk for a while. Layers without failpoints skip it.
    DiskFault,
    /// Cut a follower off until the leader has purged its log past the follower's last entry,
    /// then heal: the follower must catch up by installing a snapshot, under load.
    SnapshotCatchUp,
    /// Set the current leader's wall clock to this offset (ms), first putting right the clock
    /// of any other node that is wrong: a scripted wrong leader clock for hand-written
    /// schedules. Never generated; `ClockJump` covers it at random.
    LeaderClock(i64),
}

/// Clock offsets a jump picks from, ms: a day ahead, an hour behind, and smaller steps.
const CLOCK_OFFSETS_MS: [i64; 7] = [
    86_400_000, -3_600_000, 600_000, 30_000, -30_000, 2_000, -2_000,
];

impl Fault {
    const ALL: [Fault; 13] = [
        Fault::Partition,
        Fault::IsolateLeader,
        Fault::OneWay,
        Fault::Bridge,
        Fault::KillRestart,
        Fault::Pause,
        Fault::RollingRestart,
        Fault::ReplaceMember,
        Fault::Heal,
        Fault::ClockJump,
        Fault::ClockStrobe,
        Fault::DiskFault,
        Fault::SnapshotCatchUp,
    ];

    /// Relative frequency in generated schedules.
    fn weight(self) -> u32 {
        match self {
            Fault::Partition | Fault::IsolateLeader | Fault::KillRestart => 4,
            Fault::OneWay
            | Fault::Bridge
            | Fault::Pause
            | Fault::Heal
            | Fault::ClockJump
            | Fault::DiskFault => 3,
            Fault::RollingRestart
            | Fault::ReplaceMember
            | Fault::ClockStrobe
            | Fault::SnapshotCatchUp => 1,
            Fault::LeaderClock(_) => 0,
        }
    }
}

/// When each fault happens, counted from the start of the workload.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<(Duration, Fault)>,
}

impl Schedule {
    /// A schedule over `length`: a fault every 0.4–1.2 s, starting after a calm first
    /// half-second so sessions exist before trouble starts.
    pub fn generate(seed: u64, length: Duration) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let total: u32 = Fault::ALL.iter().map(|f| f.weight()).sum();
        let mut at = Duration::from_millis(500);
        let mut steps = Vec::new();
        while at < length {
            let mut pick = rng.random_range(0..total);
            let mut fault = Fault::Heal;
            for f in Fault::ALL {
                if pick < f.weight() {
                    fault = f;
                    break;
                }
                pick -= f.weight();
            }
            steps.push((at, fault));
            at += Duration::from_millis(rng.random_range(400..1200));
        }
        Schedule { seed, steps }
    }
}

/// The status of every reachable node.
pub async fn statuses(nodes: &[NodeSpec]) -> Vec<StatusResponse> {
    let asks = nodes.iter().map(|n| async move {
        let ch = crate::secure::endpoint(&n.endpoint)
            .ok()?
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        tokio::time::timeout(
            Duration::from_millis(700),
            ClusterClient::new(ch).status(req),
        )
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The node that reports itself leader with the highest term, if any.
pub async fn leader(nodes: &[NodeSpec]) -> Option<NodeId> {
    statuses(nodes)
        .await
        .into_iter()
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)
        .map(|s| s.node_id)
}

/// Wait until a leader exists that every running voter that answers agrees on, and that
/// leader has applied its log (so final reads see everything committed).
pub async fn wait_for_leader(nodes: &[NodeSpec], timeout: Duration) -> Option<NodeId> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let all = statuses(nodes).await;
        let leaders: Vec<&StatusResponse> = all
            .iter()
            .filter(|s| s.role == Role::Leader as i32)
            .collect();
        if let [l] = leaders[..] {
            // Only members must agree: a node whose addition never committed (its
            // AddLearner reached a leader that was then deposed) follows nobody, correctly.
            let member = |id: NodeId| l.members.iter().any(|m| m.id == id);
            let agreed = all
                .iter()
                .filter(|s| member(s.node_id))
                .all(|s| s.leader_id == l.node_id);
            if agreed && l.applied_index >= l.last_log_index && l.millis_since_quorum_ack < 1_000 {
                return Some(l.node_id);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Ask node `spec` for a snapshot; the index its log is purged to afterwards.
pub async fn trigger_snapshot(spec: &NodeSpec) -> Option<u64> {
    let ch = crate::secure::endpoint(&spec.endpoint)
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()?;
    let mut admin = ClusterClient::new(ch);
    let mut req = tonic::Request::new(TriggerSnapshotRequest {});
    req.set_timeout(Duration::from_secs(2));
    admin.trigger_snapshot(req).await.ok()?;
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(Duration::from_millis(500));
    Some(admin.status(req).await.ok()?.into_inner().purged_index)
}

/// Carries out a schedule, keeping track of what it broke so it can mend it at the end.
pub struct Nemesis {
    seed: u64,
    rng: StdRng,
    clock: Clock,
    /// Nodes killed and not yet restarted.
    killed: Vec<NodeId>,
    paused: Vec<NodeId>,
    /// The node whose clock is wrong, if one is.
    skewed: Option<NodeId>,
    pub events: Vec<Event>,
}

impl Nemesis {
    pub fn new(seed: u64, clock: Clock) -> Nemesis {
        Nemesis {
            seed,
            rng: StdRng::seed_from_u64(seed ^ 0x6e656d65),
            clock,
            killed: Vec::new(),
            paused: Vec::new(),
            skewed: None,
            events: Vec::new(),
        }
    }

    fn log(&mut self, invoke_ns: u64, what: String, result: Result<(), FaultError>) {
        let (outcome, error) = match result {
            Ok(()) => (Outcome::Ok, None),
            Err(e) => (Outcome::Info, Some(e.to_string())),
        };
        self.events.push(Event {
            process: "nemesis".into(),
            session: None,
            op: op::NEMESIS.into(),
            args: Args {
                nemesis: Some(what),
                ..Args::default()
            },
            result: outcome,
            value: Value {
                error,
                ..Value::default()
            },
            invoke_ns,
            complete_ns: self.clock.now_ns(),
        });
    }

    /// Do one fault now.
    pub async fn apply<C: Cluster>(&mut self, cluster: &mut C, fault: Fault) {
        let start = self.clock.now_ns();
        let nodes = cluster.nodes();
        let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        ids.retain(|id| !self.killed.contains(id));
        if ids.len() < 2 {
            return;
        }
        ids.shuffle(&mut self.rng);
        match fault {
            Fault::Partition => {
                let cut = self.rng.random_range(1..ids.len());
                let groups = vec![ids[..cut].to_vec(), ids[cut..].to_vec()];
                let r = cluster.partition(&groups).await;
                self.log(start, format!("partition {groups:?}"), r);
            }
            Fault::IsolateLeader => {
                let Some(l) = leader(&nodes).await else {
                    self.log(start, "isolate leader: no leader".into(), Ok(()));
                    return;
                };
                let rest: Vec<NodeId> = ids.iter().copied().filter(|i| *i != l).collect();
                let r = cluster.partition(&[vec![l], rest.clone()]).await;
                self.log(start, format!("isolate leader {l} from {rest:?}"), r);
            }
            Fault::OneWay => {
                let (from, to) = (ids[0], ids[1]);
                let r = cluster.cut_one_way(from, to).await;
                self.log(start, format!("cut one way {from} -> {to}"), r);
            }
            Fault::Bridge => {
                let bridge = ids[0];
                let rest = &ids[1..];
                let half = rest.len().div_ceil(2);
                let mut a = rest[..half].to_vec();
                let mut b = rest[half..].to_vec();
                a.push(bridge);
                b.push(bridge);
                // Two overlapping groups: expressed as every cross link cut but the bridge's.
                let r = match cluster.partition(&[ids.clone()]).await {
                    Ok(()) => {
                        let mut r = Ok(());
                        for &x in &a {
                            for &y in &b {
                                if x != bridge && y != bridge {
                                    r = r.and(cluster.cut_one_way(x, y).await);
                                    r = r.and(cluster.cut_one_way(y, x).await);
                                }
                            }
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                self.log(start, format!("bridge {a:?} <{bridge}> {b:?}"), r);
            }
            Fault::KillRestart => {
                let victim = ids[0];
                let r = cluster.kill(victim).await;
                let ok = r.is_ok();
                self.log(start, format!("kill {victim}"), r);
                if ok {
                    self.killed.push(victim);
                    let down = Duration::from_millis(self.rng.random_range(200..1500));
                    tokio::time::sleep(down).await;
                    let start = self.clock.now_ns();
                    let r = cluster.restart(victim).await;
                    if r.is_ok() {
                        self.killed.retain(|k| *k != victim);
                    }
                    self.log(start, format!("restart {victim}"), r);
                }
            }
            Fault::Pause => {
                let victim = ids[0];
                let r = cluster.pause(victim).await;
                if matches!(r, Err(FaultError::Unsupported(_))) {
                    return;
                }
                let ok = r.is_ok();
                self.log(start, format!("pause {victim}"), r);
                if ok {
                    self.paused.push(victim);
                    let frozen = Duration::from_millis(self.rng.random_range(300..1500));
                    tokio::time::sleep(frozen).await;
                    let start = self.clock.now_ns();
                    let r = cluster.resume(victim).await;
                    if r.is_ok() {
                        self.paused.retain(|p| *p != victim);
                    }
                    self.log(start, format!("resume {victim}"), r);
                }
            }
            Fault::RollingRestart => {
                let mut order = ids.clone();
                order.sort_unstable();
                for id in order {
                    let start = self.clock.now_ns();
                    let r = cluster.kill(id).await;
                    let r = match r {
                        Ok(()) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            cluster.restart(id).await
                        }
                        Err(e) => Err(e),
                    };
                    self.log(start, format!("rolling restart {id}"), r);
                    // Let the restarted node rejoin before taking the next one down.
                    let _ = wait_for_leader(&cluster.nodes(), Duration::from_secs(5)).await;
                }
            }
            Fault::ReplaceMember => {
                let r = self.replace_member(cluster).await;
                let what = match &r {
                    Ok(w) => w.clone(),
                    Err(_) => "replace member".to_string(),
                };
                self.log(start, what, r.map(|_| ()));
            }
            Fault::Heal => {
                let r = cluster.heal().await;
                self.log(start, "heal".into(), r);
            }
            Fault::ClockJump => {
                let victim = self.clock_victim(&nodes, &ids).await;
                let offset = match self.skewed.is_some() && self.rng.random_bool(0.3) {
                    true => 0,
                    false => *CLOCK_OFFSETS_MS.choose(&mut self.rng).unwrap_or(&0),
                };
                let r = cluster.set_clock_offset(victim, offset).await;
                if matches!(r, Err(FaultError::Unsupported(_))) {
                    return;
                }
                if r.is_ok() {
                    self.skewed = (offset != 0).then_some(victim);
                }
                self.log(start, format!("clock of {victim} {offset:+} ms"), r);
            }
            Fault::LeaderClock(offset) => {
                let Some(l) = leader(&nodes).await else {
                    self.log(start, "leader clock: no leader".into(), Ok(()));
                    return;
                };
                let mut r = Ok(());
                if let Some(s) = self.skewed.filter(|s| *s != l) {
                    r = cluster.set_clock_offset(s, 0).await;
                    if matches!(r, Err(FaultError::Unsupported(_))) {
                        return;
                    }
                    if r.is_ok() {
                        self.skewed = None;
                    }
                }
                let r = r.and(cluster.set_clock_offset(l, offset).await);
                if matches!(r, Err(FaultError::Unsupported(_))) {
                    return;
                }
                if r.is_ok() {
                    self.skewed = (offset != 0).then_some(l);
                }
                self.log(start, format!("clock of leader {l} {offset:+} ms"), r);
            }
            Fault::DiskFault => self.disk_fault(cluster, &nodes, &ids).await,
            Fault::SnapshotCatchUp => self.snapshot_catch_up(cluster, &nodes).await,
            Fault::ClockStrobe => {
                let victim = self.clock_victim(&nodes, &ids).await;
                let offset = *CLOCK_OFFSETS_MS.choose(&mut self.rng).unwrap_or(&0);
                let mut r = Ok(());
                for i in 0..10 {
                    let now = if i % 2 == 0 { offset } else { 0 };
                    r = r.and(cluster.set_clock_offset(victim, now).await);
                    if matches!(r, Err(FaultError::Unsupported(_))) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if r.is_ok() {
                    self.skewed = None;
                }
                self.log(
                    start,
                    format!("clock of {victim} strobed by {offset:+} ms"),
                    r,
                );
            }
        }
    }

    /// An error or crash at the next write through one persistence point, then the restart
    /// a supervisor would do; or a slow disk for a while.
    async fn disk_fault<C: Cluster>(
        &mut self,
        cluster: &mut C,
        nodes: &[NodeSpec],
        ids: &[NodeId],
    ) {
        let start = self.clock.now_ns();
        let victim = match self.rng.random_bool(0.5) {
            true => leader(nodes).await.unwrap_or(ids[0]),
            false => ids[0],
        };
        let point = *Point::ALL.choose(&mut self.rng).unwrap_or(&Point::LogSync);
        let kind = self.rng.random_range(0..3u8);
        let (actions, what) = match kind {
            0 | 1 => {
                let action = if kind == 0 { "error" } else { "crash" };
                (
                    format!("1*return({action})"),
                    format!("disk {action} at the next {} of {victim}", point.name()),
                )
            }
            _ => {
                let ms = self.rng.random_range(20..250u64);
                (
                    format!("sleep({ms})"),
                    format!("slow disk ({ms} ms) at {} of {victim}", point.name()),
                )
            }
        };
        let r = cluster.disk_fault(victim, point, Some(&actions)).await;
        if matches!(r, Err(FaultError::Unsupported(_))) {
            return;
        }
        let ok = r.is_ok();
        self.log(start, what, r);
        if !ok {
            return;
        }
        if kind == 2 {
            let slow = Duration::from_millis(self.rng.random_range(300..1500));
            tokio::time::sleep(slow).await;
            let start = self.clock.now_ns();
            let r = cluster.disk_fault(victim, point, None).await;
            self.log(start, format!("disk of {victim} fast again"), r);
            return;
        }
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(300..1500))).await;
        // Whether or not the fault was met, the node is restarted on what its disk holds.
        let start = self.clock.now_ns();
        let mut r = cluster.disk_fault(victim, point, None).await;
        r = r.and(cluster.kill(victim).await);
        r = r.and(cluster.restart(victim).await);
        self.log(start, format!("restart {victim} after the disk fault"), r);
    }

    /// Blackhole a follower until the leader's log is purged past it, then heal.
    async fn snapshot_catch_up<C: Cluster>(&mut self, cluster: &mut C, nodes: &[NodeSpec]) {
        let start = self.clock.now_ns();
        let all = statuses(nodes).await;
        let Some(lead) = all
            .iter()
            .filter(|s| s.role == Role::Leader as i32)
            .max_by_key(|s| s.term)
        else {
            self.log(start, "snapshot catch-up: no leader".into(), Ok(()));
            return;
        };
        let followers: Vec<&StatusResponse> = all
            .iter()
            .filter(|s| s.node_id != lead.node_id && !self.killed.contains(&s.node_id))
            .collect();
        let Some(f) = followers.choose(&mut self.rng) else {
            self.log(start, "snapshot catch-up: no follower".into(), Ok(()));
            return;
        };
        let (victim, behind_from) = (f.node_id, f.last_log_index);
        let rest: Vec<NodeId> = nodes
            .iter()
            .map(|n| n.id)
            .filter(|i| *i != victim)
            .collect();
        if let Err(e) = cluster.partition(&[rest]).await {
            self.log(start, format!("blackhole {victim}"), Err(e));
            return;
        }
        // Snapshots every few hundred entries and keeps only 50 behind: with the load running
        // a few seconds suffice; asking for a snapshot hastens it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut purged = 0;
        while tokio::time::Instant::now() < deadline && purged <= behind_from {
            if let Some(l) = leader(nodes).await.filter(|l| *l != victim) {
                if let Some(spec) = nodes.iter().find(|n| n.id == l) {
                    purged = trigger_snapshot(spec).await.unwrap_or(purged);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let r = cluster.heal().await;
        let what = match purged > behind_from {
            true => format!(
                "blackhole {victim} until the leader purged past its log (its last {behind_from}, purged {purged}), heal"
            ),
            false => format!(
                "blackhole {victim}: the leader purged only to {purged} (its last {behind_from}), heal"
            ),
        };
        self.log(start, what, r);
    }

    /// Before the load starts: one node's wall clock set wrong for the whole schedule (a day
    /// ahead, an hour behind or a smaller step; the leader half of the time), chosen from a
    /// random stream of its own so that the schedule's later faults stay what its seed says.
    /// Clock faults of the schedule then hit that node only: never a second wrong clock.
    pub async fn wrong_clock_from_the_start<C: Cluster>(&mut self, cluster: &mut C) {
        let start = self.clock.now_ns();
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x736b_6577);
        let nodes = cluster.nodes();
        let mut victim = nodes.choose(&mut rng).map(|n| n.id);
        if rng.random_bool(0.5) {
            victim = leader(&nodes).await.or(victim);
        }
        let Some(victim) = victim else { return };
        let offset = *CLOCK_OFFSETS_MS.choose(&mut rng).unwrap_or(&86_400_000);
        let r = cluster.set_clock_offset(victim, offset).await;
        if matches!(r, Err(FaultError::Unsupported(_))) {
            return;
        }
        if r.is_ok() {
            self.skewed = Some(victim);
        }
        self.log(start, format!("startup clock of {victim} {offset:+} ms"), r);
    }

    /// The node a clock fault hits: the one already wrong (never a second one), else the
    /// leader half of the time (the stamp is the leader's to make), else any.
    async fn clock_victim(&mut self, nodes: &[NodeSpec], ids: &[NodeId]) -> NodeId {
        if let Some(s) = self.skewed.filter(|s| nodes.iter().any(|n| n.id == *s)) {
            return s;
        }
        if self.rng.random_bool(0.5) {
            if let Some(l) = leader(nodes).await {
                return l;
            }
        }
        ids[0]
    }

    /// Remove a follower and add a fresh node, with the load running: AddLearner (blocking)
    /// then ChangeMembership, both sent to the leader; the removed node is then destroyed.
    async fn replace_member<C: Cluster>(&mut self, cluster: &mut C) -> Result<String, FaultError> {
        let nodes = cluster.nodes();
        // As an operator would: an election may be under way (the previous fault just cut
        // the network), so wait a few election timeouts for a leader before giving up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let lead = loop {
            let status = statuses(&nodes).await;
            let lead = status
                .into_iter()
                .filter(|s| s.role == Role::Leader as i32)
                .max_by_key(|s| s.term);
            match lead {
                Some(l) => break l,
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                None => {
                    return Err(FaultError::Failed("no leader to change membership".into()));
                }
            }
        };
        let voters: Vec<NodeId> = lead
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        let followers: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| *v != lead.node_id && !self.killed.contains(v))
            .collect();
        let Some(&gone) = followers.choose(&mut self.rng) else {
            return Err(FaultError::Failed("no follower to replace".into()));
        };
        let leader_spec = nodes
            .iter()
            .find(|n| n.id == lead.node_id)
            .cloned()
            .ok_or_else(|| FaultError::Failed("leader not among the nodes".into()))?;
        let fresh = cluster.start_fresh().await?;
        let ch = crate::secure::endpoint(&leader_spec.endpoint)
            .map_err(|e| FaultError::Failed(format!("{e:#}")))?
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .map_err(|e| FaultError::Failed(format!("connecting to the leader: {e}")))?;
        let mut admin = ClusterClient::new(ch);
        let mut add = tonic::Request::new(AddLearnerRequest {
            node_id: fresh.id,
            client_addr: fresh.client_addr.clone(),
            peer_addr: fresh.peer_addr.clone(),
            blocking: true,
        });
        add.set_timeout(Duration::from_secs(10));
        if let Err(e) = admin.add_learner(add).await {
            // Never (knowingly) a member: take it away again rather than leave an orphan.
            let _ = cluster.destroy(fresh.id).await;
            return Err(FaultError::Failed(format!(
                "add learner {}: {}",
                fresh.id,
                e.message()
            )));
        }
        let mut new_voters: Vec<NodeId> = voters.into_iter().filter(|v| *v != gone).collect();
        new_voters.push(fresh.id);
        let mut change = tonic::Request::new(ChangeMembershipRequest {
            voters: new_voters.clone(),
            retain: false,
            ..Default::default()
        });
        change.set_timeout(Duration::from_secs(10));
        admin
            .change_membership(change)
            .await
            .map_err(|e| FaultError::Failed(format!("change membership: {}", e.message())))?;
        cluster.destroy(gone).await?;
        Ok(format!(
            "replace member {gone} with {} (voters {new_voters:?})",
            fresh.id
        ))
    }

    /// Undo every fault: heal the network, thaw paused nodes, restart killed ones.
    pub async fn mend<C: Cluster>(&mut self, cluster: &mut C) {
        let start = self.clock.now_ns();
        let mut r = cluster.heal().await;
        for id in std::mem::take(&mut self.paused) {
            r = r.and(cluster.resume(id).await);
        }
        for id in std::mem::take(&mut self.killed) {
            r = r.and(cluster.restart(id).await);
        }
        if let Some(id) = self.skewed.take() {
            r = r.and(cluster.set_clock_offset(id, 0).await);
        }
        for n in cluster.nodes() {
            for p in Point::ALL {
                match cluster.disk_fault(n.id, p, None).await {
                    Err(FaultError::Unsupported(_)) => {}
                    other => r = r.and(other),
                }
            }
        }
        self.log(start, "heal all".into(), r);
    }

    /// Restart every node whose Raft has stopped by itself, as its supervisor would: a
    /// `sessiond serve` whose Raft stops exits, and systemd or Kubernetes start it again.
    /// In-process nodes stay up with a stopped Raft (answering `Status` as SHUTDOWN), so the
    /// harness plays the supervisor. Each restart is an event of the history, so a run's
    /// summary shows how often it happened. Returns whether any node was restarted.
    pub async fn restart_stopped<C: Cluster>(&mut self, cluster: &mut C) -> bool {
        let stopped: Vec<NodeId> = statuses(&cluster.nodes())
            .await
            .iter()
            .filter(|s| s.role == Role::Shutdown as i32)
            .map(|s| s.node_id)
            .collect();
        for id in &stopped {
            let start = self.clock.now_ns();
            let r = cluster.kill(*id).await.and(cluster.restart(*id).await);
            self.log(
                start,
                format!("supervisor restart of {id} (its Raft had stopped)"),
                r,
            );
        }
        !stopped.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_reproducible_from_their_seed() {
        let a = Schedule::generate(42, Duration::from_secs(5));
        let b = Schedule::generate(42, Duration::from_secs(5));
        let c = Schedule::generate(43, Duration::from_secs(5));
        assert_eq!(a.steps, b.steps);
        assert_ne!(a.steps, c.steps);
        assert!(a.steps.iter().all(|(t, _)| *t < Duration::from_secs(5)));
        assert!(a.steps.len() >= 3, "{:?}", a.steps);
    }

    #[test]
    fn many_schedules_use_every_fault() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            for (_, f) in Schedule::generate(seed, Duration::from_secs(4)).steps {
                seen.insert(format!("{f:?}"));
            }
        }
        assert_eq!(seen.len(), Fault::ALL.len(), "{seen:?}");
    }
}
