//! The gRPC adapter of the sessions core: takes the caller the authentication layer put on
//! the request, calls [`SessionsCore`], and turns answers and [`ApiError`]s into tonic
//! responses and statuses (the `ErrorDetail` travels in the `sessiond-error-bin` trailer).
//! [`NodeIdLayer`] names the answering node in every answer of the client port.

use super::caller::Caller;
use super::error::{self, ApiError, Kind};
use super::route::Served;
use super::sessions::{RevocationStream, SessionsCore};
use crate::raft_types::NodeId;
use futures::StreamExt;
use prost::Message;
use sessiond_proto::v1 as pb;
use sessiond_proto::v1::sessions_server::Sessions;
use sessiond_proto::v1::{ErrorCode, ErrorDetail};
use sessiond_proto::ERROR_DETAIL_KEY;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

fn code_of(kind: Kind) -> Code {
    match kind {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::PermissionDenied => Code::PermissionDenied,
        Kind::Aborted => Code::Aborted,
        Kind::ResourceExhausted => Code::ResourceExhausted,
        Kind::OutOfRange => Code::OutOfRange,
        Kind::Unavailable => Code::Unavailable,
        Kind::DeadlineExceeded => Code::DeadlineExceeded,
        Kind::Cancelled => Code::Cancelled,
        Kind::Internal => Code::Internal,
        Kind::Unknown => Code::Unknown,
    }
}

fn kind_of(code: Code) -> Kind {
    match code {
        Code::InvalidArgument => Kind::InvalidArgument,
        Code::NotFound => Kind::NotFound,
        Code::FailedPrecondition => Kind::FailedPrecondition,
        Code::Unauthenticated => Kind::Unauthenticated,
        Code::PermissionDenied => Kind::PermissionDenied,
        Code::Aborted => Kind::Aborted,
        Code::ResourceExhausted => Kind::ResourceExhausted,
        Code::OutOfRange => Kind::OutOfRange,
        Code::Unavailable => Kind::Unavailable,
        Code::DeadlineExceeded => Kind::DeadlineExceeded,
        Code::Cancelled => Kind::Cancelled,
        Code::Internal | Code::DataLoss => Kind::Internal,
        Code::Ok | Code::Unknown | Code::AlreadyExists | Code::Unimplemented => Kind::Unknown,
    }
}

/// The status a gRPC client sees for `e`.
pub fn to_status(e: ApiError) -> Status {
    let mut s = Status::new(code_of(e.kind), e.detail.message.clone());
    s.metadata_mut().insert_bin(
        ERROR_DETAIL_KEY,
        MetadataValue::from_bytes(&e.detail.encode_to_vec()),
    );
    s
}

/// Decode the detail of a status made by [`to_status`] (a status from elsewhere — a transport
/// failure, an older node — gets a detail built from its message).
pub fn from_status(s: &Status) -> ApiError {
    let detail = s
        .metadata()
        .get_bin(ERROR_DETAIL_KEY)
        .and_then(|v| v.to_bytes().ok())
        .and_then(|b| ErrorDetail::decode(b.as_ref()).ok())
        .unwrap_or_else(|| ErrorDetail {
            code: match s.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                    ErrorCode::Unavailable as i32
                }
                _ => ErrorCode::Unspecified as i32,
            },
            message: s.message().to_owned(),
            ..Default::default()
        });
    ApiError::new(kind_of(s.code()), detail)
}

/// The caller the authentication layer attached; a request without one never reaches a
/// handler in a correctly wired server, and is refused if it does.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| to_status(error::unauthenticated("no authenticated caller")))
}

fn respond<T>(answer: Result<Served<T>, ApiError>) -> Result<Response<T>, Status> {
    let served = answer.map_err(to_status)?;
    let mut r = Response::new(served.value);
    if let Some(leader) = served.leader_hint {
        let md = r.metadata_mut();
        md.insert(
            sessiond_proto::LEADER_ID_KEY,
            MetadataValue::from(leader.id),
        );
        if let Ok(v) = MetadataValue::try_from(leader.client_addr.as_str()) {
            md.insert(sessiond_proto::LEADER_KEY, v);
        }
    }
    Ok(r)
}

/// The tower layer that names this node in every answer of the client port, success or
/// error, whatever the service ([`sessiond_proto::NODE_KEY`]: the node id). Clients match the
/// leader named in hints (`ErrorDetail.leader_id`, [`sessiond_proto::LEADER_ID_KEY`]) with
/// it, so they find the leader among their endpoints whatever names they reach the nodes by.
/// An error answer is trailers-only: the entry travels in the same header block as its status.
#[derive(Clone)]
pub struct NodeIdLayer(http::HeaderValue);

impl NodeIdLayer {
    pub fn new(id: NodeId) -> NodeIdLayer {
        NodeIdLayer(http::HeaderValue::from(id))
    }
}

impl<S> tower::Layer<S> for NodeIdLayer {
    type Service = NodeIdNamed<S>;
    fn layer(&self, inner: S) -> NodeIdNamed<S> {
        NodeIdNamed {
            inner,
            id: self.0.clone(),
        }
    }
}

/// See [`NodeIdLayer`].
#[derive(Clone)]
pub struct NodeIdNamed<S> {
    inner: S,
    id: http::HeaderValue,
}

impl<S, B, RB> tower::Service<http::Request<B>> for NodeIdNamed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        let id = self.id.clone();
        Box::pin(async move {
            let mut r = fut.await?;
            r.headers_mut().insert(sessiond_proto::NODE_KEY, id);
            Ok(r)
        })
    }
}

/// The `Sessions` gRPC service of one node.
#[derive(Clone)]
pub struct SessionsGrpc {
    pub(crate) core: SessionsCore,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Revocation, Status>> + Send>>;

#[tonic::async_trait]
impl Sessions for SessionsGrpc {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.create(&caller, request.into_inner()).await)
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.get(&caller, request.into_inner()).await)
    }

    async fn rotate_token(
        &self,
        request: Request<pb::RotateTokenRequest>,
    ) -> Result<Response<pb::RotateTokenResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.rotate(&caller, request.into_inner()).await)
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::UpdateSessionResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.update(&caller, request.into_inner()).await)
    }

    async fn touch_session(
        &self,
        request: Request<pb::TouchSessionRequest>,
    ) -> Result<Response<pb::TouchSessionResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.touch(&caller, request.into_inner()).await)
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.revoke(&caller, request.into_inner()).await)
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.revoke_user(&caller, request.into_inner()).await)
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        let caller = caller(&request)?;
        respond(self.core.list(&caller, request.into_inner()).await)
    }

    type WatchRevocationsStream = WatchStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = caller(&request)?;
        let feed: RevocationStream = self
            .core
            .watch_revocations(&caller, request.into_inner())
            .map_err(to_status)?;
        Ok(Response::new(Box::pin(
            feed.map(|ev| ev.map_err(to_status)),
        )))
    }
}
