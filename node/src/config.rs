//! Command line, environment (`SESSIOND_*`) and TOML configuration of the server.
//!
//! Precedence: flag, then environment variable, then the TOML file given by `--config`, then
//! the built-in default. The TOML file uses the long flag names with `_` for `-`.

use crate::store::Tuning;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use sessiond_state::record::{CapPolicy, Policy, ReusePolicy, MIN_RETIRED_GENERATIONS};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// sessiond: a replicated session store.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of a cluster.
    Serve(Box<ServeArgs>),
    /// Run a local N-node cluster of child processes on 127.0.0.1 until Ctrl-C.
    Dev(DevArgs),
    /// Create a cluster's certificates, credentials and seal key.
    Certs(crate::certs::CertsArgs),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `--reuse-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReusePolicyArg {
    Revoke,
    Reject,
}

/// `--cap-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapPolicyArg {
    Evict,
    Refuse,
}

/// Flags of `sessiond serve`. Every flag also reads `SESSIOND_<NAME>` from the environment.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment take precedence).
    #[arg(long, env = "SESSIOND_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (> 0), unique in the cluster and never reused.
    #[arg(long, env = "SESSIOND_NODE_ID")]
    pub node_id: Option<u64>,
    /// Directory of this node's RocksDB and snapshots.
    #[arg(long, env = "SESSIOND_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the client API (Sessions and Cluster services).
    #[arg(long, env = "SESSIOND_CLIENT_ADDR")]
    pub client_addr: Option<SocketAddr>,
    /// Address of the Raft peer service.
    #[arg(long, env = "SESSIOND_PEER_ADDR")]
    pub peer_addr: Option<SocketAddr>,
    /// Address to advertise to clients when it differs from --client-addr (e.g. 0.0.0.0 binds).
    #[arg(long, env = "SESSIOND_ADVERTISE_CLIENT_ADDR")]
    pub advertise_client_addr: Option<String>,
    /// Address to advertise to peers when it differs from --peer-addr.
    #[arg(long, env = "SESSIOND_ADVERTISE_PEER_ADDR")]
    pub advertise_peer_addr: Option<String>,
    /// HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "SESSIOND_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Every member's peer address, `1=host:port,2=host:port,...`: bootstraps a new cluster.
    #[arg(long, env = "SESSIOND_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    #[arg(long, env = "SESSIOND_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Grace window of a rotated-away token, ms (bootstrap only).
    #[arg(long, env = "SESSIOND_GRACE_WINDOW_MS")]
    pub grace_window_ms: Option<u64>,
    /// Minimum time between two rotations of one session, ms (bootstrap only; default: the grace window).
    #[arg(long, env = "SESSIOND_ROTATION_MIN_INTERVAL_MS")]
    pub rotation_min_interval_ms: Option<u64>,
    /// What a reused token does (bootstrap only).
    #[arg(long, env = "SESSIOND_REUSE_POLICY", value_enum)]
    pub reuse_policy: Option<ReusePolicyArg>,
    /// Retired token generations kept for reuse detection, >= 64 (bootstrap only).
    #[arg(long, env = "SESSIOND_RETIRED_GENERATIONS")]
    pub retired_generations: Option<u32>,
    /// Live sessions per user (bootstrap only).
    #[arg(long, env = "SESSIOND_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<u32>,
    /// What a create past the per-user cap does (bootstrap only).
    #[arg(long, env = "SESSIOND_CAP_POLICY", value_enum)]
    pub cap_policy: Option<CapPolicyArg>,
    /// How long a request_id's response is remembered, ms (bootstrap only).
    #[arg(long, env = "SESSIOND_DEDUP_WINDOW_MS")]
    pub dedup_window_ms: Option<u64>,
    /// Idle timeout of sessions created without one, ms (bootstrap only).
    #[arg(long, env = "SESSIOND_DEFAULT_IDLE_TIMEOUT_MS")]
    pub default_idle_timeout_ms: Option<u64>,
    /// Absolute lifetime of sessions created without one, ms (bootstrap only).
    #[arg(long, env = "SESSIOND_DEFAULT_ABSOLUTE_TIMEOUT_MS")]
    pub default_absolute_timeout_ms: Option<u64>,
    /// Largest session data, bytes (bootstrap only).
    #[arg(long, env = "SESSIOND_MAX_DATA_BYTES")]
    pub max_data_bytes: Option<u32>,

    /// Raft heartbeat interval, ms.
    #[arg(long, env = "SESSIOND_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    #[arg(long, env = "SESSIOND_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "SESSIOND_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, env = "SESSIOND_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind the last snapshot (older ones are purged).
    #[arg(long, env = "SESSIOND_KEEP_LOGS")]
    pub keep_logs: Option<u64>,
    /// How often the leader looks for due expiries, ms.
    #[arg(long, env = "SESSIOND_EXPIRY_INTERVAL_MS")]
    pub expiry_interval_ms: Option<u64>,
    /// Most commands coalesced into one log entry.
    #[arg(long, env = "SESSIOND_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Log entries proposed concurrently by the write batcher.
    #[arg(long, env = "SESSIOND_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,
    /// Deadline of a request forwarded to the leader, ms.
    #[arg(long, env = "SESSIOND_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// STALE reads are served locally only if, within this long (monotonic clock), a leader
    /// told this node a commit index it has applied (default: the maximum election timeout);
    /// otherwise they go to the leader.
    #[arg(long, env = "SESSIOND_STALE_READ_BOUND_MS")]
    pub stale_read_bound_ms: Option<u64>,
    /// A clock further than this from the voters' median is reported (metric, log, Status);
    /// such a clock never drives replicated time. Default 500.
    #[arg(long, env = "SESSIOND_MAX_CLOCK_SKEW_MS")]
    pub max_clock_skew_ms: Option<u64>,
    /// Memtable size of each RocksDB column family, MiB (default 16).
    #[arg(long, env = "SESSIOND_WRITE_BUFFER_MIB")]
    pub write_buffer_mib: Option<usize>,
    /// RocksDB block cache shared by every column family, MiB (default 128).
    #[arg(long, env = "SESSIOND_BLOCK_CACHE_MIB")]
    pub block_cache_mib: Option<usize>,
    /// Threads that serve requests (default: one per core). Lower it when several nodes
    /// share a machine's cores.
    #[arg(long, env = "SESSIOND_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Directory made by `sessiond certs`: `ca.crt`, `node-<id>.crt`/`.key`, `access.toml`,
    /// `seal.key`. The flags below override single files.
    #[arg(long, env = "SESSIOND_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The cluster CA certificate (PEM): peers and client certificates must chain to it.
    #[arg(long, env = "SESSIOND_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM), naming `node-<id>.sessiond` and its hosts.
    #[arg(long, env = "SESSIOND_NODE_CERT")]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "SESSIOND_NODE_KEY")]
    pub key: Option<PathBuf>,
    /// The access list (TOML): principals, their roles and bearer credential hashes.
    #[arg(long, env = "SESSIOND_ACCESS_FILE")]
    pub access_file: Option<PathBuf>,
    /// The cluster's seal key (the same file on every node).
    #[arg(long, env = "SESSIOND_SEAL_KEY")]
    pub seal_key: Option<PathBuf>,
    /// Run without TLS and without authentication: anyone who reaches a port can read and
    /// write every session and change the membership. Only for tests on a private machine.
    #[arg(long, env = "SESSIOND_INSECURE")]
    pub insecure: bool,
    /// Serve the HTTP port (health, readiness, metrics) over TLS with the node's certificate.
    #[arg(long, env = "SESSIOND_METRICS_TLS")]
    pub metrics_tls: bool,
}

