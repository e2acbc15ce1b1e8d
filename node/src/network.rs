//! Raft traffic between nodes over gRPC: the client side that openraft drives
//! ([`PeerNetwork`]), and the server side on the peer port ([`PeerService`]).
//!
//! openraft's messages travel as postcard bytes inside a small envelope that names the
//! intended node and the sender, so a message that reaches the wrong node (a reused address,
//! a misconfigured peer list) is refused rather than applied.
//!
//! With TLS (the default), the peer port accepts only connections whose client certificate
//! chains to the cluster CA and names a node id (`node-<id>.sessiond`); the sender id of every
//! envelope, and the leader or candidate named inside a Raft message, must be that id. A node
//! dials a peer expecting the peer's own node name, so another node's certificate cannot
//! answer for it. The same channels carry calls forwarded to the leader's client port.

use crate::clock::Clocks;
use crate::freshness::Freshness;
use crate::raft_types::{NodeId, NodeInfo, Raft, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sessiond_proto::v1::raft_client::RaftClient;
use sessiond_proto::v1::{InfoReply, InfoRequest, RaftReply, RaftRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Channel, Endpoint};

/// Largest message on the peer port: big enough for a full AppendEntries batch or snapshot chunk.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Why a peer call failed before a Raft-level answer came back.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("peer call timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer refused the call: {0}")]
    Refused(String),
    #[error("undecodable peer message: {0}")]
    Codec(String),
}

/// What happens to a message on the link between two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    /// Messages are lost: the sender sees a timeout.
    Down,
    /// Messages arrive after this extra delay.
    Delayed(Duration),
}

/// Decides the fate of messages between nodes. Production nodes have none; the chaos
/// harness's in-process transport installs one to cut or delay links between nodes that share
/// a process (and a loopback interface that cannot be partitioned).
pub trait LinkFilter: Send + Sync + 'static {
    /// The link carrying messages from `from` to `to`, right now.
    fn link(&self, from: NodeId, to: NodeId) -> Link;
}

/// Cached gRPC channels to peers, one per node and address, shared by every replication
/// stream and by forwarding.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    filter: Option<Arc<dyn LinkFilter>>,
    /// This node's client side of peer mutual TLS; `None` with `--insecure`.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Channels {
    /// Channels that dial peers over TLS with `tls` (`None`: plaintext) and pass their
    /// messages through `filter` when one is given (see [`LinkFilter`]).
    pub fn new(
        tls: Option<Arc<rustls::ClientConfig>>,
        filter: Option<Arc<dyn LinkFilter>>,
    ) -> Self {
        Channels {
            inner: Arc::default(),
            filter,
            tls,
        }
    }

    /// The link from `from` to `to`: always up without a filter.
    pub fn link(&self, from: NodeId, to: NodeId) -> Link {
        match &self.filter {
            Some(f) => f.link(from, to),
            None => Link::Up,
        }
    }

    /// The channel to node `id` at `addr` (`host:port`), created lazily and reused. Over
    /// TLS the peer must present the certificate of node `id`.
    pub fn get(&self, id: NodeId, addr: &str) -> Result<Channel, PeerError> {
        let mut map = self
            .inner
            .lock()
            .map_err(|_| PeerError::Refused("channel cache poisoned".into()))?;
        let key = (id, addr.to_string());
        if let Some(ch) = map.get(&key) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| PeerError::Unreachable(addr.to_string(), e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let ch = match &self.tls {
            None => endpoint.connect_lazy(),
            Some(config) => endpoint.connect_with_connector_lazy(tls_connector(
                config.clone(),
                sessiond_security::tls::peer_server_name(id),
            )),
        };
        map.insert(key, ch.clone());
        Ok(ch)
    }
}

