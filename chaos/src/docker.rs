//! The container layer: every node is a real `sessiond` process in its own container, started
//! by testcontainers from the locally built image (`deploy/build-image.sh`), on a private
//! network of the run's own.
//!
//! - Partitions are iptables rules in each container's network namespace, written from the
//!   host with `nsenter -t PID -n iptables-restore`: a cut link `from -> to` drops, in `to`'s
//!   namespace, every packet whose source is `from`'s address. The whole filter table is
//!   rewritten from the set of cut links at every change, and again after a restart (the
//!   restarted process has a new PID and may have a new address).
//! - Kill is SIGKILL through the Docker API; restart starts the same container again, on the
//!   same data directory (bind-mounted from the host) and host port. Pause and resume are the
//!   Docker API's (cgroup freezer).
//! - The harness reaches each node's client port through a port published on 127.0.0.1 only;
//!   that traffic enters the namespace from the network's gateway, never from a peer's
//!   address, so partitions cut nodes from each other and not from the clients. Nodes
//!   advertise their container names, which resolve inside the network.

use crate::cluster::{free_port, links_cut, Cluster, FaultError, NodeId, NodeSpec};
use anyhow::Context;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testcontainers::bollard::query_parameters::{KillContainerOptions, LogsOptions};
use testcontainers::bollard::Docker;
use testcontainers::core::Mount;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The ports inside every container (the image's EXPOSE).
const CLIENT_PORT: u16 = 7001;
const PEER_PORT: u16 = 7101;
const METRICS_PORT: u16 = 7201;

/// How to start a cluster of containers.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    pub nodes: usize,
    /// Extra `sessiond serve` flags for every node.
    pub flags: Vec<String>,
    /// `repository:tag` of the locally built image.
    pub image: String,
    /// Host directory for the nodes' data directories (one subdirectory per node).
    pub dir: PathBuf,
    /// Distinguishes this cluster's containers and network from any other run's.
    pub name: String,
}

struct Member {
    spec: NodeSpec,
    container_name: String,
    data_dir: PathBuf,
    /// Holds the `offset` file of this node's wall clock (mounted at `/clock`).
    clock_dir: PathBuf,
    initial: String,
    host_port: u16,
    container: Option<ContainerAsync<GenericImage>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Killed,
    Paused,
}

/// A cluster of sessiond containers.
pub struct DockerCluster {
    opts: DockerOptions,
    docker: Docker,
    network: String,
    members: BTreeMap<NodeId, Member>,
    cut: HashSet<(NodeId, NodeId)>,
    next_id: NodeId,
}

fn failed(e: impl std::fmt::Display) -> FaultError {
    FaultError::Failed(e.to_string())
}

/// Check, before starting anything, that the Docker engine answers and holds the image.
/// Where Debian's `libfaketime` package puts the library the nodes preload, so that each node's
/// wall clock follows an offset file the nemesis rewrites (monotonic clocks stay true).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Where the library and the offset file appear inside a container.
const FAKETIME_IN_CONTAINER: &str = "/faketime/libfaketimeMT.so.1";
const CLOCK_DIR_IN_CONTAINER: &str = "/clock";

/// Write a node's clock offset file (libfaketime's relative format, whole seconds), replacing
/// it at once so the node never reads half a file.
fn write_offset(dir: &std::path::Path, offset_ms: i64) -> std::io::Result<()> {
    let tmp = dir.join("offset.tmp");
    std::fs::write(&tmp, format!("{:+}\n", offset_ms / 1000))?;
    std::fs::rename(tmp, dir.join("offset"))
}

pub async fn preflight(image: &str) -> anyhow::Result<()> {
    let docker = Docker::connect_with_local_defaults().context("connecting to Docker")?;
    docker
        .ping()
        .await
        .context("the Docker engine does not answer (is dockerd running?)")?;
    docker.inspect_image(image).await.with_context(|| {
        format!("image {image} is not built here (build it with deploy/build-image.sh)")
    })?;
    for tool in ["nsenter", "iptables-restore"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        anyhow::ensure!(found, "{tool} is not installed (partitions need it)");
    }
    Ok(())
}