/// The TOML file: the same names as the flags, with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    client_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    advertise_client_addr: Option<String>,
    advertise_peer_addr: Option<String>,
    metrics_addr: Option<SocketAddr>,
    initial_cluster: Option<String>,
    log_format: Option<LogFormat>,
    grace_window_ms: Option<u64>,
    rotation_min_interval_ms: Option<u64>,
    reuse_policy: Option<ReusePolicyArg>,
    retired_generations: Option<u32>,
    max_sessions_per_user: Option<u32>,
    cap_policy: Option<CapPolicyArg>,
    dedup_window_ms: Option<u64>,
    default_idle_timeout_ms: Option<u64>,
    default_absolute_timeout_ms: Option<u64>,
    max_data_bytes: Option<u32>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    keep_logs: Option<u64>,
    expiry_interval_ms: Option<u64>,
    max_batch: Option<usize>,
    max_inflight_batches: Option<usize>,
    request_timeout_ms: Option<u64>,
    stale_read_bound_ms: Option<u64>,
    max_clock_skew_ms: Option<u64>,
    write_buffer_mib: Option<usize>,
    block_cache_mib: Option<usize>,
    worker_threads: Option<usize>,
    certs_dir: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    access_file: Option<PathBuf>,
    seal_key: Option<PathBuf>,
    insecure: Option<bool>,
    metrics_tls: Option<bool>,
}

