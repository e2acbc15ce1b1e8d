//! A harness that runs real sessiond clusters for integration tests: every node is a separate
//! `sessiond serve` process with its own RocksDB directory and loopback ports, so tests can
//! kill, restart and add nodes exactly as an operator would.

use prost::Message;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::{ErrorCode, ErrorDetail, Role, StatusRequest, StatusResponse};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::Channel;

/// Flags every test cluster gets: fast elections and sweeps keep tests short.
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

/// The sessiond binary: `SESSIOND_BIN`, else next to the test executable's directory.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SESSIOND_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("sessiond")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One node of a test cluster.
pub struct TestNode {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("node log file");
        let child = Command::new(binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A running cluster; every process is killed when it is dropped.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    extra: Vec<String>,
    initial: String,
    _root: TempDir,
}

/// Build a cluster with extra flags.
pub struct Builder {
    size: u64,
    extra: Vec<String>,
}

impl Builder {
    /// Add flags given to every node.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.extra.extend(flags.iter().map(|s| s.to_string()));
        self
    }

    /// Start the cluster and wait for a leader that every node agrees on.
    pub async fn start(self) -> TestCluster {
        let root = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for id in 1..=self.size {
            nodes.push(new_node(&root, id));
        }
        let initial = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = TestCluster {
            nodes,
            extra: self.extra,
            initial,
            _root: root,
        };
        for i in 0..c.nodes.len() {
            let args = c.args(i, true);
            c.nodes[i].args = args;
            c.nodes[i].spawn();
        }
        c.wait_for_leader(Duration::from_secs(30)).await;
        c
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
        child: None,
    }
}

impl TestCluster {
    /// A cluster of `size` nodes.
    pub fn builder(size: u64) -> Builder {
        Builder {
            size,
            extra: Vec::new(),
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
        ];
        if bootstrap {
            a.push("--initial-cluster".into());
            a.push(self.initial.clone());
        }
        a.extend(BASE_FLAGS.iter().map(|s| s.to_string()));
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Index of the node with `id`.
    pub fn index(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node id")
    }

    /// A `Sessions` client to node index `i`.
    pub async fn client(&self, i: usize) -> SessionsClient<Channel> {
        SessionsClient::new(channel(&self.nodes[i].client_addr).await)
    }

    /// A `Cluster` client to node index `i`.
    pub async fn cluster_client(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(channel(&self.nodes[i].client_addr).await)
    }

    /// Status of node index `i`, if it answers.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        if !self.nodes[i].running() {
            return None;
        }
        let ch = Channel::from_shared(format!("http://{}", self.nodes[i].client_addr))
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

    /// Wait until every running node reports the same leader, which leads; its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut leader_ok = false;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].running() {
                    continue;
                }
                match self.status(i).await {
                    Some(s) => {
                        leaders.push(s.leader_id);
                        if s.role == Role::Leader as i32 && s.leader_id == s.node_id {
                            leader_ok = true;
                        }
                    }
                    None => leaders.push(0),
                }
            }
            if leader_ok && leaders.iter().all(|l| *l != 0 && *l == leaders[0]) {
                return leaders[0];
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {timeout:?}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The current leader's node index.
    pub async fn leader(&self) -> usize {
        let id = self.wait_for_leader(Duration::from_secs(30)).await;
        self.index(id)
    }

    /// A follower's node index.
    pub async fn follower(&self) -> usize {
        let l = self.leader().await;
        (0..self.nodes.len())
            .find(|i| *i != l && self.nodes[*i].running())
            .expect("a running follower")
    }

    /// SIGKILL node index `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Start node index `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i].spawn();
    }

    /// Start a fresh node that is not a member yet; its index.
    pub fn add_node(&mut self) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let node = new_node(&self._root, id);
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        let args = self.args(i, false);
        self.nodes[i].args = args;
        self.nodes[i].spawn();
        i
    }

    /// Print the tail of every node's log (on failure).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("----- node {} log tail -----\n{}", n.id, n.log_tail(40));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

/// A lazily connecting channel with test-sized timeouts.
pub async fn channel(addr: &str) -> Channel {
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

/// Poll `check` until it yields a value or `timeout` passes.
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

    /// A logout by token.
    pub fn revoke(token: &str) -> RevokeSessionRequest {
        RevokeSessionRequest {
            session: by_token(token),
            reason: String::new(),
            request_id: rid(),
        }
    }
}
