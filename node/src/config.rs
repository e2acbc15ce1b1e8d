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
    /// Back up the applied state of a stopped node's data directory (see also `sessionctl
    /// backup`, which backs up a running cluster).
    Backup(crate::recovery::BackupArgs),
    /// Seed the empty data directory of one member of a new cluster from a backup file.
    Restore(crate::recovery::RestoreArgs),
    /// Print the OpenAPI 3.1 description of the HTTP/JSON API (as docs/openapi.json).
    Openapi,
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
    /// Take the node id from the ordinal of a StatefulSet pod's name (`sessiond-2` → 3), and
    /// advertise the pod's stable name under --peer-domain: the image has no shell to
    /// compute them, and every pod of a StatefulSet gets the same settings.
    #[arg(long, env = "SESSIOND_NODE_ID_FROM_ORDINAL")]
    pub node_id_from_ordinal: bool,
    /// The pod's name, `<statefulset>-<ordinal>` (default: the `HOSTNAME` variable, which a
    /// StatefulSet pod's runtime sets to it). Only with --node-id-from-ordinal.
    #[arg(long, env = "SESSIOND_POD_NAME")]
    pub pod_name: Option<String>,
    /// DNS domain of the StatefulSet's headless Service, e.g.
    /// `sessiond-peers.default.svc.cluster.local`: a pod is reached at `<pod>.<domain>`.
    /// Only with --node-id-from-ordinal.
    #[arg(long, env = "SESSIOND_PEER_DOMAIN")]
    pub peer_domain: Option<String>,
    /// Bootstrap a new cluster of the pods with ordinals 0..N (1 to 7): the --initial-cluster
    /// they would be given by hand. Pods of higher ordinals start without one and wait to be
    /// added, so scaling up changes nothing here. Only with --node-id-from-ordinal.
    #[arg(long, env = "SESSIOND_INITIAL_CLUSTER_SIZE")]
    pub initial_cluster_size: Option<u32>,
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
    node_id_from_ordinal: Option<bool>,
    pod_name: Option<String>,
    peer_domain: Option<String>,
    initial_cluster_size: Option<u32>,
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
        let explicit_id = pick!(self, file, node_id);
        let from_ordinal = self.node_id_from_ordinal || file.node_id_from_ordinal.unwrap_or(false);
        if explicit_id == Some(0) {
            bail!("--node-id must be greater than 0");
        }
        let data_dir = pick!(self, file, data_dir).context("--data-dir is required")?;
        let client_addr = pick!(self, file, client_addr).context("--client-addr is required")?;
        let peer_addr = pick!(self, file, peer_addr).context("--peer-addr is required")?;
        let explicit_cluster = pick!(self, file, initial_cluster);
        let pod = self.pod_identity(&file, from_ordinal, client_addr, peer_addr)?;
        // With an explicit --initial-cluster, pod_identity has refused
        // --initial-cluster-size, so the derived cluster is empty and nothing is lost.
        let (node_id, derived_cluster, derived_client, derived_peer) = match (explicit_id, pod) {
            (Some(id), None) => (id, None, None, None),
            (None, Some(pod)) => (
                pod.node_id,
                Some(pod.initial_cluster),
                Some(pod.advertise_client_addr),
                Some(pod.advertise_peer_addr),
            ),
            (Some(id), Some(pod)) => return Err(OrdinalError::NodeIdGiven(id, pod.node_id).into()),
            (None, None) => {
                bail!("--node-id is required (or --node-id-from-ordinal in a StatefulSet)")
            }
        };
        let initial_cluster = match explicit_cluster {
            Some(s) => parse_initial_cluster(&s)?,
            None => derived_cluster.unwrap_or_default(),
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
                .or(derived_client)
                .unwrap_or_else(|| client_addr.to_string()),
            advertise_peer_addr: pick!(self, file, advertise_peer_addr)
                .or(derived_peer)
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

    /// The identity `--node-id-from-ordinal` derives, or None without it; the StatefulSet
    /// settings are refused without it rather than silently ignored.
    fn pod_identity(
        &self,
        file: &FileConfig,
        from_ordinal: bool,
        client_addr: SocketAddr,
        peer_addr: SocketAddr,
    ) -> Result<Option<PodIdentity>, OrdinalError> {
        let pod_name = pick!(self, file, pod_name);
        let peer_domain = pick!(self, file, peer_domain);
        let initial_cluster_size = pick!(self, file, initial_cluster_size);
        if !from_ordinal {
            let stray = [
                ("--pod-name", pod_name.is_some()),
                ("--peer-domain", peer_domain.is_some()),
                ("--initial-cluster-size", initial_cluster_size.is_some()),
            ];
            return match stray.into_iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(OrdinalError::WithoutOrdinal(flag)),
                None => Ok(None),
            };
        }
        let pod_name = pod_name
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|n| !n.is_empty())
            .ok_or(OrdinalError::NoPodName)?;
        let peer_domain = peer_domain.ok_or(OrdinalError::NoPeerDomain)?;
        if initial_cluster_size.is_some() && pick!(self, file, initial_cluster).is_some() {
            return Err(OrdinalError::InitialClusterGiven);
        }
        pod_identity(&StatefulSetPod {
            pod_name: &pod_name,
            peer_domain: &peer_domain,
            initial_cluster_size,
            client_port: client_addr.port(),
            peer_port: peer_addr.port(),
        })
        .map(Some)
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

