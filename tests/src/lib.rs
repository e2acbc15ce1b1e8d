//! A harness that runs real sessiond clusters for integration tests: every node is a separate
//! `sessiond serve` process with its own RocksDB directory and loopback ports, so tests can
//! kill, restart and add nodes exactly as an operator would.
//!
//! Every wait here is bounded; a test that fails (panics) prints the tail of every node's log
//! and keeps the cluster's directory on disk, naming it, for a closer look.
//!
//! Clusters run as shipped: TLS on both ports, mutual TLS between peers, every call
//! authenticated. The harness makes the cluster's certificates with `sessiond certs local`
//! (principals [`ADMIN`] with every role, [`APP`] with `app`, [`WATCHER`] with `watch`), and its
//! clients connect as [`ADMIN`] unless a test asks for another principal.

pub mod json_api;

use prost::Message;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::{ErrorCode, ErrorDetail, Role, StatusRequest, StatusResponse};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The harness's principal with every role.
pub const ADMIN: &str = "admin";
/// A principal with the `app` role only.
pub const APP: &str = "app";
/// A principal with the `watch` role only.
pub const WATCHER: &str = "watcher";

/// Flags every test cluster gets unless it sets them itself (name, value pairs): fast
/// elections and sweeps keep tests short.
const BASE_FLAGS: &[&str] = &[
    "--heartbeat-ms",
    "50",
    "--election-timeout-min-ms",
    "300",
    "--election-timeout-max-ms",
    "600",
    "--expiry-interval-ms",
    "200",
];

/// How long a cluster may take to elect a leader that every member agrees on.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting a cluster when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// The sessiond binary: `SESSIOND_BIN`, else next to the test executable's directory
/// (test executables live in `target/debug/deps/`, the binary in `target/debug/`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SESSIOND_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("sessiond")
}

fn free_port() -> u16 {
    sessiond_workload::ports::free().expect("a free loopback port")
}

/// One node of a test cluster.
pub struct TestNode {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub dir: PathBuf,
    /// Arguments of the last start.
    args: Vec<String>,
    /// Environment variables set for the process.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestNode {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already runs", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("node log file");
        let child = Command::new(binary())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (build it: cargo build --bin sessiond): {e}",
                    binary().display()
                )
            });
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether its process was started and not killed by the harness.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if the process ended by itself.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A running cluster; every process is killed when it is dropped.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    extra: Vec<String>,
    initial: String,
    root: Option<TempDir>,
    /// The cluster's certificates, access list and seal key (`sessiond certs local`).
    pub certs: PathBuf,
}