/// Where a secure node's TLS material and access list are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub access_file: PathBuf,
    pub seal_key: PathBuf,
}

/// Whether the node runs with TLS and authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// TLS on every port, mutual TLS between peers, every client call authenticated.
    Tls(SecurityFiles),
    /// `--insecure`: plaintext, no authentication.
    Insecure,
}

/// Resolved configuration of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub advertise_client_addr: String,
    pub advertise_peer_addr: String,
    pub metrics_addr: Option<SocketAddr>,
    /// node id → peer address; empty when not bootstrapping.
    pub initial_cluster: BTreeMap<u64, String>,
    pub log_format: LogFormat,
    /// Proposed by the bootstrapping node right after initializing the cluster.
    pub policy: Policy,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs: u64,
    pub keep_logs: u64,
    pub expiry_interval_ms: u64,
    pub max_batch: usize,
    pub max_inflight_batches: usize,
    pub request_timeout_ms: u64,
    pub stale_read_bound_ms: u64,
    pub max_clock_skew_ms: u64,
    pub store: Tuning,
    /// None: one per core.
    pub worker_threads: Option<usize>,
    pub security: Security,
    /// Serve the HTTP port over TLS.
    pub metrics_tls: bool,
}

macro_rules! pick {
    ($args:expr, $file:expr, $field:ident) => {
        $args.$field.clone().or_else(|| $file.$field.clone())
    };
}

impl ServeArgs {
    /// Merge flags, environment and the optional TOML file, and check the result.
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let node_id = pick!(self, file, node_id).context("--node-id is required")?;
        if node_id == 0 {
            bail!("--node-id must be greater than 0");
        }
        let data_dir = pick!(self, file, data_dir).context("--data-dir is required")?;
        let client_addr = pick!(self, file, client_addr).context("--client-addr is required")?;
        let peer_addr = pick!(self, file, peer_addr).context("--peer-addr is required")?;
        let initial_cluster = match pick!(self, file, initial_cluster) {
            Some(s) => parse_initial_cluster(&s)?,
            None => BTreeMap::new(),
        };
        if !initial_cluster.is_empty() && !initial_cluster.contains_key(&node_id) {
            bail!("--initial-cluster does not list this node's id {node_id}");
        }