/// Dials TCP, then TLS expecting `name` (the peer's node name) and offering h2.
fn tls_connector(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send {
    let connector = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |uri: http::Uri| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// openraft's network factory: hands out a client per target node.
#[derive(Clone)]
pub struct PeerNetwork {
    self_id: NodeId,
    channels: Channels,
    freshness: Freshness,
    clocks: Clocks,
}

impl PeerNetwork {
    /// A factory for node `self_id`, whose AppendEntries carry the age of its last quorum
    /// acknowledgment from `freshness` and its cluster time from `clocks`, and which samples
    /// peers' clocks from their replies into `clocks`.
    pub fn new(self_id: NodeId, channels: Channels, freshness: Freshness, clocks: Clocks) -> Self {
        PeerNetwork {
            self_id,
            channels,
            freshness,
            clocks,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient {
            self_id: self.self_id,
            target,
            node: node.clone(),
            channels: self.channels.clone(),
            freshness: self.freshness.clone(),
            clocks: self.clocks.clone(),
        }
    }
}

/// A connection to one peer, used by openraft for one replication stream or vote.
pub struct PeerClient {
    self_id: NodeId,
    target: NodeId,
    node: NodeInfo,
    channels: Channels,
    freshness: Freshness,
    clocks: Clocks,
}

/// What an AppendEntries envelope carries besides the message.
#[derive(Clone, Copy, Default)]
struct Extra {
    quorum_age_ms: Option<u64>,
    cluster_time_ms: Option<u64>,
    /// Log entries in an AppendEntries, to tell openraft how many to send instead when the
    /// message is too large.
    entries: usize,
}

/// Largest AppendEntries sent, in encoded bytes. openraft gives each AppendEntries one
/// heartbeat interval to complete (and resends the same range after a timeout), so a message
/// must cross the network and be synced by the follower within it: 4 MiB is ~35 ms on a
/// gigabit link. Larger ranges are refused before sending with `PayloadTooLarge`, and
/// openraft sends fewer entries.
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

/// openraft's way of shrinking an AppendEntries that is too large: the number of entries that
/// should fit, in proportion (at most half, at least one).
fn too_large<E: std::error::Error>(
    entries: usize,
    bytes: usize,
) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
    let fit = (entries as u64).saturating_mul(MAX_APPEND_BYTES as u64) / (bytes.max(1) as u64);
    let hint = fit.clamp(1, (entries as u64 / 2).max(1));
    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, PeerError> {
    postcard::to_allocvec(v).map_err(|e| PeerError::Codec(e.to_string()))
}

/// Decode a peer message (an openraft request or reply carried in an envelope's payload).
/// Public so that the fuzz targets (`fuzz/`) feed it what a peer could send.
#[doc(hidden)]
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, PeerError> {
    postcard::from_bytes(b).map_err(|e| PeerError::Codec(e.to_string()))
}

/// Which RPC of the peer service to call.
#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        extra: Extra,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let action = match rpc {
            Rpc::Append => RPCTypes::AppendEntries,
            Rpc::Vote => RPCTypes::Vote,
            Rpc::Snapshot => RPCTypes::InstallSnapshot,
        };
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if matches!(rpc, Rpc::Append) && extra.entries > 1 && payload.len() > MAX_APPEND_BYTES {
            // Never send what cannot arrive in time, or what the peer must refuse: openraft
            // would resend the same range forever.
            return Err(too_large(extra.entries, payload.len()));
        }
        let started = tokio::time::Instant::now();
        let timeout = Timeout {
            action,
            id: self.self_id,
            target: self.target,
            timeout: ttl,
        };
        // A lost request or reply looks to the sender like silence until its deadline.
        if !self.cross(self.self_id, self.target, started, ttl).await {
            return Err(RPCError::Timeout(timeout.clone()));
        }
        let channel = self
            .channels
            .get(self.target, &self.node.peer_addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let mut request = tonic::Request::new(RaftRequest {
            target_node_id: self.target,
            from_node_id: self.self_id,
            payload,
            quorum_age_ms: extra.quorum_age_ms,
            cluster_time_ms: extra.cluster_time_ms,
        });
        request.set_timeout(ttl);
        let fut = async {
            match rpc {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => return Err(RPCError::Timeout(timeout)),
            Ok(Err(status))
                if matches!(rpc, Rpc::Append)
                    && extra.entries > 1
                    && matches!(
                        status.code(),
                        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                    ) =>
            {
                return Err(too_large(extra.entries, MAX_PEER_MESSAGE_BYTES))
            }
            Ok(Err(status)) => return Err(self.status_error(status, action, ttl)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        if !self.cross(self.target, self.self_id, started, ttl).await {
            return Err(RPCError::Timeout(timeout));
        }
        if let (Rpc::Append, Some(wall_ms)) = (rpc, reply.wall_ms) {
            self.clocks
                .peer_sample(self.target, wall_ms, reply.floor_ms, started.into_std());
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Carry a message over the link `from → to`: false when it is lost (after waiting out
    /// what remains of `ttl`, as a real sender would).
    async fn cross(
        &self,
        from: NodeId,
        to: NodeId,
        started: tokio::time::Instant,
        ttl: Duration,
    ) -> bool {
        let deadline = started + ttl;
        match self.channels.link(from, to) {
            Link::Up => true,
            Link::Down => {
                tokio::time::sleep_until(deadline).await;
                false
            }
            Link::Delayed(d) => {
                if tokio::time::Instant::now() + d >= deadline {
                    tokio::time::sleep_until(deadline).await;
                    false
                } else {
                    tokio::time::sleep(d).await;
                    true
                }
            }
        }
    }

    fn status_error<E: std::error::Error>(
        &self,
        status: tonic::Status,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
        match status.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => RPCError::Timeout(Timeout {
                action,
                id: self.self_id,
                target: self.target,
                timeout: ttl,
            }),
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                RPCError::Unreachable(Unreachable::new(&PeerError::Unreachable(
                    self.node.peer_addr.clone(),
                    status.message().to_string(),
                )))
            }
            _ => RPCError::Network(NetworkError::new(&PeerError::Refused(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            )))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        // openraft built `rpc` just before this call, so its commit index is at least what was
        // committed when the quorum acknowledgment below happened. Only a commit index of the
        // leader's own term covers every entry earlier leaders acknowledged.
        let term = rpc.vote.leader_id().get_term();
        let age = match rpc.leader_commit {
            Some(c) if c.leader_id.term == term => {
                self.freshness.quorum_age_ms(term, self.freshness.now_ms())
            }
            _ => None,
        };
        let extra = Extra {
            quorum_age_ms: age,
            cluster_time_ms: self.clocks.voters_median(),
            entries: rpc.entries.len(),
        };
        self.call(Rpc::Append, &rpc, extra, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, Extra::default(), option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, Extra::default(), option.hard_ttl())
            .await
    }
}

/// Ask node `id` behind a peer address who it is (used while bootstrapping).
pub async fn peer_info(
    channels: &Channels,
    id: NodeId,
    addr: &str,
    timeout: Duration,
) -> Result<InfoReply, PeerError> {
    let channel = channels.get(id, addr)?;
    let mut client = RaftClient::new(channel);
    let mut req = tonic::Request::new(InfoRequest {});
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, client.info(req)).await {
        Err(_) => Err(PeerError::Timeout(timeout)),
        Ok(Err(s)) => Err(PeerError::Unreachable(addr.to_string(), s.message().into())),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// The peer-port gRPC service: hands decoded messages to the local Raft.
#[derive(Clone)]
pub struct PeerService {
    node_id: NodeId,
    info: NodeInfo,
    raft: Raft,
    freshness: Freshness,
    clocks: Clocks,
    /// Whether senders are authenticated by their node certificates (false: `--insecure`).
    authenticated: bool,
}

/// The node id named by the verified client certificate of the connection `req` came on.
fn sender_certificate_id<T>(req: &tonic::Request<T>) -> Option<NodeId> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    sessiond_security::identity::node_id_of(certs.first()?)
}

impl PeerService {
    /// Serve Raft traffic for `raft`, which is node `node_id` reachable at `info`; with
    /// `authenticated`, only from senders whose certificate names the envelope's sender.
    pub fn new(
        node_id: NodeId,
        info: NodeInfo,
        raft: Raft,
        freshness: Freshness,
        clocks: Clocks,
        authenticated: bool,
    ) -> Self {
        PeerService {
            node_id,
            info,
            raft,
            freshness,
            clocks,
            authenticated,
        }
    }

    /// Check the envelope against this node and the sender's certificate, and decode it.
    /// `claimed` names the node the message itself speaks for (leader or candidate).
    fn open<T: DeserializeOwned>(
        &self,
        request: tonic::Request<RaftRequest>,
        claimed: impl FnOnce(&T) -> NodeId,
    ) -> Result<T, tonic::Status> {
        let certified = sender_certificate_id(&request);
        let req = request.into_inner();
        if req.target_node_id != self.node_id {
            return Err(tonic::Status::failed_precondition(format!(
                "message for node {} reached node {}",
                req.target_node_id, self.node_id
            )));
        }
        if self.authenticated && certified != Some(req.from_node_id) {
            tracing::warn!(
                claimed_sender = req.from_node_id,
                certificate = ?certified,
                "refused a peer message whose sender is not the certificate's node"
            );
            return Err(tonic::Status::permission_denied(format!(
                "sender {} is not the node named by the connection's certificate",
                req.from_node_id
            )));
        }
        let msg: T =
            decode(&req.payload).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if self.authenticated && claimed(&msg) != req.from_node_id {
            tracing::warn!(
                sender = req.from_node_id,
                "refused a peer message speaking for another node"
            );
            return Err(tonic::Status::permission_denied(
                "a node may only speak for itself",
            ));
        }
        Ok(msg)
    }

    fn reply<T: Serialize>(&self, v: &T) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let payload = encode(v).map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(RaftReply {
            payload,
            wall_ms: Some(self.clocks.wall_ms()),
            floor_ms: self.clocks.floor_ms(),
        }))
    }
}

#[tonic::async_trait]
impl sessiond_proto::v1::raft_server::Raft for PeerService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let arrived_ms = self.freshness.now_ms();
        let quorum_age_ms = request.get_ref().quorum_age_ms;
        let cluster_time_ms = request.get_ref().cluster_time_ms;
        let req: AppendEntriesRequest<TypeConfig> = self
            .open(request, |r: &AppendEntriesRequest<TypeConfig>| {
                r.vote.leader_id().voted_for().unwrap_or(0)
            })?;
        let commit_index = req.leader_commit.map(|c| c.index);
        let result = self.raft.append_entries(req).await;
        let accepted = matches!(
            result,
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
        );
        if let (true, Some(c)) = (accepted, commit_index) {
            self.freshness.heard_commit(c);
        }
        if let (true, Some(commit_index), Some(age)) = (accepted, commit_index, quorum_age_ms) {
            // Accepted from the current leader, which vouches for its commit index as of its
            // last quorum acknowledgment: STALE reads are served once it is applied here.
            self.freshness.told(commit_index, age, arrived_ms);
        }
        if let (true, Some(t)) = (accepted, cluster_time_ms) {
            self.clocks.told_cluster_time(t);
        }
        self.reply(&result)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req: VoteRequest<NodeId> = self.open(request, |r: &VoteRequest<NodeId>| {
            r.vote.leader_id().voted_for().unwrap_or(0)
        })?;
        self.reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req: InstallSnapshotRequest<TypeConfig> = self
            .open(request, |r: &InstallSnapshotRequest<TypeConfig>| {
                r.vote.leader_id().voted_for().unwrap_or(0)
            })?;
        self.reply(&self.raft.install_snapshot(req).await)
    }

    async fn info(
        &self,
        _request: tonic::Request<InfoRequest>,
    ) -> Result<tonic::Response<InfoReply>, tonic::Status> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(tonic::Response::new(InfoReply {
            node_id: self.node_id,
            client_addr: self.info.client_addr.clone(),
            peer_addr: self.info.peer_addr.clone(),
            initialized,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(e: RPCError<NodeId, NodeInfo, RaftError<NodeId>>) -> u64 {
        match e {
            RPCError::PayloadTooLarge(p) => p.entries_hint(),
            other => panic!("not PayloadTooLarge: {other:?}"),
        }
    }

    #[test]
    fn an_oversized_append_asks_for_as_many_entries_as_fit() {
        // 64 entries in 16 MiB: 16 fit in 4 MiB.
        assert_eq!(hint(too_large(64, 16 * 1024 * 1024)), 16);
        // Barely over: at least halve, so the next attempt is smaller.
        assert_eq!(hint(too_large(64, MAX_APPEND_BYTES + 1)), 32);
        // Never zero.
        assert_eq!(hint(too_large(2, usize::MAX)), 1);
    }
}
