//! How failures reach clients: an [`ApiError`] — a [`Kind`] (which the gRPC adapter maps to a
//! status code and an HTTP adapter to a status) plus an `ErrorDetail` that carries the
//! machine-readable `ErrorCode`, so applications match on a code, never on text. Over gRPC the
//! detail travels encoded in the `sessiond-error-bin` trailer.

use crate::batcher::ProposeError;
use crate::raft_types::{NodeId, NodeInfo};
use crate::reads::ReadError;
use sessiond_proto::v1::{ErrorCode, ErrorDetail};
use sessiond_state::command::SessionError;
use sessiond_state::kv::StorageError;
use sessiond_state::token::FormatError;

/// The class of a failure, independent of the transport that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    Aborted,
    ResourceExhausted,
    OutOfRange,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    Internal,
    Unknown,
}

/// A failure of an API call: what kind, and the detail the client sees.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: Kind,
    pub detail: ErrorDetail,
}

impl ApiError {
    /// An error of `kind` carrying `detail`.
    pub fn new(kind: Kind, detail: ErrorDetail) -> ApiError {
        ApiError { kind, detail }
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.detail.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail.message)
    }
}

impl std::error::Error for ApiError {}

fn status(kind: Kind, detail: ErrorDetail) -> ApiError {
    ApiError::new(kind, detail)
}

fn detail(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: code as i32,
        message: message.into(),
        ..Default::default()
    }
}

/// `INVALID_ARGUMENT` with a message.
pub fn invalid(message: impl Into<String>) -> ApiError {
    status(
        Kind::InvalidArgument,
        detail(ErrorCode::InvalidArgument, message),
    )
}

/// `UNAVAILABLE`, with the leader when known.
pub fn unavailable(message: impl Into<String>, leader: Option<(NodeId, &NodeInfo)>) -> ApiError {
    let mut d = detail(ErrorCode::Unavailable, message);
    if let Some((id, info)) = leader {
        d.leader_id = id;
        d.leader_addr = info.client_addr.clone();
    }
    status(Kind::Unavailable, d)
}

/// `DEADLINE_EXCEEDED`: the caller has given up; nothing was done. Retried like
/// `UNAVAILABLE`.
pub fn deadline_exceeded(message: impl Into<String>) -> ApiError {
    status(
        Kind::DeadlineExceeded,
        detail(ErrorCode::Unavailable, message),
    )
}

/// `NOT_LEADER`, with the leader when known.
pub fn not_leader(leader_id: Option<NodeId>, leader: Option<&NodeInfo>) -> ApiError {
    let mut d = detail(ErrorCode::NotLeader, "this node is not the leader");
    if let Some(id) = leader_id {
        d.leader_id = id;
    }
    if let Some(info) = leader {
        d.leader_addr = info.client_addr.clone();
        d.message = format!(
            "this node is not the leader; leader is node {} at {}",
            d.leader_id, info.client_addr
        );
    }
    status(Kind::Unavailable, d)
}

/// Map a refusal of the state machine.
pub fn session(e: SessionError) -> ApiError {
    let msg = e.to_string();
    match e {
        SessionError::NotFound => status(Kind::NotFound, detail(ErrorCode::NotFound, msg)),
        SessionError::Expired => status(Kind::FailedPrecondition, detail(ErrorCode::Expired, msg)),
        SessionError::Revoked { reason } => {
            let mut d = detail(ErrorCode::Revoked, msg);
            d.revoked_reason = reason;
            status(Kind::PermissionDenied, d)
        }
        SessionError::TokenReused => {
            status(Kind::PermissionDenied, detail(ErrorCode::TokenReused, msg))
        }
        SessionError::VersionConflict { current } => {
            let mut d = detail(ErrorCode::VersionConflict, msg);
            d.current_version = current;
            status(Kind::Aborted, d)
        }
        SessionError::InvalidArgument(_) => status(
            Kind::InvalidArgument,
            detail(ErrorCode::InvalidArgument, msg),
        ),
        SessionError::ResourceExhausted(_) => status(
            Kind::ResourceExhausted,
            detail(ErrorCode::ResourceExhausted, msg),
        ),
    }
}

/// Storage failures are the server's problem, never the client's: logged, and reported as
/// unavailable so a client retries (elsewhere).
pub fn storage(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "storage error while serving a request");
    status(
        Kind::Unavailable,
        detail(ErrorCode::Unavailable, "storage error on this node"),
    )
}

/// Malformed ids and tokens.
pub fn format(e: FormatError) -> ApiError {
    invalid(e.to_string())
}

/// A proposal that did not produce an outcome.
pub fn propose(e: ProposeError) -> ApiError {
    match e {
        ProposeError::NotLeader { leader_id, leader } => not_leader(leader_id, leader.as_ref()),
        ProposeError::Unavailable(m) => unavailable(m, None),
    }
}

/// A read barrier that did not confirm leadership.
pub fn read(e: ReadError) -> ApiError {
    match e {
        ReadError::NotLeader { leader_id, leader } => not_leader(leader_id, leader.as_ref()),
        ReadError::Unavailable(m) => unavailable(m, None),
    }
}

/// The caller could not be authenticated. The message never repeats what was presented.
pub fn unauthenticated(message: impl Into<String>) -> ApiError {
    status(
        Kind::Unauthenticated,
        detail(ErrorCode::Unauthenticated, message),
    )
}

/// The caller is authenticated but its roles do not allow the call.
pub fn permission_denied(message: impl Into<String>) -> ApiError {
    status(
        Kind::PermissionDenied,
        detail(ErrorCode::PermissionDenied, message),
    )
}

/// An answer that should have been impossible; logged where it is made.
pub fn internal(message: impl Into<String>) -> ApiError {
    status(Kind::Internal, detail(ErrorCode::Unspecified, message))
}