/// Run `sessiond certs` with `args` in `certs`; panics with its output on failure.
pub fn sessiond_certs(certs: &std::path::Path, args: &[&str]) {
    let out = Command::new(binary())
        .arg("certs")
        .arg("--certs-dir")
        .arg(certs)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} certs: {e}", binary().display()));
    assert!(
        out.status.success(),
        "sessiond certs {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TLS settings of a client that trusts `certs`' CA and presents `principal`'s certificate.
pub fn client_tls(certs: &std::path::Path, principal: &str) -> ClientTlsConfig {
    let read = |name: String| {
        std::fs::read(certs.join(&name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    };
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt".into())))
        .identity(Identity::from_pem(
            read(format!("client-{principal}.crt")),
            read(format!("client-{principal}.key")),
        ))
}

/// A lazily connecting TLS channel to `addr` as `principal`, with test-sized timeouts.
pub fn tls_channel(certs: &std::path::Path, principal: &str, addr: &str) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .expect("valid address")
        .tls_config(client_tls(certs, principal))
        .expect("TLS settings")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// Build a cluster with extra flags.
pub struct Builder {
    size: u64,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    seed: Option<PathBuf>,
    restore: Option<(PathBuf, PathBuf)>,
}

impl Builder {
    /// Add flags given to every node (policy flags only matter to the bootstrapping node, but
    /// every node gets them, as an operator would do).
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.extra.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    /// Set an environment variable of every node process (e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Start every node on a copy of the data directory `dir/node<id>` written earlier, with
    /// the seal key `dir/seal.key` of the cluster that wrote it (fresh certificates otherwise).
    pub fn data_from(mut self, dir: &Path) -> Self {
        self.seed = Some(dir.to_path_buf());
        self
    }

    /// Seed every node with `sessiond restore` from `backup` (a new cluster of these nodes),
    /// with the seal key `seal_key` of the cluster it was taken from.
    pub fn restore_from(mut self, backup: &Path, seal_key: &Path) -> Self {
        self.restore = Some((backup.to_path_buf(), seal_key.to_path_buf()));
        self
    }

    /// Start the cluster and wait for a leader that every node agrees on. A node that exits
    /// at startup because a picked port was taken meanwhile makes the whole start retry on
    /// fresh ports.
    pub async fn start(self) -> TestCluster {
        for attempt in 1..=START_ATTEMPTS {
            let root = tempfile::tempdir().expect("tempdir");
            let certs = root.path().join("certs");
            let size = self.size.to_string();
            sessiond_certs(
                &certs,
                &[
                    "local",
                    "--nodes",
                    &size,
                    "--client",
                    &format!("{ADMIN}=app+watch+operator"),
                    "--client",
                    &format!("{APP}=app"),
                    "--client",
                    &format!("{WATCHER}=watch"),
                ],
            );
            let nodes: Vec<TestNode> = (1..=self.size).map(|id| new_node(&root, id)).collect();
            if let Some((backup, seal)) = &self.restore {
                std::fs::copy(seal, certs.join("seal.key")).expect("seal key");
                let peers = nodes
                    .iter()
                    .map(|n| format!("{}={}", n.id, n.peer_addr))
                    .collect::<Vec<_>>()
                    .join(",");
                let clients = nodes
                    .iter()
                    .map(|n| format!("{}={}", n.id, n.client_addr))
                    .collect::<Vec<_>>()
                    .join(",");
                for n in &nodes {
                    let out = Command::new(binary())
                        .args(["restore", "--backup"])
                        .arg(backup)
                        .arg("--data-dir")
                        .arg(n.dir.join("data"))
                        .args(["--node-id", &n.id.to_string()])
                        .args(["--initial-cluster", &peers, "--client-addrs", &clients])
                        .output()
                        .expect("sessiond restore runs");
                    assert!(
                        out.status.success(),
                        "sessiond restore of node {}: {}",
                        n.id,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            if let Some(seed) = &self.seed {
                std::fs::copy(seed.join("seal.key"), certs.join("seal.key")).expect("seal key");
                for n in &nodes {
                    copy_dir(&seed.join(format!("node{}", n.id)), &n.dir.join("data"));
                }
            }
            let initial = nodes
                .iter()
                .map(|n| format!("{}={}", n.id, n.peer_addr))
                .collect::<Vec<_>>()
                .join(",");
            let mut c = TestCluster {
                nodes,
                extra: self.extra.clone(),
                initial,
                root: Some(root),
                certs,
            };
            for i in 0..c.nodes.len() {
                c.nodes[i].args = c.args(i, true);
                c.nodes[i].env = self.env.clone();
                c.nodes[i].spawn();
            }
            match c.startup(LEADER_TIMEOUT).await {
                Ok(_) => return c,
                Err(Startup::PortTaken) if attempt < START_ATTEMPTS => {
                    eprintln!("a port was taken while starting (attempt {attempt}); retrying");
                    continue;
                }
                Err(Startup::PortTaken) => panic!("ports kept being taken while starting"),
                Err(Startup::Exited(id, status)) => {
                    panic!("node {id} exited while the cluster started: {status}")
                }
            }
        }
        unreachable!("every attempt returns or panics")
    }
}

enum Startup {
    PortTaken,
    Exited(u64, std::process::ExitStatus),
}

/// Copy directory `from` to `to` (created), files and subdirectories.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn new_node(root: &TempDir, id: u64) -> TestNode {
    let dir = root.path().join(format!("node{id}"));
    std::fs::create_dir_all(&dir).expect("node dir");
    TestNode {
        id,
        client_addr: format!("127.0.0.1:{}", free_port()),
        peer_addr: format!("127.0.0.1:{}", free_port()),
        http_addr: format!("127.0.0.1:{}", free_port()),
        dir,
        args: Vec::new(),
        env: Vec::new(),
        child: None,
    }
}

impl TestCluster {
    /// A cluster of `size` nodes.
    pub fn builder(size: u64) -> Builder {
        Builder {
            size,
            extra: Vec::new(),
            env: Vec::new(),
            seed: None,
            restore: None,
        }
    }

    /// A 3-node cluster with default flags.
    pub async fn start3() -> TestCluster {
        Self::builder(3).start().await
    }

    fn args(&self, i: usize, bootstrap: bool) -> Vec<String> {
        let n = &self.nodes[i];
        let mut a: Vec<String> = vec![
            "serve".into(),
            "--node-id".into(),
            n.id.to_string(),
            "--data-dir".into(),
            n.dir.join("data").display().to_string(),
            "--client-addr".into(),
            n.client_addr.clone(),
            "--peer-addr".into(),
            n.peer_addr.clone(),
            "--metrics-addr".into(),
            n.http_addr.clone(),
            "--certs-dir".into(),
            self.certs.display().to_string(),
        ];
        if bootstrap {
            a.push("--initial-cluster".into());
            a.push(self.initial.clone());
        }
        // Base flags (name, value pairs) unless the cluster's own flags set them.
        for pair in BASE_FLAGS.chunks(2) {
            if !self.extra.iter().any(|e| e == pair[0]) {
                a.extend(pair.iter().map(|s| s.to_string()));
            }
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Wait for an agreed leader, noticing nodes that exit at startup.
    async fn startup(&mut self, timeout: Duration) -> Result<u64, Startup> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in &mut self.nodes {
                if let Some(status) = n.exited() {
                    let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
                    let id = n.id;
                    self.dump_logs();
                    return Err(if log.contains("in use") {
                        Startup::PortTaken
                    } else {
                        Startup::Exited(id, status)
                    });
                }
            }
            if let Some(id) = self.agreed_leader().await {
                return Ok(id);
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the node with `id`.
    pub fn index(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node id")
    }

    /// A TLS channel to node index `i` as `principal`.
    pub fn channel_as(&self, principal: &str, i: usize) -> Channel {
        tls_channel(&self.certs, principal, &self.nodes[i].client_addr)
    }

    /// A `Sessions` client to node index `i` (as [`ADMIN`]).
    pub async fn client(&self, i: usize) -> SessionsClient<Channel> {
        SessionsClient::new(self.channel_as(ADMIN, i))
    }

    /// A `Cluster` client to node index `i` (as [`ADMIN`]).
    pub async fn cluster_client(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel_as(ADMIN, i))
    }

    /// A `sessiond_client` builder for `endpoints`, trusting the cluster's CA, as [`ADMIN`].
    pub fn client_builder<I, S>(&self, endpoints: I) -> sessiond_client::ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        sessiond_client::Client::builder(endpoints).tls(client_tls(&self.certs, ADMIN))
    }

    /// A `Sessions` client to the current leader.
    pub async fn leader_client(&self) -> SessionsClient<Channel> {
        self.client(self.leader().await).await
    }

    /// Status of node index `i`, if it runs and answers within two seconds.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        if !self.nodes[i].running() {
            return None;
        }
        let ch = Channel::from_shared(format!("https://{}", self.nodes[i].client_addr))
            .ok()?
            .tls_config(client_tls(&self.certs, ADMIN))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        ClusterClient::new(ch)
            .status(StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// The leader's id if a node leads (highest term wins) and every running voter it lists
    /// reports it as leader. Nodes that are not voters yet (just added) are not asked to agree.
    async fn agreed_leader(&self) -> Option<u64> {
        let mut statuses = Vec::new();
        for i in 0..self.nodes.len() {
            statuses.push(self.status(i).await);
        }
        let leader = statuses
            .iter()
            .flatten()
            .filter(|s| s.role == Role::Leader as i32 && s.leader_id == s.node_id)
            .max_by_key(|s| s.term)?;
        let voters: Vec<u64> = leader
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        let agreed = self.nodes.iter().zip(&statuses).all(|(n, s)| {
            !n.running()
                || !voters.contains(&n.id)
                || s.as_ref().is_some_and(|s| s.leader_id == leader.node_id)
        });
        agreed.then_some(leader.node_id)
    }

    /// Wait until every running voter reports the same leader, which leads; its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.agreed_leader().await {
                return id;
            }
            if Instant::now() > deadline {
                let mut seen = Vec::new();
                for i in 0..self.nodes.len() {
                    seen.push(
                        self.status(i)
                            .await
                            .map(|s| (s.node_id, s.role, s.term, s.leader_id)),
                    );
                }
                self.dump_logs();
                panic!("no agreed leader within {timeout:?}: (id, role, term, leader) {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The current leader's id.
    pub async fn leader_id(&self) -> u64 {
        self.wait_for_leader(LEADER_TIMEOUT).await
    }

    /// The current leader's node index.
    pub async fn leader(&self) -> usize {
        self.index(self.leader_id().await)
    }

    /// A follower's node index.
    pub async fn follower(&self) -> usize {
        let l = self.leader().await;
        (0..self.nodes.len())
            .find(|i| *i != l && self.nodes[*i].running())
            .expect("a running follower")
    }

    /// SIGHUP node index `i`: it re-reads its certificates and access list.
    pub fn reload(&self, i: usize) {
        let pid = self.nodes[i]
            .child
            .as_ref()
            .expect("node runs")
            .id()
            .to_string();
        let ok = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "SIGHUP to node {}", self.nodes[i].id);
    }

    /// SIGKILL node index `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Stop node index `i` as a supervisor does: SIGTERM, then wait (up to 10 s) for it to
    /// exit; SIGKILL if it does not.
    pub fn stop(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(child) = n.child.as_mut() else {
            return;
        };
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "SIGTERM to node {}", n.id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                n.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("node {} ignored SIGTERM for 10 s; killing it", n.id);
        n.kill();
    }

    /// Start node index `i` (stopped) on its data directory with the flags it last had.
    pub fn start(&mut self, i: usize) {
        self.nodes[i].spawn();
    }

    /// Start node index `i` again on its data directory with the flags it last had.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i].spawn();
    }

    /// Start node index `i` again on its data directory, with `--initial-cluster` or without.
    pub fn restart_with(&mut self, i: usize, initial_cluster: bool) {
        self.nodes[i].kill();
        self.nodes[i].args = self.args(i, initial_cluster);
        self.nodes[i].spawn();
    }

    /// Start a fresh node that is not a member yet (no `--initial-cluster`); its index.
    pub fn add_node(&mut self) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        sessiond_certs(
            &self.certs,
            &[
                "node",
                "--node-id",
                &id.to_string(),
                "--host",
                "127.0.0.1",
                "--host",
                "localhost",
            ],
        );
        let node = new_node(self.root.as_ref().expect("cluster dir"), id);
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.nodes[i].args = self.args(i, false);
        self.nodes[i].spawn();
        i
    }

    /// Start a fresh node, wait until it serves, and add it as a learner through the leader,
    /// waiting until it has caught up (`AddLearner` blocking); its index.
    pub async fn add_learner(&mut self) -> usize {
        let new = self.add_node();
        wait_for(Duration::from_secs(10), "the new node to serve", || {
            let c = &*self;
            async move { c.status(new).await }
        })
        .await;
        let n = &self.nodes[new];
        let req = sessiond_proto::v1::AddLearnerRequest {
            node_id: n.id,
            client_addr: n.client_addr.clone(),
            peer_addr: n.peer_addr.clone(),
            blocking: true,
        };
        self.cluster_client(self.leader().await)
            .await
            .add_learner(req)
            .await
            .expect("add learner");
        new
    }

    /// Print the tail of every node's log (on failure).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "----- node {} ({}) log tail -----\n{}",
                n.id,
                n.log_path().display(),
                n.log_tail(60)
            );
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            self.dump_logs();
            if let Some(root) = self.root.take() {
                eprintln!("cluster directory kept: {}", root.keep().display());
            }
        }
    }
}

/// A lazily connecting plaintext channel with test-sized timeouts (what a client that does
/// not speak TLS would use).
pub fn plaintext_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid address")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// A fresh 16-byte request id.
pub fn rid() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

/// The machine-readable detail of a status, if it carries one.
pub fn detail(s: &tonic::Status) -> Option<ErrorDetail> {
    let v = s.metadata().get_bin(sessiond_proto::ERROR_DETAIL_KEY)?;
    let b = v.to_bytes().ok()?;
    ErrorDetail::decode(b.as_ref()).ok()
}

/// The `ErrorCode` of a status (UNSPECIFIED when it has none).
pub fn code(s: &tonic::Status) -> ErrorCode {
    detail(s)
        .and_then(|d| ErrorCode::try_from(d.code).ok())
        .unwrap_or(ErrorCode::Unspecified)
}

/// The gRPC status code that goes with an `ErrorCode` (docs/semantics.md §9).
pub fn grpc_code(c: ErrorCode) -> tonic::Code {
    match c {
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Expired => tonic::Code::FailedPrecondition,
        ErrorCode::Revoked | ErrorCode::TokenReused => tonic::Code::PermissionDenied,
        ErrorCode::VersionConflict => tonic::Code::Aborted,
        ErrorCode::NotLeader | ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::Unspecified => tonic::Code::Unknown,
    }
}

/// Assert that a call failed with `want`, both as detail and as gRPC status code; the detail.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    want: ErrorCode,
) -> ErrorDetail {
    let s = match r {
        Ok(v) => panic!("expected {want:?}, got a success: {:?}", v.into_inner()),
        Err(s) => s,
    };
    assert_eq!(code(&s), want, "error code of {s:?}");
    assert_eq!(s.code(), grpc_code(want), "gRPC status of {s:?}");
    detail(&s).expect("detail")
}

