//! One running node: storage, Raft, the peer and client servers, the batcher, the read
//! barrier, the expiry sweeper, and bootstrapping a new cluster.

use crate::api::cluster::ClusterService;
use crate::api::grpc::{NodeIdLayer, SessionsGrpc};
use crate::api::route::{Router, MAX_CLIENT_MESSAGE_BYTES};
use crate::api::sessions::SessionsCore;
use crate::auth::AuthLayer;
use crate::batcher::{BatchLimits, Proposer};
use crate::clock::{Clocks, SystemClock, WallClock};
use crate::config::NodeConfig;
use crate::credentials::NodeCredentials;
use crate::freshness::Freshness;
use crate::metrics::{Metrics, TimingLayer};
use crate::network::{
    peer_info, Channels, LinkFilter, PeerNetwork, PeerService, MAX_PEER_MESSAGE_BYTES,
};
use crate::observe::Observer;
use crate::raft_types::{NodeId, NodeInfo, Raft};
use crate::reads::ReadBarrier;
use crate::store::{Crash, Disk, Store};
use anyhow::Context;
use sessiond_proto::v1::cluster_server::ClusterServer;
use sessiond_proto::v1::raft_server::RaftServer;
use sessiond_proto::v1::sessions_server::SessionsServer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

/// The Raft settings derived from the node configuration.
/// Log entries per AppendEntries.
const MAX_PAYLOAD_ENTRIES: u64 = 64;
const _: () = assert!(
    MAX_PAYLOAD_ENTRIES as usize * crate::batcher::MAX_ENTRY_BYTES
        <= crate::network::MAX_PEER_MESSAGE_BYTES / 2
);
// Whatever the byte budget of one AppendEntries, a single entry always fits it.
const _: () = assert!(crate::batcher::MAX_ENTRY_BYTES <= crate::network::MAX_APPEND_BYTES / 2);

pub fn raft_config(cfg: &NodeConfig) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "sessiond".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.keep_logs,
        // Entries are batches of at most `MAX_ENTRY_BYTES`: one AppendEntries stays within half
        // the peer message cap, and the network asks openraft for fewer entries when they
        // exceed `MAX_APPEND_BYTES` (what can arrive within a heartbeat interval).
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// Test hooks a node can be started with; production nodes use the default (none).
#[derive(Clone, Default)]
pub struct NodeHooks {
    /// Cuts or delays traffic to other nodes (the chaos harness's in-process transport).
    pub link_filter: Option<Arc<dyn LinkFilter>>,
    /// This node's wall clock (default: the system's); the chaos harness sets a wrong one.
    pub clock: Option<Arc<dyn WallClock>>,
    /// Start even if this build has planted bugs ([`crate::PLANTED_BUGS`]).
    pub allow_planted_bugs: bool,
    /// What an injected crash does (builds with the `failpoints` feature): nodes sharing a
    /// process stop writing instead of ending it.
    pub crash: Crash,
}

/// A started node.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    disk: Arc<Disk>,
    credentials: Arc<NodeCredentials>,
    tasks: Vec<JoinHandle<()>>,
}

/// Serve `router` on `listener`: over TLS with `tls`, else plaintext.
async fn serve<L>(
    router: tonic::transport::server::Router<L>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    what: &'static str,
) where
    L: tower::Layer<tonic::service::Routes> + Clone + Send + 'static,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let served = match tls {
        Some(config) => {
            router
                .serve_with_incoming(crate::tls::incoming(listener, config, what))
                .await
        }
        // Nagle's algorithm on accepted sockets would hold small replies back until the
        // peer's delayed ACK (~40 ms); `Server::tcp_nodelay` only covers `serve()`.
        None => {
            router
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(port = what, error = %e, "server stopped");
    }
}

/// A build with planted bugs serves wrong answers on purpose: refuse to start unless allowed,
/// and say so loudly when allowed.
fn refuse_planted_bugs(allowed: bool) -> anyhow::Result<()> {
    let bugs = crate::PLANTED_BUGS;
    if bugs.is_empty() {
        return Ok(());
    }
    let env = crate::ALLOW_PLANTED_BUGS_ENV;
    if !allowed && std::env::var(env).as_deref() != Ok("1") {
        anyhow::bail!(
            "this sessiond build contains deliberately planted bugs ({}) that serve wrong \
             answers; it exists only to test the chaos harness and refuses to start \
             (set {env}=1 to run it in such a test)",
            bugs.join(", ")
        );
    }
    tracing::error!(
        planted_bugs = %bugs.join(", "),
        "THIS BUILD CONTAINS DELIBERATELY PLANTED BUGS: it serves wrong answers on purpose; \
         never use it for anything but testing the chaos harness"
    );
    Ok(())
}