/// Most voters `--initial-cluster-size` accepts: more only slow every commit down.
pub const MAX_INITIAL_CLUSTER_SIZE: u32 = 7;

/// What a StatefulSet pod knows of itself, the input of [`pod_identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatefulSetPod<'a> {
    /// `<statefulset>-<ordinal>`.
    pub pod_name: &'a str,
    /// The headless Service's domain: a pod is reached at `<pod>.<domain>`.
    pub peer_domain: &'a str,
    /// Pods `0..size` bootstrap the cluster; None: no initial cluster.
    pub initial_cluster_size: Option<u32>,
    /// The client port every pod listens on (one pod template for all).
    pub client_port: u16,
    /// The peer port every pod listens on.
    pub peer_port: u16,
}

/// A pod's node identity derived from its place in the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// Ordinal + 1: node ids start at 1, ordinals at 0.
    pub node_id: u64,
    /// Pods `0..size` by peer address when this pod is one of them; empty otherwise (a pod
    /// added later waits to be added as a learner).
    pub initial_cluster: BTreeMap<u64, String>,
    /// `<pod>.<domain>:<client port>`: the name stays with the pod across restarts and moves.
    pub advertise_client_addr: String,
    /// `<pod>.<domain>:<peer port>`.
    pub advertise_peer_addr: String,
}

/// Why a StatefulSet pod's identity cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrdinalError {
    #[error(
        "--node-id-from-ordinal: pod name `{0}` does not end in `-<ordinal>` (a StatefulSet \
         pod is named `<statefulset>-<ordinal>`, e.g. `sessiond-0`)"
    )]
    NoOrdinal(String),
    #[error(
        "--node-id-from-ordinal: pod name `{0}` is not a DNS label (1 to 63 characters of \
         a-z 0-9 -, starting and ending with a letter or digit)"
    )]
    BadPodName(String),
    #[error(
        "--node-id-from-ordinal needs the pod's name: set --pod-name (SESSIOND_POD_NAME) or \
         HOSTNAME"
    )]
    NoPodName,
    #[error(
        "--node-id-from-ordinal needs --peer-domain (SESSIOND_PEER_DOMAIN), the headless \
         Service's domain, e.g. `sessiond-peers.default.svc.cluster.local`"
    )]
    NoPeerDomain,
    #[error("--peer-domain `{domain}`: {reason}")]
    BadPeerDomain {
        domain: String,
        reason: &'static str,
    },
    #[error(
        "--initial-cluster-size {0} is out of range: a cluster starts with 1 to {max} voters \
         (3 or 5 make sense)",
        max = MAX_INITIAL_CLUSTER_SIZE
    )]
    SizeOutOfRange(u32),
    #[error(
        "--node-id {0} conflicts with --node-id-from-ordinal (which gives {1} here); give one \
         of them"
    )]
    NodeIdGiven(u64, u64),
    #[error(
        "--initial-cluster conflicts with --initial-cluster-size (which derives it); give one \
         of them"
    )]
    InitialClusterGiven,
    #[error("{0} is used only with --node-id-from-ordinal")]
    WithoutOrdinal(&'static str),
}