impl DockerCluster {
    /// Start `opts.nodes` founding members in containers and return once every container
    /// runs (the leader election is the caller's to wait for).
    pub async fn start(opts: DockerOptions) -> anyhow::Result<DockerCluster> {
        let docker = Docker::connect_with_local_defaults().context("connecting to Docker")?;
        let mut c = DockerCluster {
            network: format!("{}-net", opts.name),
            opts,
            docker,
            members: BTreeMap::new(),
            cut: HashSet::new(),
            next_id: 1,
        };
        let n = c.opts.nodes;
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(c.allocate()?);
        }
        let initial = ids
            .iter()
            .filter_map(|id| c.members.get(id))
            .map(|m| format!("{}={}", m.spec.id, m.spec.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for id in &ids {
            if let Some(m) = c.members.get_mut(id) {
                m.initial = initial.clone();
            }
        }
        for id in ids {
            c.create(id).await?;
        }
        Ok(c)
    }

    /// Reserve an id, a container name, a host port and a data directory.
    fn allocate(&mut self) -> anyhow::Result<NodeId> {
        let id = self.next_id;
        self.next_id += 1;
        let container_name = format!("{}-n{id}", self.opts.name);
        let host_port = free_port()?;
        let data_dir = self.opts.dir.join(format!("node{id}"));
        std::fs::create_dir_all(&data_dir)?;
        let clock_dir = self.opts.dir.join(format!("clock{id}"));
        std::fs::create_dir_all(&clock_dir)?;
        write_offset(&clock_dir, 0)?;
        self.members.insert(
            id,
            Member {
                spec: NodeSpec {
                    id,
                    client_addr: format!("{container_name}:{CLIENT_PORT}"),
                    peer_addr: format!("{container_name}:{PEER_PORT}"),
                    endpoint: format!("https://127.0.0.1:{host_port}"),
                },
                container_name,
                data_dir,
                clock_dir,
                initial: String::new(),
                host_port,
                container: None,
                state: State::Killed,
            },
        );
        Ok(id)
    }

    /// Create and start member `id`'s container.
    async fn create(&mut self, id: NodeId) -> anyhow::Result<()> {
        let m = self.members.get(&id).context("unknown node")?;
        let (repo, tag) = self
            .opts
            .image
            .rsplit_once(':')
            .unwrap_or((self.opts.image.as_str(), "latest"));
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            "/data".into(),
            "--client-addr".into(),
            format!("0.0.0.0:{CLIENT_PORT}"),
            "--peer-addr".into(),
            format!("0.0.0.0:{PEER_PORT}"),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
            "--advertise-client-addr".into(),
            m.spec.client_addr.clone(),
            "--advertise-peer-addr".into(),
            m.spec.peer_addr.clone(),
            "--certs-dir".into(),
            "/certs".into(),
        ];
        if !m.initial.is_empty() {
            args.push("--initial-cluster".into());
            args.push(m.initial.clone());
        }
        args.extend(self.opts.flags.iter().cloned());
        let host_port = m.host_port.to_string();
        let certs = crate::secure::certs_dir()?.display().to_string();
        let faketime = std::path::Path::new(FAKETIME_LIB).exists();
        let image = GenericImage::new(repo, tag)
            .with_network(self.network.clone())
            .with_container_name(m.container_name.clone())
            .with_hostname(m.container_name.clone())
            .with_label("sessiond-chaos", self.opts.name.clone())
            .with_mount(Mount::bind_mount(m.data_dir.display().to_string(), "/data"))
            .with_mount(Mount::bind_mount(certs, "/certs"))
            .with_env_var("RUST_LOG", "info,openraft=warn");
        // A wall clock the nemesis can set: libfaketime preloaded, reading the offset file at
        // most a second old; monotonic clocks untouched (timeouts, freshness stay real).
        let image = match faketime {
            true => image
                .with_mount(Mount::bind_mount(FAKETIME_LIB, FAKETIME_IN_CONTAINER))
                .with_mount(Mount::bind_mount(
                    m.clock_dir.display().to_string(),
                    CLOCK_DIR_IN_CONTAINER,
                ))
                .with_env_var("LD_PRELOAD", FAKETIME_IN_CONTAINER)
                .with_env_var(
                    "FAKETIME_TIMESTAMP_FILE",
                    format!("{CLOCK_DIR_IN_CONTAINER}/offset"),
                )
                .with_env_var("FAKETIME_CACHE_DURATION", "1")
                .with_env_var("DONT_FAKE_MONOTONIC", "1"),
            false => image,
        };
        let container = image
            .with_cmd(args)
            .with_startup_timeout(Duration::from_secs(60))
            .with_host_config_modifier(move |hc| {
                // Publish the client port on loopback only (testcontainers would publish
                // every exposed port on all interfaces).
                hc.publish_all_ports = Some(false);
                let binding = testcontainers::bollard::models::PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host_port.clone()),
                };
                hc.port_bindings = Some(HashMap::from([(
                    format!("{CLIENT_PORT}/tcp"),
                    Some(vec![binding]),
                )]));
            })
            .start()
            .await
            .with_context(|| format!("starting node {id}'s container"))?;
        if let Some(m) = self.members.get_mut(&id) {
            m.container = Some(container);
            m.state = State::Running;
        }
        self.apply_rules().await.map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The PID (in the host's namespace) and the network address of a running container.
    async fn pid_and_ip(&self, m: &Member) -> Result<(i64, String), FaultError> {
        let info = self
            .docker
            .inspect_container(&m.container_name, None)
            .await
            .map_err(failed)?;
        let pid = info
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| failed(format!("node {} has no process", m.spec.id)))?;
        let ip = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(&self.network))
            .and_then(|e| e.ip_address.clone())
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| failed(format!("node {} has no address", m.spec.id)))?;
        Ok((pid, ip))
    }

    /// Rewrite every running node's filter table from the set of cut links.
    async fn apply_rules(&self) -> Result<(), String> {
        let mut live = BTreeMap::new();
        for (id, m) in &self.members {
            if m.state != State::Killed {
                match self.pid_and_ip(m).await {
                    Ok(x) => {
                        live.insert(*id, x);
                    }
                    Err(e) => return Err(format!("inspecting node {id}: {e}")),
                }
            }
        }
        for (to, (pid, _)) in &live {
            let mut table = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            );
            let mut froms: Vec<NodeId> = self
                .cut
                .iter()
                .filter(|(_, t)| t == to)
                .map(|(f, _)| *f)
                .collect();
            froms.sort_unstable();
            for from in froms {
                if let Some((_, ip)) = live.get(&from) {
                    table.push_str(&format!("-A INPUT -s {ip}/32 -j DROP\n"));
                }
            }
            table.push_str("COMMIT\n");
            restore(*pid, &table)
                .await
                .map_err(|e| format!("node {to}: {e:#}"))?;
        }
        Ok(())
    }

    fn member(&self, id: NodeId) -> Result<&Member, FaultError> {
        self.members
            .get(&id)
            .ok_or_else(|| failed(format!("no node {id}")))
    }

    fn set_state(&mut self, id: NodeId, state: State) {
        if let Some(m) = self.members.get_mut(&id) {
            m.state = state;
        }
    }

    /// Wait until the container has stopped after a kill.
    async fn wait_exited(&self, name: &str) -> Result<(), FaultError> {
        for _ in 0..100 {
            let info = self
                .docker
                .inspect_container(name, None)
                .await
                .map_err(failed)?;
            if !info.state.and_then(|s| s.running).unwrap_or(false) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(failed(format!("{name} still runs 5 s after SIGKILL")))
    }
}