impl Node {
    /// Open storage, start Raft and every server and background task.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<Node> {
        Node::start_with(cfg, NodeHooks::default()).await
    }

    /// [`Node::start`] with test hooks installed.
    pub async fn start_with(cfg: NodeConfig, hooks: NodeHooks) -> anyhow::Result<Node> {
        refuse_planted_bugs(hooks.allow_planted_bugs)?;
        let metrics = Arc::new(Metrics::new().context("registering metrics")?);
        let observer: Arc<dyn Observer> = metrics.clone();
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        let credentials = Arc::new(NodeCredentials::load(&cfg.security, cfg.node_id)?);
        metrics.set_insecure(credentials.insecure());
        if credentials.insecure() {
            tracing::warn!(
                "running with --insecure: no TLS and no authentication; anyone who reaches \
                 the client or peer port can read and change every session and the membership"
            );
        }
        let disk = Disk::new(cfg.node_id, hooks.crash);
        let (log, machine, state) = Store::open_on(&cfg.data_dir, cfg.store, disk.clone())?;
        let channels = Channels::new(credentials.peer_client(), hooks.link_filter);
        let freshness = Freshness::new(cfg.stale_read_bound_ms);
        // What it applied before it stopped was committed: a leadership of this node starts
        // its late commits past it at least.
        freshness.heard_commit(state.applied_index());
        let wall: Arc<dyn WallClock> = hooks.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let clocks = Clocks::new(wall, cfg.max_clock_skew_ms);
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config(&cfg)?),
            PeerNetwork::new(
                cfg.node_id,
                channels.clone(),
                freshness.clone(),
                clocks.clone(),
            ),
            log,
            machine,
        )
        .await
        .context("starting raft")?;
        let me = NodeInfo {
            client_addr: cfg.advertise_client_addr.clone(),
            peer_addr: cfg.advertise_peer_addr.clone(),
        };
        let mut tasks = Vec::new();

        let peer_listener = tokio::net::TcpListener::bind(cfg.peer_addr)
            .await
            .with_context(|| format!("binding peer address {}", cfg.peer_addr))?;
        let peer = RaftServer::new(PeerService::new(
            cfg.node_id,
            me.clone(),
            raft.clone(),
            freshness.clone(),
            clocks.clone(),
            !credentials.insecure(),
        ))
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let peer_tls = credentials.peer_server();
        tasks.push(tokio::spawn(serve(
            tonic::transport::Server::builder().add_service(peer),
            peer_listener,
            peer_tls,
            "peer",
        )));

        tasks.push(crate::freshness::watch_quorum(
            raft.clone(),
            freshness.clone(),
        ));
        tasks.push(crate::clock::watch_membership(raft.clone(), clocks.clone()));
        tasks.push(crate::clock::watch_applied(state.clone(), clocks.clone()));
        let proposer = Proposer::spawn(
            raft.clone(),
            clocks.clone(),
            state.clone(),
            cfg.policy.clone(),
            BatchLimits {
                max_batch: cfg.max_batch,
                max_inflight: cfg.max_inflight_batches,
                max_quorum_age_ms: cfg.election_timeout_min_ms,
            },
            observer.clone(),
        );
        tasks.push(crate::leadership::watch(
            raft.clone(),
            proposer.clone(),
            freshness.clone(),
        ));
        let reads = ReadBarrier::spawn(raft.clone(), observer.clone());
        let router = Router::new(
            cfg.node_id,
            raft.clone(),
            channels.clone(),
            Duration::from_millis(cfg.request_timeout_ms),
        );
        let sessions = SessionsGrpc {
            core: SessionsCore {
                router: router.clone(),
                proposer: proposer.clone(),
                reads,
                state: state.clone(),
                bootstrap_policy: cfg.policy.clone(),
                observer: observer.clone(),
                freshness: freshness.clone(),
                clocks: clocks.clone(),
                seal_key: credentials.seal_key(),
            },
        };
        let cluster = ClusterService {
            id: cfg.node_id,
            raft: raft.clone(),
            router,
            state: state.clone(),
            insecure: credentials.insecure(),
            clocks: clocks.clone(),
            freshness: freshness.clone(),
        };
        // grpc.health.v1 and server reflection, so standard tools work without the .proto files.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<SessionsServer<SessionsGrpc>>().await;
        health.set_serving::<ClusterServer<ClusterService>>().await;
        // Both versions: v1, and v1alpha for the tools that only ask it (grpcio-reflection,
        // Postman, grpcui, older grpcurl).
        let described = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sessiond_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection = described()
            .build_v1()
            .context("building the reflection service")?;
        let reflection_v1alpha = described()
            .build_v1alpha()
            .context("building the v1alpha reflection service")?;
        let client_listener = tokio::net::TcpListener::bind(cfg.client_addr)
            .await
            .with_context(|| format!("binding client address {}", cfg.client_addr))?;
        let timing = TimingLayer(metrics.clone());
        let auth = AuthLayer::new(credentials.authenticator(), metrics.clone());
        let json = crate::api::json::router(sessions.core.clone());
        let grpc = tonic::service::Routes::new(
            SessionsServer::new(sessions)
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
        .add_service(ClusterServer::new(cluster))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha);
        // One listener, one set of layers (node id, timing, authentication) for gRPC and the
        // HTTP/JSON API alike; HTTP/1.1 is accepted for JSON clients.
        let routes = tonic::service::Routes::from(
            grpc.into_axum_router()
                .merge(json)
                .fallback(crate::api::json::fallback),
        );
        let client_router = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(NodeIdLayer::new(cfg.node_id))
            .layer(timing)
            .layer(auth)
            .add_routes(routes);
        tasks.push(tokio::spawn(serve(
            client_router,
            client_listener,
            credentials.client_server(),
            "client",
        )));
        tasks.push(tokio::spawn(reload_on_hangup(credentials.clone())));

        if let Some(addr) = cfg.metrics_addr {
            // The client port's settings (same certificate, reloaded with it; HTTP/1.1 offered
            // as well: scrapers and probes often speak nothing else).
            let http_tls = credentials.client_server().filter(|_| cfg.metrics_tls);
            let http = crate::http::Http {
                id: cfg.node_id,
                raft: raft.clone(),
                state: state.clone(),
                clocks: clocks.clone(),
                metrics: metrics.clone(),
            };
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::http::serve(addr, http, http_tls).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            }));
        }

        tasks.push(tokio::spawn(crate::sweeper::run(
            cfg.node_id,
            raft.clone(),
            state,
            proposer,
            clocks,
            observer,
            Duration::from_millis(cfg.expiry_interval_ms),
        )));

        if !cfg.initial_cluster.is_empty() {
            let (raft, channels, cfg) = (raft.clone(), channels, cfg.clone());
            tasks.push(tokio::spawn(async move {
                bootstrap(raft, channels, cfg, me).await;
            }));
        }

        tracing::info!(
            node_id = cfg.node_id,
            client = %cfg.client_addr,
            peer = %cfg.peer_addr,
            "node started"
        );
        Ok(Node {
            id: cfg.node_id,
            raft,
            disk,
            credentials,
            tasks,
        })
    }

    /// Re-read certificates, keys and the access list (what SIGHUP does). New connections
    /// and calls use them; a file that does not load keeps the old material.
    pub fn reload_credentials(&self) -> anyhow::Result<()> {
        self.credentials.reload()
    }

    /// Resolves when Raft has stopped by itself — a storage failure is fatal to it — with
    /// the reason. Such a node answers nothing useful any more; its process should exit so
    /// that it is restarted on what its disk really holds.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics.borrow().state == openraft::ServerState::Shutdown {
                break;
            }
            if metrics.changed().await.is_err() {
                break;
            }
        }
        self.disk
            .failure()
            .unwrap_or_else(|| "raft stopped (see the error logged before)".to_string())
    }

    /// Stop Raft and every task.
    pub async fn shutdown(self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Reload the node's credentials on every SIGHUP.
async fn reload_on_hangup(credentials: Arc<NodeCredentials>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; credentials reload only on restart");
            return;
        };
        while hangups.recv().await.is_some() {
            match credentials.reload() {
                Ok(()) => tracing::info!("credentials reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "credentials not reloaded; keeping the old ones")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = credentials;
}

/// Initialize a new cluster from `--initial-cluster`: the member with the lowest id waits until
/// it can reach every member, learns their client addresses, and initializes the membership.
/// Does nothing on a node that already belongs to a cluster.
async fn bootstrap(raft: Raft, channels: Channels, cfg: NodeConfig, me: NodeInfo) {
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot tell whether this node is initialized");
            return;
        }
    }
    let Some(first) = cfg.initial_cluster.keys().next().copied() else {
        return;
    };
    if first != cfg.node_id {
        tracing::info!(
            bootstrapper = first,
            "waiting to be initialized by the lowest id"
        );
        return;
    }
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let mut members = BTreeMap::new();
        let mut missing = Vec::new();
        let mut already = false;
        for (&id, addr) in &cfg.initial_cluster {
            if id == cfg.node_id {
                members.insert(id, me.clone());
                continue;
            }
            match peer_info(&channels, id, addr, Duration::from_secs(1)).await {
                Ok(info) if info.node_id != id => {
                    tracing::error!(
                        peer = %addr,
                        expected = id,
                        found = info.node_id,
                        "--initial-cluster names the wrong node id for this address"
                    );
                    missing.push(id);
                }
                Ok(info) => {
                    already |= info.initialized;
                    members.insert(
                        id,
                        NodeInfo {
                            client_addr: info.client_addr,
                            peer_addr: info.peer_addr,
                        },
                    );
                }
                Err(_) => missing.push(id),
            }
        }
        if already {
            tracing::info!("a member is already initialized; not bootstrapping");
            return;
        }
        if missing.is_empty() {
            match raft.initialize(members).await {
                Ok(()) => tracing::info!("cluster initialized"),
                Err(e) => tracing::warn!(error = %e, "initialize refused"),
            }
            return;
        }
        if attempt % 20 == 1 {
            tracing::info!(?missing, "waiting for every initial member to be reachable");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if matches!(raft.is_initialized().await, Ok(true)) {
            return;
        }
    }
}