/// Split a StatefulSet pod name into its set's name and ordinal: `sessiond-2` → (`sessiond`,
/// 2). The name must be a DNS label, as the pod's hostname is.
pub fn statefulset_ordinal(pod_name: &str) -> Result<(&str, u32), OrdinalError> {
    if !is_dns_label(pod_name) {
        return Err(OrdinalError::BadPodName(pod_name.to_string()));
    }
    let no_ordinal = || OrdinalError::NoOrdinal(pod_name.to_string());
    let (set, digits) = pod_name.rsplit_once('-').ok_or_else(no_ordinal)?;
    // A StatefulSet writes ordinals in decimal without leading zeros; anything else was
    // named by hand and would map two names to one id.
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if set.is_empty() || !canonical {
        return Err(no_ordinal());
    }
    let ordinal = digits.parse::<u32>().map_err(|_| no_ordinal())?;
    Ok((set, ordinal))
}

/// Derive a StatefulSet pod's node id, initial cluster and advertised addresses from its
/// name: ordinal `n` is node `n + 1`, reached at `<set>-<n>.<domain>`. Pure, so that every
/// pod of the set computes the same cluster from the same settings.
pub fn pod_identity(pod: &StatefulSetPod<'_>) -> Result<PodIdentity, OrdinalError> {
    let (set, ordinal) = statefulset_ordinal(pod.pod_name)?;
    check_peer_domain(pod.peer_domain)?;
    let host = |n: u32| -> Result<String, OrdinalError> {
        let name = format!("{set}-{n}.{}", pod.peer_domain);
        if name.len() > 253 {
            return Err(OrdinalError::BadPeerDomain {
                domain: pod.peer_domain.to_string(),
                reason: "the pods' names under it would be longer than 253 characters",
            });
        }
        Ok(name)
    };
    let own = host(ordinal)?;
    let mut initial_cluster = BTreeMap::new();
    if let Some(size) = pod.initial_cluster_size {
        if !(1..=MAX_INITIAL_CLUSTER_SIZE).contains(&size) {
            return Err(OrdinalError::SizeOutOfRange(size));
        }
        if ordinal < size {
            for n in 0..size {
                initial_cluster.insert(u64::from(n) + 1, format!("{}:{}", host(n)?, pod.peer_port));
            }
        }
    }
    Ok(PodIdentity {
        node_id: u64::from(ordinal) + 1,
        initial_cluster,
        advertise_client_addr: format!("{own}:{}", pod.client_port),
        advertise_peer_addr: format!("{own}:{}", pod.peer_port),
    })
}

/// A relative or fully qualified DNS name without the trailing dot: lowercase labels, as
/// Kubernetes names Services and namespaces.
fn check_peer_domain(domain: &str) -> Result<(), OrdinalError> {
    let bad = |reason| OrdinalError::BadPeerDomain {
        domain: domain.to_string(),
        reason,
    };
    if domain.is_empty() {
        return Err(bad("empty"));
    }
    if domain.ends_with('.') {
        return Err(bad("give it without the trailing dot"));
    }
    if domain.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    if !domain.split('.').all(is_dns_label) {
        return Err(bad(
            "not a DNS name: dot-separated labels of a-z 0-9 -, each 1 to 63 characters              starting and ending with a letter or digit (no port, no scheme)",
        ));
    }
    Ok(())
}

