//! One chaos run: for each schedule, start a cluster, drive the browsers while the nemesis
//! works, mend everything, read every session back, and check the history.

use crate::browser::{self, BrowserOptions, Recorder};
use crate::check::{self, Budget, Report};
use crate::cluster::Cluster;
use crate::docker::{DockerCluster, DockerOptions};
use crate::history::{self, Clock, Event, Outcome, RunInfo};
use crate::inproc::{InprocCluster, InprocOptions};
use crate::nemesis::{self, Nemesis, Schedule};
use crate::policy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which layer runs the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    /// Real nodes in this process, with a fault-injecting transport.
    Inproc,
    /// Real processes in containers of a locally built image, partitioned with iptables.
    Docker,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub layer: Layer,
    pub nodes: usize,
    pub schedules: u64,
    pub seconds: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub browsers: BrowserOptions,
    /// The image the container layer runs.
    pub image: String,
    /// Start every schedule with one node's wall clock wrong (see
    /// [`Nemesis::wrong_clock_from_the_start`]); tests of a hand-written schedule leave it off.
    pub wrong_clock: bool,
}

/// The image `deploy/build-image.sh` builds by default.
pub const DEFAULT_IMAGE: &str = "sessiond:dev";

/// The result of one schedule.
pub struct ScheduleResult {
    pub seed: u64,
    pub nodes: usize,
    pub events: Vec<Event>,
    pub report: Report,
    pub wall: Duration,
}

/// What every schedule added up to.
#[derive(Default)]
pub struct Totals {
    pub schedules: u64,
    pub ops_by_outcome: BTreeMap<String, u64>,
    pub nemesis: BTreeMap<String, u64>,
    pub violations: BTreeMap<String, u64>,
    pub unknown: u64,
    pub failed_schedules: Vec<u64>,
    pub checker_ms: u64,
    pub wall: Duration,
}

impl Totals {
    fn add(&mut self, r: &ScheduleResult) {
        self.schedules += 1;
        for e in &r.events {
            if e.op == history::op::NEMESIS {
                let what = e.args.nemesis.as_deref().unwrap_or("?");
                let kind = what
                    .split_whitespace()
                    .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
                    .collect::<Vec<_>>()
                    .join(" ");
                *self.nemesis.entry(kind).or_default() += 1;
            } else {
                let outcome = match e.result {
                    Outcome::Ok => "ok",
                    Outcome::Fail => "fail",
                    Outcome::Info => "info",
                };
                *self
                    .ops_by_outcome
                    .entry(format!("{} {outcome}", e.op))
                    .or_default() += 1;
            }
        }
        for (k, n) in r.report.by_kind() {
            *self.violations.entry(k.to_string()).or_default() += n as u64;
        }
        self.unknown += r.report.unknown.len() as u64;
        if !r.report.passed() {
            self.failed_schedules.push(r.seed);
        }
        self.checker_ms += r.report.elapsed_ms;
    }

    /// Whether every schedule passed.
    pub fn passed(&self) -> bool {
        self.failed_schedules.is_empty()
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let ops: u64 = self.ops_by_outcome.values().sum();
        s.push_str(&format!(
            "schedules {}   operations {}   wall {:.1}s   checker {:.2}s\n",
            self.schedules,
            ops,
            self.wall.as_secs_f64(),
            self.checker_ms as f64 / 1000.0
        ));
        s.push_str("\noperations by outcome\n");
        for (k, v) in &self.ops_by_outcome {
            s.push_str(&format!("  {k:<22} {v:>8}\n"));
        }
        s.push_str("\nnemesis events\n");
        for (k, v) in &self.nemesis {
            s.push_str(&format!("  {k:<22} {v:>8}\n"));
        }
        s.push_str("\nviolations\n");
        if self.violations.is_empty() {
            s.push_str("  none\n");
        }
        for (k, v) in &self.violations {
            s.push_str(&format!("  {k:<22} {v:>8}\n"));
        }
        s.push_str(&format!(
            "  {:<22} {:>8}\n",
            "unknown (budget)", self.unknown
        ));
        if !self.failed_schedules.is_empty() {
            s.push_str(&format!("\nfailed seeds: {:?}\n", self.failed_schedules));
        }
        s
    }
}