        let defaults = Policy::default();
        let grace_window_ms =
            pick!(self, file, grace_window_ms).unwrap_or(defaults.grace_window_ms);
        let policy = Policy {
            grace_window_ms,
            rotation_min_interval_ms: pick!(self, file, rotation_min_interval_ms)
                .unwrap_or(grace_window_ms),
            reuse_policy: match pick!(self, file, reuse_policy) {
                Some(ReusePolicyArg::Reject) => ReusePolicy::Reject,
                Some(ReusePolicyArg::Revoke) | None => ReusePolicy::Revoke,
            },
            retired_generations: pick!(self, file, retired_generations)
                .unwrap_or(defaults.retired_generations),
            max_sessions_per_user: pick!(self, file, max_sessions_per_user)
                .unwrap_or(defaults.max_sessions_per_user),
            cap_policy: match pick!(self, file, cap_policy) {
                Some(CapPolicyArg::Refuse) => CapPolicy::Refuse,
                Some(CapPolicyArg::Evict) | None => CapPolicy::EvictOldest,
            },
            dedup_window_ms: pick!(self, file, dedup_window_ms).unwrap_or(defaults.dedup_window_ms),
            default_idle_timeout_ms: pick!(self, file, default_idle_timeout_ms)
                .unwrap_or(defaults.default_idle_timeout_ms),
            default_absolute_timeout_ms: pick!(self, file, default_absolute_timeout_ms)
                .unwrap_or(defaults.default_absolute_timeout_ms),
            max_data_bytes: pick!(self, file, max_data_bytes).unwrap_or(defaults.max_data_bytes),
            ..defaults
        };
        if policy.retired_generations < MIN_RETIRED_GENERATIONS {
            bail!("--retired-generations must be at least {MIN_RETIRED_GENERATIONS}");
        }
        if policy.rotation_min_interval_ms < policy.grace_window_ms {
            // Then one tab could rotate twice while another still presents the token two
            // generations back, inside its grace window: that is reuse, and the session
            // would be revoked under the user — the failure this store exists to end.
            bail!(
                "--rotation-min-interval-ms ({}) is shorter than --grace-window-ms ({}): a \
                 browser tab could then rotate twice while another tab still holds the token \
                 two generations back, which counts as token reuse and logs the user out; \
                 set the interval to at least the grace window",
                policy.rotation_min_interval_ms,
                policy.grace_window_ms
            );
        }
        // The same check the state machine applies to `Configure`: a policy it would refuse
        // is refused here, at startup, rather than proposed again on every batch.
        sessiond_state::limits::policy(&policy).map_err(|e| anyhow::anyhow!("{e}"))?;

        let heartbeat_ms = pick!(self, file, heartbeat_ms).unwrap_or(100);
        let election_timeout_min_ms = pick!(self, file, election_timeout_min_ms).unwrap_or(400);
        let election_timeout_max_ms =
            pick!(self, file, election_timeout_max_ms).unwrap_or(election_timeout_min_ms * 2);
        if heartbeat_ms == 0 || election_timeout_min_ms <= heartbeat_ms {
            bail!("--election-timeout-min-ms must exceed --heartbeat-ms (> 0)");
        }
        if election_timeout_max_ms <= election_timeout_min_ms {
            bail!("--election-timeout-max-ms must exceed --election-timeout-min-ms");
        }
        let max_batch = pick!(self, file, max_batch).unwrap_or(512);
        let max_inflight_batches = pick!(self, file, max_inflight_batches).unwrap_or(2);
        if max_batch == 0 || max_inflight_batches == 0 {
            bail!("--max-batch and --max-inflight-batches must be at least 1");
        }

        let defaults = Tuning::default();
        let store = Tuning {
            write_buffer_mib: pick!(self, file, write_buffer_mib)
                .unwrap_or(defaults.write_buffer_mib),
            block_cache_mib: pick!(self, file, block_cache_mib).unwrap_or(defaults.block_cache_mib),
        };
        if store.write_buffer_mib == 0 || store.block_cache_mib == 0 {
            bail!("--write-buffer-mib and --block-cache-mib must be at least 1");
        }
        let worker_threads = pick!(self, file, worker_threads);
        if worker_threads == Some(0) {
            bail!("--worker-threads must be at least 1");
        }

        let security = self.security(&file, node_id)?;
        let metrics_tls = self.metrics_tls || file.metrics_tls.unwrap_or(false);
        if metrics_tls && security == Security::Insecure {
            bail!("--metrics-tls needs the node's TLS material, not --insecure");
        }