/// Assert that a call failed with REVOKED and `reason`.
#[track_caller]
pub fn expect_revoked<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    reason: &str,
) {
    let d = expect_err(r, ErrorCode::Revoked);
    assert_eq!(d.revoked_reason, reason, "revocation reason");
}

/// Poll `check` every 100 ms until it yields a value or `timeout` passes (then panic).
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until a STALE read of each of `tokens` through `node` finds its session: the node has
/// applied them (after a restart, a snapshot install or a restore) and serves them itself.
pub async fn until_stale_reads_find(
    node: &SessionsClient<Channel>,
    tokens: &[&str],
    node_is: &str,
) {
    for t in tokens {
        wait_for(
            Duration::from_secs(10),
            &format!("a stale read on {node_is}"),
            || {
                let mut n = node.clone();
                async move { n.get_session(req::get_stale(t)).await.ok() }
            },
        )
        .await;
    }
}

/// Shorthands for building requests.
pub mod req {
    use super::rid;
    use sessiond_proto::v1::*;

    /// Name a session by token.
    pub fn by_token(t: &str) -> Option<SessionRef> {
        Some(SessionRef {
            by: Some(session_ref::By::Token(t.to_string())),
        })
    }

    /// Name a session by id.
    pub fn by_id(id: &str) -> Option<SessionRef> {
        Some(SessionRef {
            by: Some(session_ref::By::Id(id.to_string())),
        })
    }