/// The `sessiond serve` flags of a chaos cluster: the policy the checker assumes, fast
/// elections, frequent snapshots (so log purges and snapshot installs happen in every run).
pub fn node_flags() -> Vec<String> {
    let s = |x: &str| x.to_string();
    vec![
        s("--grace-window-ms"),
        policy::GRACE_WINDOW_MS.to_string(),
        s("--rotation-min-interval-ms"),
        policy::GRACE_WINDOW_MS.to_string(),
        s("--reuse-policy"),
        s("revoke"),
        s("--heartbeat-ms"),
        s("50"),
        s("--election-timeout-min-ms"),
        s("300"),
        s("--election-timeout-max-ms"),
        s("600"),
        s("--expiry-interval-ms"),
        s("200"),
        s("--snapshot-logs"),
        s("300"),
        s("--keep-logs"),
        s("50"),
        s("--request-timeout-ms"),
        s("1000"),
        s("--stale-read-bound-ms"),
        policy::STALE_READ_BOUND_MS.to_string(),
    ]
}

/// The policy the checker is told about.
/// `flags` with `name` set to `value` (replaced if present, appended if not).
pub fn with_flag(mut flags: Vec<String>, name: &str, value: &str) -> Vec<String> {
    match flags.iter().position(|f| f == name) {
        Some(i) if i + 1 < flags.len() => flags[i + 1] = value.to_string(),
        _ => flags.extend([name.to_string(), value.to_string()]),
    }
    flags
}

/// Node flags for the probes that need the whole log kept (no snapshot install shortcut).
pub fn keep_log_flags() -> Vec<String> {
    let flags = with_flag(node_flags(), "--snapshot-logs", "100000");
    with_flag(flags, "--keep-logs", "100000")
}

pub fn run_info(seed: u64) -> RunInfo {
    RunInfo {
        seed,
        ..RunInfo::default()
    }
}