        Ok(NodeConfig {
            node_id,
            data_dir,
            client_addr,
            peer_addr,
            advertise_client_addr: pick!(self, file, advertise_client_addr)
                .unwrap_or_else(|| client_addr.to_string()),
            advertise_peer_addr: pick!(self, file, advertise_peer_addr)
                .unwrap_or_else(|| peer_addr.to_string()),
            metrics_addr: pick!(self, file, metrics_addr),
            initial_cluster,
            log_format: pick!(self, file, log_format).unwrap_or(LogFormat::Text),
            policy,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_logs: pick!(self, file, snapshot_logs).unwrap_or(10_000).max(1),
            keep_logs: pick!(self, file, keep_logs).unwrap_or(1_000),
            expiry_interval_ms: pick!(self, file, expiry_interval_ms)
                .unwrap_or(1_000)
                .max(10),
            max_batch,
            max_inflight_batches,
            request_timeout_ms: pick!(self, file, request_timeout_ms)
                .unwrap_or(5_000)
                .max(1),
            stale_read_bound_ms: pick!(self, file, stale_read_bound_ms)
                .unwrap_or(election_timeout_max_ms),
            max_clock_skew_ms: pick!(self, file, max_clock_skew_ms).unwrap_or(500).max(1),
            store,
            worker_threads,
            security,
            metrics_tls,
        })
    }

    /// TLS files from the flags, the file config and `--certs-dir`; or `--insecure`.
    fn security(&self, file: &FileConfig, node_id: u64) -> anyhow::Result<Security> {
        let insecure = self.insecure || file.insecure.unwrap_or(false);
        let dir = pick!(self, file, certs_dir);
        let named = |explicit: Option<PathBuf>, name: String| -> Option<PathBuf> {
            explicit.or_else(|| dir.as_ref().map(|d| d.join(name)))
        };
        let files = (
            named(pick!(self, file, ca_cert), "ca.crt".into()),
            named(pick!(self, file, cert), format!("node-{node_id}.crt")),
            named(pick!(self, file, key), format!("node-{node_id}.key")),
            named(pick!(self, file, access_file), "access.toml".into()),
            named(pick!(self, file, seal_key), "seal.key".into()),
        );
        match (insecure, files) {
            (true, (None, None, None, None, None)) => Ok(Security::Insecure),
            (true, _) => bail!("--insecure was given together with TLS files; choose one"),
            (false, (Some(ca_cert), Some(cert), Some(key), Some(access_file), Some(seal_key))) => {
                Ok(Security::Tls(SecurityFiles {
                    ca_cert,
                    cert,
                    key,
                    access_file,
                    seal_key,
                }))
            }
            (false, (None, None, None, None, None)) => bail!(
                "no TLS material: give --certs-dir DIR (create one with `sessiond certs`), or \
                 --insecure to run without TLS and authentication (tests on a private machine only)"
            ),
            (false, _) => bail!(
                "incomplete TLS material: --ca-cert, --cert, --key, --access-file and --seal-key \
                 are all needed (or --certs-dir holding ca.crt, node-{node_id}.crt, \
                 node-{node_id}.key, access.toml and seal.key)"
            ),
        }
    }
}

