//! The in-process layer: real sessiond nodes (Raft, RocksDB in their own directories, the
//! gRPC servers on loopback ports) inside the harness's process, each on its own tokio
//! runtime, connected through a [`LinkFilter`] the nemesis controls.
//!
//! Loopback cannot be partitioned, so the cut happens in the node's peer transport: a message
//! on a link that is down is lost and its sender waits out its deadline, exactly what a
//! dropped packet looks like to Raft. Request and reply travel on opposite links, so a
//! one-way cut also loses the replies of calls made in the other direction (as with TCP).
//! A crash is the node's runtime shut down at once: every task, connection and timer of the
//! node vanishes between two instructions, and only what RocksDB synced survives — the
//! restart reopens the same directory on the same ports. Pausing a process has no in-process
//! equivalent and is left to the container layer. Each node reads its own wall clock
//! ([`OffsetClock`]), which the nemesis sets ahead or behind.

use crate::cluster::{free_port, links_cut, Cluster, FaultError, NodeId, NodeSpec};
use anyhow::Context;
use clap::Parser;
use sessiond::clock::{SystemClock, WallClock};
use sessiond::network::{Link, LinkFilter};
use sessiond::node::{Node, NodeHooks};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The set of links that are down, shared by every node of a cluster.
#[derive(Default)]
pub struct Faults {
    down: RwLock<HashSet<(NodeId, NodeId)>>,
}

impl Faults {
    fn set(&self, links: HashSet<(NodeId, NodeId)>) {
        if let Ok(mut d) = self.down.write() {
            *d = links;
        }
    }

    fn add(&self, from: NodeId, to: NodeId) {
        if let Ok(mut d) = self.down.write() {
            d.insert((from, to));
        }
    }
}

impl LinkFilter for Faults {
    fn link(&self, from: NodeId, to: NodeId) -> Link {
        match self.down.read() {
            Ok(d) if d.contains(&(from, to)) => Link::Down,
            _ => Link::Up,
        }
    }
}

/// A node's wall clock: the host's, shifted by an offset the nemesis changes at will.
#[derive(Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl WallClock for OffsetClock {
    fn now_ms(&self) -> u64 {
        let true_ms = SystemClock.now_ms() as i64;
        true_ms
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
            .max(0) as u64
    }
}

/// How to start an in-process cluster.
#[derive(Debug, Clone)]
pub struct InprocOptions {
    pub nodes: usize,
    /// Extra `sessiond serve` flags for every node (the session policy, timings).
    pub flags: Vec<String>,
    /// Where the nodes' data directories go (one subdirectory per node).
    pub dir: PathBuf,
}

struct Member {
    spec: NodeSpec,
    clock: Arc<OffsetClock>,
    metrics_addr: String,
    data_dir: PathBuf,
    /// `--initial-cluster` for the founding members; empty for nodes added later.
    initial: String,
    running: Option<Running>,
}

struct Running {
    runtime: tokio::runtime::Runtime,
    node: Node,
}

/// A cluster of in-process nodes.
pub struct InprocCluster {
    members: BTreeMap<NodeId, Member>,
    faults: Arc<Faults>,
    flags: Vec<String>,
    dir: PathBuf,
    next_id: NodeId,
}

/// How long a restarted node may wait for its predecessor's RocksDB lock and ports.
const RESTART_PATIENCE: Duration = Duration::from_secs(15);