/// Drive one schedule against a started cluster: the browsers run for `length` while the
/// nemesis follows `schedule`; then everything is mended and every session read back.
pub async fn drive<C: Cluster>(
    cluster: &mut C,
    schedule: &Schedule,
    length: Duration,
    browsers: &BrowserOptions,
    wrong_clock: bool,
) -> anyhow::Result<Vec<Event>> {
    let seed = schedule.seed;
    let clock = Clock::start();
    let rec = Recorder::new(clock);
    let endpoints: Vec<String> = cluster.nodes().iter().map(|n| n.endpoint.clone()).collect();
    if nemesis::wait_for_leader(&cluster.nodes(), Duration::from_secs(30))
        .await
        .is_none()
    {
        anyhow::bail!("no leader within 30 s of starting the cluster");
    }
    let mut nem = Nemesis::new(seed, clock);
    if wrong_clock {
        nem.wrong_clock_from_the_start(cluster).await;
    }
    let workload = {
        let (endpoints, browsers, rec) = (endpoints.clone(), browsers.clone(), rec.clone());
        tokio::spawn(async move { browser::run(&endpoints, &browsers, seed, &rec, length).await })
    };
    let started = tokio::time::Instant::now();
    for (at, fault) in &schedule.steps {
        tokio::time::sleep_until(started + *at).await;
        nem.apply(cluster, *fault).await;
    }
    let known = workload.await??;
    nem.mend(cluster).await;
    let nodes = cluster.nodes();
    // A node whose Raft stopped by itself holds the cluster back from agreeing on a leader
    // until its supervisor restarts it: look for one whenever a while passes without a leader.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut led = None;
    while led.is_none() && tokio::time::Instant::now() < deadline {
        led = nemesis::wait_for_leader(&nodes, Duration::from_secs(5)).await;
        if led.is_none() {
            nem.restart_stopped(cluster).await;
        }
    }
    if led.is_none() {
        let faults: Vec<String> = nem
            .events
            .iter()
            .map(|e| {
                format!(
                    "{} ({:?}{})",
                    e.args.nemesis.as_deref().unwrap_or("?"),
                    e.result,
                    e.value
                        .error
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let status: Vec<String> = nemesis::statuses(&nodes)
            .await
            .iter()
            .map(|s| {
                format!(
                    "node {} role {} term {} leader {} applied {} last {} members {:?}",
                    s.node_id,
                    s.role,
                    s.term,
                    s.leader_id,
                    s.applied_index,
                    s.last_log_index,
                    s.members
                        .iter()
                        .map(|m| (m.id, m.voter))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        anyhow::bail!("no leader within 30 s of healing; faults: {faults:?}; status: {status:?}");
    }
    let live: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    browser::final_reads(&live, &known, &rec).await?;
    let mut events = rec.take();
    events.extend(nem.events);
    events.sort_by_key(|e| (e.invoke_ns, e.complete_ns));
    Ok(events)
}

/// Keep what a failed schedule needs for a post-mortem under `out/seed-<seed>/`.
async fn keep<C: Cluster>(
    out: &Path,
    seed: u64,
    events: &[Event],
    report: Option<&Report>,
    cluster: &C,
) -> anyhow::Result<PathBuf> {
    let dir = out.join(format!("seed-{seed}"));
    std::fs::create_dir_all(&dir)?;
    history::write(&dir.join("history.jsonl"), events)?;
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run_info(seed))?,
    )?;
    if let Some(r) = report {
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(r)?)?;
    }
    cluster.collect_logs(&dir.join("logs")).await?;
    Ok(dir)
}

/// One schedule on the in-process layer, in a fresh cluster.
pub async fn inproc_schedule(
    opts: &RunOptions,
    schedule: &Schedule,
) -> anyhow::Result<ScheduleResult> {
    let started = Instant::now();
    let dir = run_dir()?;
    let cluster = InprocCluster::start(InprocOptions {
        nodes: opts.nodes,
        flags: node_flags(),
        dir: dir.path().to_path_buf(),
    })
    .await?;
    drive_and_check(opts, schedule, started, cluster).await
}

/// One schedule on the container layer, in a fresh cluster of containers.
pub async fn docker_schedule(
    opts: &RunOptions,
    schedule: &Schedule,
) -> anyhow::Result<ScheduleResult> {
    let started = Instant::now();
    let dir = run_dir()?;
    let cluster = DockerCluster::start(DockerOptions {
        nodes: opts.nodes,
        flags: node_flags(),
        image: opts.image.clone(),
        dir: dir.path().to_path_buf(),
        name: format!("sessiond-chaos-{}-{}", std::process::id(), schedule.seed),
    })
    .await?;
    drive_and_check(opts, schedule, started, cluster).await
}

/// The directory a schedule's nodes keep their data in (removed when dropped).
fn run_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("sessiond-chaos-")
        .tempdir()?)
}

/// Drive `schedule` against a started cluster, then check, keep what fails, shut down.
async fn drive_and_check<C: Cluster>(
    opts: &RunOptions,
    schedule: &Schedule,
    started: Instant,
    mut cluster: C,
) -> anyhow::Result<ScheduleResult> {
    let length = Duration::from_secs_f64(opts.seconds);
    let driven = drive(
        &mut cluster,
        schedule,
        length,
        &opts.browsers,
        opts.wrong_clock,
    )
    .await;
    finish(opts, schedule.seed, started, driven, cluster).await
}

async fn finish<C: Cluster>(
    opts: &RunOptions,
    seed: u64,
    started: Instant,
    driven: anyhow::Result<Vec<Event>>,
    cluster: C,
) -> anyhow::Result<ScheduleResult> {
    let events = match driven {
        Ok(e) => e,
        Err(e) => {
            let dir = keep(&opts.out, seed, &[], None, &cluster).await;
            cluster.shutdown().await?;
            return Err(e.context(format!(
                "schedule with seed {seed} could not run (kept: {dir:?})"
            )));
        }
    };
    let info = run_info(seed);
    let report = check::check(&events, &info, &Budget::default());
    if !report.passed() {
        let dir = keep(&opts.out, seed, &events, Some(&report), &cluster).await?;
        eprintln!(
            "seed {seed}: {} violation(s), {} unknown; kept in {}",
            report.violations.len(),
            report.unknown.len(),
            dir.display()
        );
        for v in report.violations.iter().take(5) {
            eprintln!("  {}: {:?} {}", v.kind.name(), v.session, v.detail);
        }
    }
    cluster.shutdown().await?;
    Ok(ScheduleResult {
        seed,
        nodes: opts.nodes,
        events,
        report,
        wall: started.elapsed(),
    })
}

/// Run every schedule of `opts`, printing a line per schedule; seeds are `seed, seed+1, …`.
pub async fn run(opts: &RunOptions) -> anyhow::Result<Totals> {
    let started = Instant::now();
    let mut totals = Totals::default();
    if opts.layer == Layer::Docker {
        crate::docker::preflight(&opts.image).await?;
    }
    for i in 0..opts.schedules {
        let seed = opts.seed.wrapping_add(i);
        let schedule = Schedule::generate(seed, Duration::from_secs_f64(opts.seconds));
        let r = match opts.layer {
            Layer::Inproc => inproc_schedule(opts, &schedule).await?,
            Layer::Docker => docker_schedule(opts, &schedule).await?,
        };
        println!(
            "schedule {:>3} seed {:>20} nodes {} ops {:>5} nemesis {:>2} {} ({:.1}s)",
            i + 1,
            r.seed,
            r.nodes,
            r.events
                .iter()
                .filter(|e| e.op != history::op::NEMESIS)
                .count(),
            r.events
                .iter()
                .filter(|e| e.op == history::op::NEMESIS)
                .count(),
            if r.report.passed() { "pass" } else { "FAIL" },
            r.wall.as_secs_f64()
        );
        totals.add(&r);
    }
    totals.wall = started.elapsed();
    Ok(totals)
}