/// Parse `1=host:port,2=host:port`.
pub fn parse_initial_cluster(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry `{part}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster id `{id}` is not a number"))?;
        if id == 0 {
            bail!("--initial-cluster ids must be greater than 0");
        }
        let addr = addr.trim();
        if !addr.contains(':') {
            bail!("--initial-cluster address `{addr}` has no port");
        }
        if out.insert(id, addr.to_string()).is_some() {
            bail!("--initial-cluster lists id {id} twice");
        }
    }
    Ok(out)
}

/// Flags of `sessiond dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Number of nodes (3 or 5 make sense; 1..=9 accepted).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./data/dev")]
    pub data_dir: PathBuf,
    /// Node i listens for clients on base+i, peers on base+100+i, HTTP on base+200+i.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_bad_entries() {
        let m = parse_initial_cluster("1=127.0.0.1:1, 2=h:2,3=h:3").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&2], "h:2");
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("x=a:1").is_err());
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("1=nohost").is_err());
    }

    #[test]
    fn a_rotation_interval_shorter_than_the_grace_window_is_refused() {
        let base = || ServeArgs {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            client_addr: Some("127.0.0.1:1".parse().expect("address")),
            peer_addr: Some("127.0.0.1:2".parse().expect("address")),
            insecure: true,
            ..ServeArgs::default()
        };
        let mut a = base();
        a.grace_window_ms = Some(5_000);
        a.rotation_min_interval_ms = Some(4_999);
        let err = a.resolve().expect_err("refused").to_string();
        assert!(err.contains("--rotation-min-interval-ms (4999)"), "{err}");
        let mut ok = base();
        ok.grace_window_ms = Some(5_000);
        ok.rotation_min_interval_ms = Some(5_000);
        ok.resolve()
            .expect("an interval equal to the window is fine");
        let mut default = base();
        default.grace_window_ms = Some(2_000);
        let cfg = default
            .resolve()
            .expect("the interval defaults to the window");
        assert_eq!(cfg.policy.rotation_min_interval_ms, 2_000);
    }

    #[test]
    fn resolve_requires_identity_and_checks_policy() {
        let mut a = ServeArgs::default();
        assert!(a.resolve().is_err());
        a.node_id = Some(1);
        a.data_dir = Some("/tmp/x".into());
        a.client_addr = Some("127.0.0.1:1".parse().unwrap());
        a.peer_addr = Some("127.0.0.1:2".parse().unwrap());
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.contains("--insecure") && err.contains("sessiond certs"),
            "{err}"
        );
        a.insecure = true;
        let c = a.resolve().unwrap();
        assert_eq!(c.security, Security::Insecure);
        assert_eq!(c.policy, Policy::default());
        a.grace_window_ms = Some(5_000);
        assert_eq!(a.resolve().unwrap().policy.rotation_min_interval_ms, 5_000);
        a.retired_generations = Some(3);
        assert!(a.resolve().is_err());
        a.retired_generations = None;
        a.dedup_window_ms = Some(0);
        assert!(a.resolve().is_err(), "a policy the state machine refuses");
        a.dedup_window_ms = None;
        a.max_sessions_per_user = Some(0);
        assert!(a.resolve().is_err());
        a.retired_generations = None;
        a.initial_cluster = Some("2=h:1,3=h:2".into());
        assert!(
            a.resolve().is_err(),
            "own id missing from the initial cluster"
        );
    }

    #[test]
    fn toml_file_fills_what_flags_leave_out() {
        let dir = std::env::temp_dir().join(format!("sessiond-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "node_id = 2\ndata_dir = \"/var/lib/s\"\nclient_addr = \"127.0.0.1:7002\"\n\
             peer_addr = \"127.0.0.1:7102\"\ngrace_window_ms = 9000\nreuse_policy = \"reject\"\n\
             certs_dir = \"/etc/sessiond/certs\"\n",
        )
        .unwrap();
        let mut a = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert_eq!(a.resolve().unwrap().policy.grace_window_ms, 9_000);
        a.grace_window_ms = Some(5_000);
        let c = a.resolve().unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(
            c.policy.grace_window_ms, 5_000,
            "the flag wins over the file"
        );
        assert_eq!(c.policy.reuse_policy, ReusePolicy::Reject);
        match &c.security {
            Security::Tls(f) => {
                assert_eq!(f.cert, PathBuf::from("/etc/sessiond/certs/node-2.crt"));
                assert_eq!(
                    f.access_file,
                    PathBuf::from("/etc/sessiond/certs/access.toml")
                );
            }
            Security::Insecure => panic!("the file names a certs dir"),
        }
        a.insecure = true;
        assert!(a.resolve().is_err(), "--insecure together with TLS files");
        a.insecure = false;
        std::fs::write(&path, "node_idd = 2\n").unwrap();
        assert!(a.resolve().is_err(), "unknown keys are refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
