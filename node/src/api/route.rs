//! Deciding who serves a request, and forwarding it to the leader.
//!
//! Writes and linearizable reads are served by the leader. A follower forwards them (so plain
//! gRPC tools work against any node) over its peer identity, naming the principal it forwards
//! for; the leader trusts that name only from a peer node and never forwards such a call
//! again, so that a node that is no longer leader answers `NOT_LEADER` instead of bouncing the
//! call around the cluster.

use super::caller::{Caller, DEADLINE_KEY};
use super::error::{self, ApiError};
use super::grpc;
use crate::network::Channels;
use crate::raft_types::{NodeId, NodeInfo, Raft};
use futures::future::BoxFuture;
use sessiond_proto::v1 as pb;
use sessiond_proto::v1::sessions_client::SessionsClient;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Metadata key naming the principal a peer node forwards a call for. The authentication
/// layer honours it only on connections authenticated by a node certificate.
pub const FORWARDED_FOR_KEY: &str = "sessiond-forwarded-for";

/// The leader a request is forwarded to.
#[derive(Debug, Clone)]
pub struct LeaderAt {
    pub id: NodeId,
    /// Its advertised client address.
    pub client_addr: String,
}

/// An answer, and the leader when it came from the leader through this node (see
/// [`sessiond_proto::LEADER_KEY`] and [`sessiond_proto::LEADER_ID_KEY`]): a client that learns
/// it sends the next leader-only call there instead of paying for the extra hop.
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    pub leader_hint: Option<LeaderAt>,
}

impl<T> Served<T> {
    /// Served by this node.
    pub fn here(value: T) -> Served<T> {
        Served {
            value,
            leader_hint: None,
        }
    }
}

/// A `Sessions` request that can be forwarded to the leader.
pub trait Forward: Sized + Send + 'static {
    type Answer: Send + 'static;
    /// Call the matching method of the leader's `Sessions` service.
    fn send(
        client: SessionsClient<Channel>,
        req: Request<Self>,
    ) -> BoxFuture<'static, Result<tonic::Response<Self::Answer>, Status>>;
}

macro_rules! forward {
    ($($req:ty => $answer:ty, $method:ident;)*) => {$(
        impl Forward for $req {
            type Answer = $answer;
            fn send(
                mut client: SessionsClient<Channel>,
                req: Request<Self>,
            ) -> BoxFuture<'static, Result<tonic::Response<Self::Answer>, Status>> {
                Box::pin(async move { client.$method(req).await })
            }
        }
    )*};
}

forward! {
    pb::CreateSessionRequest => pb::CreateSessionResponse, create_session;
    pb::GetSessionRequest => pb::GetSessionResponse, get_session;
    pb::TouchSessionRequest => pb::TouchSessionResponse, touch_session;
    pb::RotateTokenRequest => pb::RotateTokenResponse, rotate_token;
    pb::UpdateSessionRequest => pb::UpdateSessionResponse, update_session;
    pb::RevokeSessionRequest => pb::RevokeSessionResponse, revoke_session;
    pb::RevokeUserSessionsRequest => pb::RevokeUserSessionsResponse, revoke_user_sessions;
    pb::ListUserSessionsRequest => pb::ListUserSessionsResponse, list_user_sessions;
}

/// Largest client message, the same on both ends (see [`sessiond_proto::MAX_MESSAGE_BYTES`]).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = sessiond_proto::MAX_MESSAGE_BYTES;

/// Where a leader-only request goes.
pub enum Route {
    /// This node leads: serve it here.
    Local,
    /// Forward to this leader over this channel.
    Forward(Channel, LeaderAt),
}

/// A leader-side failure that may still be cured by forwarding.
pub enum Failure {
    /// Final answer for the client.
    Error(ApiError),
    /// This node turned out not to lead; nothing was written.
    NotLeader {
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    },
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Error(e)
    }
}

impl From<crate::batcher::ProposeError> for Failure {
    fn from(e: crate::batcher::ProposeError) -> Self {
        match e {
            crate::batcher::ProposeError::NotLeader { leader_id, leader } => {
                Failure::NotLeader { leader_id, leader }
            }
            other => Failure::Error(error::propose(other)),
        }
    }
}

impl From<crate::reads::ReadError> for Failure {
    fn from(e: crate::reads::ReadError) -> Self {
        match e {
            crate::reads::ReadError::NotLeader { leader_id, leader } => {
                Failure::NotLeader { leader_id, leader }
            }
            other => Failure::Error(error::read(other)),
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
    /// The local Raft handle.
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

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
    pub fn route(&self, forwarded: bool) -> Result<Route, ApiError> {
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
    ) -> Result<Route, ApiError> {
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
                    .get(id, &info.client_addr)
                    .map_err(|e| error::unavailable(e.to_string(), Some((id, &info))))?;
                Ok(Route::Forward(
                    ch,
                    LeaderAt {
                        id,
                        client_addr: info.client_addr,
                    },
                ))
            }
            (id, info) => Err(error::not_leader(id, info.as_ref())),
        }
    }

    /// Forward `req` to `leader` for `caller`; the answer names the leader. `median_ms` is the
    /// voters' median clock as this node reckons it: the call carries the time by which its
    /// caller gives up ([`DEADLINE_KEY`]), and the leader serves nothing past it (without a
    /// reckoning, no deadline is sent and only the relative timeout applies).
    pub async fn forward<R: Forward>(
        &self,
        ch: Channel,
        leader: LeaderAt,
        caller: &Caller,
        req: R,
        median_ms: Option<u64>,
    ) -> Result<Served<R::Answer>, ApiError> {
        let mut r = self.request(caller, req)?;
        if let Some(now) = median_ms {
            let left = caller.remaining(self.timeout);
            let deadline = now.saturating_add(left.as_millis() as u64);
            r.metadata_mut()
                .insert(DEADLINE_KEY, MetadataValue::from(deadline));
        }
        match R::send(sessions_client(ch), r).await {
            Ok(answer) => Ok(Served {
                value: answer.into_inner(),
                leader_hint: Some(leader),
            }),
            Err(status) => Err(grpc::from_status(&status)),
        }
    }

    /// Wrap a message for forwarding on behalf of `caller`, with what remains of its time
    /// (at most the forwarding timeout). Refused when nothing remains: the caller has gone.
    pub fn request<T>(&self, caller: &Caller, msg: T) -> Result<Request<T>, ApiError> {
        let left = caller.remaining(self.timeout);
        if left.is_zero() {
            return Err(error::deadline_exceeded(
                "the caller's deadline passed before the call could be forwarded",
            ));
        }
        let mut r = Request::new(msg);
        let name = tonic::metadata::MetadataValue::try_from(caller.name())
            .map_err(|_| error::invalid("principal name is not valid metadata"))?;
        r.metadata_mut().insert(FORWARDED_FOR_KEY, name);
        r.set_timeout(left);
        Ok(r)
    }
}

/// A `Sessions` client over a forwarding channel.
pub fn sessions_client(ch: Channel) -> SessionsClient<Channel> {
    SessionsClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}