    /// A create for `user` with `data`.
    pub fn create(user: &str, data: &[u8]) -> CreateSessionRequest {
        CreateSessionRequest {
            user_id: user.into(),
            data: data.to_vec(),
            request_id: rid(),
            ..Default::default()
        }
    }

    /// A create for `user` with an idle timeout.
    pub fn create_idle(user: &str, idle_timeout_ms: u64) -> CreateSessionRequest {
        CreateSessionRequest {
            idle_timeout_ms,
            ..create(user, b"")
        }
    }

    /// A linearizable get.
    pub fn get(token: &str) -> GetSessionRequest {
        GetSessionRequest {
            token: token.into(),
            ..Default::default()
        }
    }

    /// A stale get.
    pub fn get_stale(token: &str) -> GetSessionRequest {
        GetSessionRequest {
            token: token.into(),
            consistency: Consistency::Stale as i32,
            touch: false,
        }
    }

    /// A rotation with a fresh request id.
    pub fn rotate(token: &str) -> RotateTokenRequest {
        RotateTokenRequest {
            token: token.into(),
            request_id: rid(),
        }
    }

    /// An update of data by token.
    pub fn update(token: &str, expected_version: u64, data: &[u8]) -> UpdateSessionRequest {
        UpdateSessionRequest {
            session: by_token(token),
            expected_version,
            data: Some(data.to_vec()),
            attributes: None,
            request_id: rid(),
        }
    }

    /// A touch.
    pub fn touch(token: &str) -> TouchSessionRequest {
        TouchSessionRequest {
            token: token.into(),
        }
    }

    /// A logout by token.
    pub fn revoke(token: &str) -> RevokeSessionRequest {
        RevokeSessionRequest {
            session: by_token(token),
            reason: String::new(),
            request_id: rid(),
        }
    }

    /// A linearizable list of a user's sessions.
    pub fn list(user: &str) -> ListUserSessionsRequest {
        ListUserSessionsRequest {
            user_id: user.into(),
            consistency: Consistency::Linearizable as i32,
            ..Default::default()
        }
    }
}