/// Load `table` into the filter table of the network namespace of process `pid`.
async fn restore(pid: i64, table: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "iptables-restore"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running nsenter")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(table.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("iptables-restore hung")??;
    anyhow::ensure!(
        out.status.success(),
        "iptables-restore: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Cluster for DockerCluster {
    fn nodes(&self) -> Vec<NodeSpec> {
        self.members.values().map(|m| m.spec.clone()).collect()
    }

    async fn partition(&mut self, groups: &[Vec<NodeId>]) -> Result<(), FaultError> {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        self.cut = links_cut(&ids, groups);
        self.apply_rules().await.map_err(FaultError::Failed)
    }

    async fn cut_one_way(&mut self, from: NodeId, to: NodeId) -> Result<(), FaultError> {
        self.cut.insert((from, to));
        self.apply_rules().await.map_err(FaultError::Failed)
    }

    async fn heal(&mut self) -> Result<(), FaultError> {
        self.cut.clear();
        self.apply_rules().await.map_err(FaultError::Failed)
    }

    async fn kill(&mut self, id: NodeId) -> Result<(), FaultError> {
        let m = self.member(id)?;
        let name = m.container_name.clone();
        if m.state == State::Killed {
            return Ok(());
        }
        if m.state == State::Paused {
            if let Some(c) = &m.container {
                c.unpause().await.map_err(failed)?;
            }
        }
        self.docker
            .kill_container(
                &name,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
            .map_err(failed)?;
        self.set_state(id, State::Killed);
        self.wait_exited(&name).await
    }

    async fn restart(&mut self, id: NodeId) -> Result<(), FaultError> {
        let m = self.member(id)?;
        if m.state != State::Killed {
            return Ok(());
        }
        let c = m
            .container
            .as_ref()
            .ok_or_else(|| failed(format!("node {id} has no container")))?;
        c.start().await.map_err(failed)?;
        self.set_state(id, State::Running);
        // A new process in the namespace: put its filter table back.
        self.apply_rules().await.map_err(FaultError::Failed)
    }

    async fn set_clock_offset(&mut self, id: NodeId, offset_ms: i64) -> Result<(), FaultError> {
        if !std::path::Path::new(FAKETIME_LIB).exists() {
            return Err(FaultError::Unsupported(
                "set a node's clock (libfaketime is not installed)",
            ));
        }
        let m = self.member(id)?;
        write_offset(&m.clock_dir, offset_ms).map_err(failed)
    }

    async fn pause(&mut self, id: NodeId) -> Result<(), FaultError> {
        let m = self.member(id)?;
        if m.state != State::Running {
            return Err(failed(format!("node {id} is not running")));
        }
        if let Some(c) = &m.container {
            c.pause().await.map_err(failed)?;
        }
        self.set_state(id, State::Paused);
        Ok(())
    }

    async fn resume(&mut self, id: NodeId) -> Result<(), FaultError> {
        let m = self.member(id)?;
        if m.state != State::Paused {
            return Ok(());
        }
        if let Some(c) = &m.container {
            c.unpause().await.map_err(failed)?;
        }
        self.set_state(id, State::Running);
        Ok(())
    }

    async fn disk_fault(
        &mut self,
        _id: NodeId,
        _point: sessiond::store::Point,
        _actions: Option<&str>,
    ) -> Result<(), FaultError> {
        // The image is the release binary as shipped, without failpoints.
        Err(FaultError::Unsupported("inject disk faults"))
    }

    async fn start_fresh(&mut self) -> Result<NodeSpec, FaultError> {
        let id = self.allocate()?;
        self.create(id).await?;
        Ok(self.member(id)?.spec.clone())
    }

    async fn destroy(&mut self, id: NodeId) -> Result<(), FaultError> {
        let Some(m) = self.members.remove(&id) else {
            return Err(failed(format!("no node {id}")));
        };
        self.cut.retain(|(a, b)| *a != id && *b != id);
        if let Some(c) = m.container {
            if m.state == State::Paused {
                let _ = c.unpause().await;
            }
            c.rm().await.map_err(failed)?;
        }
        let _ = std::fs::remove_dir_all(&m.data_dir);
        Ok(())
    }

    async fn collect_logs(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for m in self.members.values() {
            let mut logs = self.docker.logs(
                &m.container_name,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    tail: "all".into(),
                    ..LogsOptions::default()
                }),
            );
            let mut text = Vec::new();
            while let Some(chunk) = logs.next().await {
                match chunk {
                    Ok(c) => text.extend_from_slice(&c.into_bytes()),
                    Err(e) => {
                        text.extend_from_slice(format!("\n(log stream failed: {e})\n").as_bytes());
                        break;
                    }
                }
            }
            std::fs::write(dir.join(format!("node{}.log", m.spec.id)), text)?;
        }
        let summary = self
            .members
            .values()
            .map(|m| {
                format!(
                    "node {} container {} endpoint {} data {} state {:?}\n",
                    m.spec.id,
                    m.container_name,
                    m.spec.endpoint,
                    m.data_dir.display(),
                    m.state
                )
            })
            .collect::<String>();
        std::fs::write(dir.join("nodes.txt"), summary)?;
        Ok(())
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        let members = std::mem::take(&mut self.members);
        for (_, m) in members {
            if let Some(c) = m.container {
                if m.state == State::Paused {
                    let _ = c.unpause().await;
                }
                c.rm()
                    .await
                    .with_context(|| format!("removing {}", m.container_name))?;
            }
        }
        Ok(())
    }
}