impl InprocCluster {
    /// Start `opts.nodes` founding members and return once they are running (the leader
    /// election is the caller's to wait for).
    pub async fn start(opts: InprocOptions) -> anyhow::Result<InprocCluster> {
        let mut c = InprocCluster {
            members: BTreeMap::new(),
            faults: Arc::default(),
            flags: opts.flags,
            dir: opts.dir,
            next_id: 1,
        };
        let mut specs = Vec::new();
        for _ in 0..opts.nodes {
            specs.push(c.allocate()?);
        }
        let initial = specs
            .iter()
            .map(|(s, _)| format!("{}={}", s.id, s.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for (spec, metrics_addr) in specs {
            let id = spec.id;
            let data_dir = c.dir.join(format!("node{id}"));
            c.members.insert(
                id,
                Member {
                    spec,
                    clock: Arc::default(),
                    metrics_addr,
                    data_dir,
                    initial: initial.clone(),
                    running: None,
                },
            );
            c.boot(id).await?;
        }
        Ok(c)
    }

    fn allocate(&mut self) -> anyhow::Result<(NodeSpec, String)> {
        let id = self.next_id;
        self.next_id += 1;
        let client = format!("127.0.0.1:{}", free_port()?);
        let peer = format!("127.0.0.1:{}", free_port()?);
        let metrics = format!("127.0.0.1:{}", free_port()?);
        Ok((
            NodeSpec {
                id,
                endpoint: format!("https://{client}"),
                client_addr: client,
                peer_addr: peer,
            },
            metrics,
        ))
    }

    fn config(&self, m: &Member) -> anyhow::Result<sessiond::config::NodeConfig> {
        let mut args: Vec<String> = vec![
            "sessiond".into(),
            "serve".into(),
            "--node-id".into(),
            m.spec.id.to_string(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--client-addr".into(),
            m.spec.client_addr.clone(),
            "--peer-addr".into(),
            m.spec.peer_addr.clone(),
            "--metrics-addr".into(),
            m.metrics_addr.clone(),
            "--certs-dir".into(),
            crate::secure::certs_dir()?.display().to_string(),
        ];
        if !m.initial.is_empty() {
            args.push("--initial-cluster".into());
            args.push(m.initial.clone());
        }
        args.extend(self.flags.iter().cloned());
        let cli = sessiond::config::Cli::try_parse_from(&args).context("node flags")?;
        match cli.command {
            sessiond::config::Command::Serve(a) => a.resolve(),
            _ => anyhow::bail!("not a serve command"),
        }
    }

    /// Start (or restart) member `id` on its own runtime, retrying while the previous
    /// incarnation's RocksDB lock and ports are being released.
    async fn boot(&mut self, id: NodeId) -> anyhow::Result<()> {
        let m = self.members.get(&id).context("unknown node")?;
        let cfg = self.config(m)?;
        let hooks = NodeHooks {
            link_filter: Some(self.faults.clone() as Arc<dyn LinkFilter>),
            clock: Some(m.clock.clone() as Arc<dyn WallClock>),
            // The harness's own proofs run builds with planted bugs on purpose.
            allow_planted_bugs: true,
            // The nodes share this process: an injected crash stops one node's writes (the
            // nemesis then restarts it), not the process.
            crash: sessiond::store::Crash::StopWriting,
        };
        let started = Instant::now();
        let running = loop {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("node{id}"))
                .enable_all()
                .build()
                .context("building a node runtime")?;
            let attempt = runtime
                .spawn(Node::start_with(cfg.clone(), hooks.clone()))
                .await;
            match attempt {
                Ok(Ok(node)) => break Running { runtime, node },
                Ok(Err(e)) if started.elapsed() < RESTART_PATIENCE => {
                    tracing::debug!(node = id, error = %e, "node start failed; retrying");
                    runtime.shutdown_background();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => {
                    runtime.shutdown_background();
                    return Err(e.context(format!("starting node {id}")));
                }
                Err(e) => {
                    runtime.shutdown_background();
                    anyhow::bail!("node {id} start task failed: {e}");
                }
            }
        };
        if let Some(m) = self.members.get_mut(&id) {
            m.running = Some(running);
        }
        Ok(())
    }

    fn crash(&mut self, id: NodeId) -> Result<(), FaultError> {
        let m = self
            .members
            .get_mut(&id)
            .ok_or_else(|| FaultError::Failed(format!("no node {id}")))?;
        if let Some(Running { runtime, node }) = m.running.take() {
            runtime.shutdown_background();
            drop(node);
        }
        Ok(())
    }
}

impl Cluster for InprocCluster {
    fn nodes(&self) -> Vec<NodeSpec> {
        self.members.values().map(|m| m.spec.clone()).collect()
    }

    async fn partition(&mut self, groups: &[Vec<NodeId>]) -> Result<(), FaultError> {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        self.faults.set(links_cut(&ids, groups));
        Ok(())
    }

    async fn cut_one_way(&mut self, from: NodeId, to: NodeId) -> Result<(), FaultError> {
        self.faults.add(from, to);
        Ok(())
    }

    async fn heal(&mut self) -> Result<(), FaultError> {
        self.faults.set(HashSet::new());
        Ok(())
    }

    async fn kill(&mut self, id: NodeId) -> Result<(), FaultError> {
        self.crash(id)
    }

    async fn restart(&mut self, id: NodeId) -> Result<(), FaultError> {
        let running = self.members.get(&id).map(|m| m.running.is_some());
        match running {
            None => Err(FaultError::Failed(format!("no node {id}"))),
            Some(true) => Ok(()),
            Some(false) => Ok(self.boot(id).await?),
        }
    }

    async fn set_clock_offset(&mut self, id: NodeId, offset_ms: i64) -> Result<(), FaultError> {
        let m = self
            .members
            .get(&id)
            .ok_or_else(|| FaultError::Failed(format!("no node {id}")))?;
        m.clock.offset_ms.store(offset_ms, Ordering::Relaxed);
        Ok(())
    }

    async fn pause(&mut self, _id: NodeId) -> Result<(), FaultError> {
        Err(FaultError::Unsupported(
            "pause a node that shares the process",
        ))
    }

    async fn resume(&mut self, _id: NodeId) -> Result<(), FaultError> {
        Err(FaultError::Unsupported(
            "resume a node that shares the process",
        ))
    }

    async fn disk_fault(
        &mut self,
        id: NodeId,
        point: sessiond::store::Point,
        actions: Option<&str>,
    ) -> Result<(), FaultError> {
        if !self.members.contains_key(&id) {
            return Err(FaultError::Failed(format!("no node {id}")));
        }
        arm(&point.failpoint(id), actions)
    }

    async fn start_fresh(&mut self) -> Result<NodeSpec, FaultError> {
        let (spec, metrics_addr) = self.allocate()?;
        let id = spec.id;
        let data_dir = self.dir.join(format!("node{id}"));
        self.members.insert(
            id,
            Member {
                spec: spec.clone(),
                clock: Arc::default(),
                metrics_addr,
                data_dir,
                initial: String::new(),
                running: None,
            },
        );
        self.boot(id).await?;
        Ok(spec)
    }

    async fn destroy(&mut self, id: NodeId) -> Result<(), FaultError> {
        self.crash(id)?;
        for p in sessiond::store::Point::ALL {
            let _ = arm(&p.failpoint(id), None);
        }
        if let Some(m) = self.members.remove(&id) {
            // The lock may still be held for a moment by tasks being dropped; a leftover
            // directory inside the run's dir is harmless.
            let _ = std::fs::remove_dir_all(&m.data_dir);
        }
        Ok(())
    }

    async fn collect_logs(&self, dir: &Path) -> anyhow::Result<()> {
        // In-process nodes log through the harness's own tracing subscriber.
        std::fs::create_dir_all(dir)?;
        let summary = self
            .members
            .values()
            .map(|m| {
                format!(
                    "node {} client {} peer {} data {} running {}\n",
                    m.spec.id,
                    m.spec.client_addr,
                    m.spec.peer_addr,
                    m.data_dir.display(),
                    m.running.is_some()
                )
            })
            .collect::<String>();
        std::fs::write(dir.join("nodes.txt"), summary)?;
        Ok(())
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        // Unlike a crash, the end of a run stops every node in order and waits for its
        // runtime, so each RocksDB is closed before the process may exit (RocksDB aborts
        // when the process exits under an open database's background threads).
        for m in self.members.values_mut() {
            if let Some(Running { runtime, node }) = m.running.take() {
                let stop = runtime.spawn(node.shutdown());
                let _ = tokio::time::timeout(Duration::from_secs(5), stop).await;
                let _ = tokio::task::spawn_blocking(move || {
                    runtime.shutdown_timeout(Duration::from_secs(5))
                })
                .await;
            }
        }
        Ok(())
    }
}

impl Drop for InprocCluster {
    /// A cluster dropped without `shutdown` (a test that panicked or forgot it) still waits,
    /// briefly, for each node's runtime, so no RocksDB is left open under its background
    /// threads when the process exits (RocksDB then aborts with "pthread lock"). A runtime
    /// cannot be shut down with a timeout from async code, hence one plain thread each.
    fn drop(&mut self) {
        let stopping: Vec<_> = self
            .members
            .values_mut()
            .filter_map(|m| m.running.take())
            .map(|Running { runtime, node }| {
                std::thread::spawn(move || {
                    runtime.shutdown_timeout(Duration::from_secs(5));
                    drop(node);
                })
            })
            .collect();
        for t in stopping {
            let _ = t.join();
        }
    }
}

/// Arm or disarm one failpoint of the process-wide registry.
#[cfg(feature = "failpoints")]
fn arm(name: &str, actions: Option<&str>) -> Result<(), FaultError> {
    match actions {
        Some(a) => fail::cfg(name, a).map_err(FaultError::Failed),
        None => {
            fail::remove(name);
            Ok(())
        }
    }
}

#[cfg(not(feature = "failpoints"))]
fn arm(_name: &str, _actions: Option<&str>) -> Result<(), FaultError> {
    Err(FaultError::Unsupported(
        "inject disk faults (build with the failpoints feature)",
    ))
}
