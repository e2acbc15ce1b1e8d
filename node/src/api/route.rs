//! Deciding who serves a request, and forwarding it to the leader.
//!
//! Writes and linearizable reads are served by the leader. A follower forwards them (so plain
//! gRPC tools work against any node) and marks the forwarded call, so that a node that is no
//! longer leader answers `NOT_LEADER` instead of bouncing the call around the cluster.

use super::error;
use crate::network::Channels;
use crate::raft_types::{NodeId, NodeInfo, Raft};
use sessiond_proto::v1::sessions_client::SessionsClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Metadata key set on forwarded calls.
pub const FORWARDED_KEY: &str = "sessiond-forwarded";

/// Name the leader on a forwarded answer (see [`sessiond_proto::LEADER_KEY`]): a client that
/// learns it sends the next leader-only call there instead of paying for the extra hop.
pub fn with_leader_hint<T>(
    answer: Result<tonic::Response<T>, Status>,
    leader_addr: &str,
) -> Result<tonic::Response<T>, Status> {
    answer.map(|mut r| {
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(leader_addr) {
            r.metadata_mut().insert(sessiond_proto::LEADER_KEY, v);
        }
        r
    })
}

/// Largest client message (session data is at most 64 KiB by default; lists can be larger).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Where a leader-only request goes.
pub enum Route {
    /// This node leads: serve it here.
    Local,
    /// Forward to the leader (at this advertised client address) over this channel.
    Forward(Channel, String),
}

/// A leader-side failure that may still be cured by forwarding.
pub enum Failure {
    /// Final answer for the client.
    Status(Status),
    /// This node turned out not to lead; nothing was written.
    NotLeader {
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    },
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Status(s)
    }
}

impl From<crate::batcher::ProposeError> for Failure {
    fn from(e: crate::batcher::ProposeError) -> Self {
        match e {
            crate::batcher::ProposeError::NotLeader { leader_id, leader } => {
                Failure::NotLeader { leader_id, leader }
            }
            other => Failure::Status(error::propose(other)),
        }
    }
}

impl From<crate::reads::ReadError> for Failure {
    fn from(e: crate::reads::ReadError) -> Self {
        match e {
            crate::reads::ReadError::NotLeader { leader_id, leader } => {
                Failure::NotLeader { leader_id, leader }
            }
            other => Failure::Status(error::read(other)),
        }
    }
}

/// Finds the leader and keeps channels to it.
#[derive(Clone)]
pub struct Router {
    id: NodeId,
    raft: Raft,
    channels: Channels,
    timeout: Duration,
}

impl Router {
    /// Routing for node `id`.
    pub fn new(id: NodeId, raft: Raft, channels: Channels, timeout: Duration) -> Self {
        Router {
            id,
            raft,
            channels,
            timeout,
        }
    }

    /// The leader this node currently believes in, with its address.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let info = m
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .unwrap_or_default();
        Some((leader, info))
    }

    /// Route a leader-only request.
    pub fn route(&self, forwarded: bool) -> Result<Route, Status> {
        match self.leader() {
            Some((id, _)) if id == self.id => Ok(Route::Local),
            Some((id, info)) => self.forward_to(forwarded, Some(id), Some(info)),
            None => Err(error::unavailable("no leader is known yet", None)),
        }
    }

    /// Route to a known leader after a local attempt said this node does not lead.
    pub fn forward_to(
        &self,
        forwarded: bool,
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    ) -> Result<Route, Status> {
        match (leader_id, leader) {
            (Some(id), _) if id == self.id => {
                Err(error::unavailable("leadership is changing", None))
            }
            (Some(id), Some(info)) if !forwarded && !info.client_addr.is_empty() => {
                if self.channels.link(self.id, id) == crate::network::Link::Down {
                    return Err(error::unavailable(
                        "the leader is unreachable from this node",
                        Some((id, &info)),
                    ));
                }
                let ch = self
                    .channels
                    .get(&info.client_addr)
                    .map_err(|e| error::unavailable(e.to_string(), Some((id, &info))))?;
                Ok(Route::Forward(ch, info.client_addr))
            }
            (id, info) => Err(error::not_leader(id, info.as_ref())),
        }
    }

    /// Wrap a message for forwarding.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            FORWARDED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        r.set_timeout(self.timeout);
        r
    }
}

/// A `Sessions` client over a forwarding channel.
pub fn sessions_client(ch: Channel) -> SessionsClient<Channel> {
    SessionsClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

/// Whether a request was forwarded by another node.
pub fn is_forwarded<T>(r: &Request<T>) -> bool {
    r.metadata().contains_key(FORWARDED_KEY)
}