/// RFC 1123 label, lowercase (what Kubernetes accepts for pod, Service and namespace names).
fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&b.len()) && b.iter().all(inner) && edge(b.first()) && edge(b.last())
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

    fn pod<'a>(name: &'a str, domain: &'a str, size: Option<u32>) -> StatefulSetPod<'a> {
        StatefulSetPod {
            pod_name: name,
            peer_domain: domain,
            initial_cluster_size: size,
            client_port: 7001,
            peer_port: 7101,
        }
    }

    const PEERS: &str = "sessiond-peers.default.svc.cluster.local";

    #[test]
    fn a_pod_ordinal_gives_node_id_cluster_and_addresses() {
        let id = pod_identity(&pod("sessiond-2", PEERS, Some(3))).expect("valid pod");
        assert_eq!(id.node_id, 3);
        let expected: BTreeMap<u64, String> = (0..3u64)
            .map(|n| (n + 1, format!("sessiond-{n}.{PEERS}:7101")))
            .collect();
        assert_eq!(id.initial_cluster, expected);
        assert_eq!(id.advertise_client_addr, format!("sessiond-2.{PEERS}:7001"));
        assert_eq!(id.advertise_peer_addr, format!("sessiond-2.{PEERS}:7101"));

        let first = pod_identity(&pod("sessiond-0", "peers", Some(5))).expect("valid pod");
        assert_eq!(first.node_id, 1);
        assert_eq!(first.initial_cluster.len(), 5);
        assert_eq!(first.initial_cluster[&5], "sessiond-4.peers:7101");
        assert_eq!(
            statefulset_ordinal("my-set-12").expect("valid"),
            ("my-set", 12)
        );
        assert_eq!(statefulset_ordinal("a-0").expect("valid"), ("a", 0));
    }

    #[test]
    fn pods_past_the_initial_size_join_later_and_no_size_means_no_bootstrap() {
        let late = pod_identity(&pod("sessiond-3", PEERS, Some(3))).expect("valid pod");
        assert_eq!(late.node_id, 4);
        assert!(
            late.initial_cluster.is_empty(),
            "{:?}",
            late.initial_cluster
        );
        assert_eq!(late.advertise_peer_addr, format!("sessiond-3.{PEERS}:7101"));
        let far = pod_identity(&pod("sessiond-40", PEERS, Some(7))).expect("valid pod");
        assert_eq!((far.node_id, far.initial_cluster.len()), (41, 0));
        let none = pod_identity(&pod("sessiond-1", PEERS, None)).expect("valid pod");
        assert_eq!((none.node_id, none.initial_cluster.len()), (2, 0));
    }

    #[test]
    fn a_pod_name_without_a_statefulset_ordinal_is_refused() {
        for name in [
            "sessiond",
            "sessiond-x1",
            "sessiond-1x",
            "sessiond-02",
            "sessiond-4294967296",
        ] {
            assert_eq!(
                statefulset_ordinal(name),
                Err(OrdinalError::NoOrdinal(name.into())),
                "{name}"
            );
        }
        let long = format!("{}-1", "s".repeat(62));
        for name in [
            "",
            "-1",
            "sessiond-",
            "Sessiond-1",
            "sessiond_1",
            "sessiond-0.peers",
            long.as_str(),
        ] {
            assert_eq!(
                statefulset_ordinal(name),
                Err(OrdinalError::BadPodName(name.to_string())),
                "{name}"
            );
        }
        assert!(matches!(
            pod_identity(&pod("sessiond", PEERS, Some(3))),
            Err(OrdinalError::NoOrdinal(_))
        ));
    }

    #[test]
    fn an_initial_size_outside_one_to_seven_is_refused() {
        for size in [0, 8, u32::MAX] {
            assert_eq!(
                pod_identity(&pod("sessiond-0", PEERS, Some(size))),
                Err(OrdinalError::SizeOutOfRange(size))
            );
        }
        for size in [1, 7] {
            let id = pod_identity(&pod("sessiond-0", PEERS, Some(size))).expect("in range");
            assert_eq!(id.initial_cluster.len(), size as usize);
        }
    }

    #[test]
    fn a_bad_peer_domain_is_refused() {
        let too_long = vec!["a".repeat(63); 4].join(".");
        let names_too_long = vec!["a".repeat(60); 4].join(".");
        for domain in [
            "",
            "peers.",
            ".peers",
            "peers..svc",
            "Peers.default",
            "-peers.default",
            "peers-.default",
            "peers_x.default",
            "peers.default:7101",
            "https://peers.default",
            "peers default",
            too_long.as_str(),
            names_too_long.as_str(),
        ] {
            assert!(
                matches!(
                    pod_identity(&pod("sessiond-0", domain, Some(3))),
                    Err(OrdinalError::BadPeerDomain { .. })
                ),
                "{domain:?}"
            );
        }
    }

    fn statefulset_args() -> ServeArgs {
        ServeArgs {
            node_id_from_ordinal: true,
            pod_name: Some("sessiond-1".into()),
            peer_domain: Some(PEERS.into()),
            initial_cluster_size: Some(3),
            data_dir: Some("/data".into()),
            client_addr: Some("0.0.0.0:7001".parse().expect("address")),
            peer_addr: Some("0.0.0.0:7101".parse().expect("address")),
            certs_dir: Some("/certs".into()),
            ..ServeArgs::default()
        }
    }

    fn ordinal_error(a: &ServeArgs) -> OrdinalError {
        let err = a.resolve().expect_err("refused");
        err.downcast_ref::<OrdinalError>()
            .unwrap_or_else(|| panic!("not an OrdinalError: {err:#}"))
            .clone()
    }

    #[test]
    fn resolve_takes_identity_and_certificate_from_the_ordinal() {
        let c = statefulset_args().resolve().expect("resolves");
        assert_eq!(c.node_id, 2);
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.initial_cluster[&1], format!("sessiond-0.{PEERS}:7101"));
        assert_eq!(c.advertise_client_addr, format!("sessiond-1.{PEERS}:7001"));
        assert_eq!(c.advertise_peer_addr, format!("sessiond-1.{PEERS}:7101"));
        assert_eq!(c.client_addr, "0.0.0.0:7001".parse().expect("address"));
        match &c.security {
            Security::Tls(f) => {
                assert_eq!(f.cert, PathBuf::from("/certs/node-2.crt"));
                assert_eq!(f.key, PathBuf::from("/certs/node-2.key"));
            }
            Security::Insecure => panic!("a certs dir was given"),
        }

        let mut a = statefulset_args();
        a.advertise_client_addr = Some("sessiond.example.com:443".into());
        let c = a.resolve().expect("an explicit advertised address wins");
        assert_eq!(c.advertise_client_addr, "sessiond.example.com:443");
        assert_eq!(c.advertise_peer_addr, format!("sessiond-1.{PEERS}:7101"));

        let mut a = statefulset_args();
        a.initial_cluster_size = None;
        a.initial_cluster = Some("1=a:7101,2=b:7101".into());
        let c = a
            .resolve()
            .expect("an explicit initial cluster without a size");
        assert_eq!(c.initial_cluster[&2], "b:7101");
    }

    #[test]
    fn resolve_refuses_conflicting_or_incomplete_statefulset_settings() {
        let mut a = statefulset_args();
        a.node_id = Some(2);
        assert_eq!(ordinal_error(&a), OrdinalError::NodeIdGiven(2, 2));

        let mut a = statefulset_args();
        a.initial_cluster = Some("1=a:7101".into());
        assert_eq!(ordinal_error(&a), OrdinalError::InitialClusterGiven);

        let mut a = statefulset_args();
        a.peer_domain = None;
        assert_eq!(ordinal_error(&a), OrdinalError::NoPeerDomain);

        let mut a = statefulset_args();
        a.pod_name = Some("sessiond".into());
        assert_eq!(
            ordinal_error(&a),
            OrdinalError::NoOrdinal("sessiond".into())
        );

        let mut a = statefulset_args();
        a.node_id_from_ordinal = false;
        a.node_id = Some(2);
        assert_eq!(
            ordinal_error(&a),
            OrdinalError::WithoutOrdinal("--pod-name"),
            "StatefulSet settings without the switch"
        );
        a.pod_name = None;
        a.peer_domain = None;
        assert_eq!(
            ordinal_error(&a),
            OrdinalError::WithoutOrdinal("--initial-cluster-size")
        );
        a.initial_cluster_size = None;
        assert_eq!(a.resolve().expect("plain node").node_id, 2);
    }

    #[test]
    fn statefulset_settings_come_from_flags_and_the_toml_file() {
        let cli = Cli::try_parse_from([
            "sessiond",
            "serve",
            "--node-id-from-ordinal",
            "--pod-name",
            "sessiond-4",
            "--peer-domain",
            "peers",
            "--initial-cluster-size",
            "5",
        ])
        .expect("flags parse");
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert!(args.node_id_from_ordinal);
        assert_eq!(args.pod_name.as_deref(), Some("sessiond-4"));
        assert_eq!(args.peer_domain.as_deref(), Some("peers"));
        assert_eq!(args.initial_cluster_size, Some(5));

        let dir = std::env::temp_dir().join(format!("sessiond-ordinal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "node_id_from_ordinal = true\npod_name = \"sessiond-4\"\npeer_domain = \"peers\"\n\
             initial_cluster_size = 5\ndata_dir = \"/data\"\nclient_addr = \"0.0.0.0:7001\"\n\
             peer_addr = \"0.0.0.0:7101\"\ninsecure = true\n",
        )
        .expect("write config");
        let a = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let c = a.resolve().expect("resolves from the file");
        assert_eq!(c.node_id, 5);
        assert_eq!(c.initial_cluster[&1], "sessiond-0.peers:7101");
        assert_eq!(c.advertise_client_addr, "sessiond-4.peers:7001");
        let _ = std::fs::remove_dir_all(&dir);
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
