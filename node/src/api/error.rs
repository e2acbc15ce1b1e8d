//! How failures reach clients: a gRPC status plus an encoded `ErrorDetail` in the
//! `sessiond-error-bin` trailer, so applications match on an `ErrorCode`, never on text.

use crate::batcher::ProposeError;
use crate::raft_types::{NodeId, NodeInfo};
use crate::reads::ReadError;
use prost::Message;
use sessiond_proto::v1::{ErrorCode, ErrorDetail};
use sessiond_proto::ERROR_DETAIL_KEY;
use sessiond_state::command::SessionError;
use sessiond_state::kv::StorageError;
use sessiond_state::token::FormatError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Build a status carrying `detail`.
pub fn status(code: Code, detail: ErrorDetail) -> Status {
    let mut s = Status::new(code, detail.message.clone());
    s.metadata_mut().insert_bin(
        ERROR_DETAIL_KEY,
        MetadataValue::from_bytes(&detail.encode_to_vec()),
    );
    s
}

fn detail(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: code as i32,
        message: message.into(),
        ..Default::default()
    }
}

/// `INVALID_ARGUMENT` with a message.
pub fn invalid(message: impl Into<String>) -> Status {
    status(
        Code::InvalidArgument,
        detail(ErrorCode::InvalidArgument, message),
    )
}

/// `UNAVAILABLE`, with the leader when known.
pub fn unavailable(message: impl Into<String>, leader: Option<(NodeId, &NodeInfo)>) -> Status {
    let mut d = detail(ErrorCode::Unavailable, message);
    if let Some((id, info)) = leader {
        d.leader_id = id;
        d.leader_addr = info.client_addr.clone();
    }
    status(Code::Unavailable, d)
}

/// `NOT_LEADER`, with the leader when known.
pub fn not_leader(leader_id: Option<NodeId>, leader: Option<&NodeInfo>) -> Status {
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
    status(Code::Unavailable, d)
}

/// Map a refusal of the state machine.
pub fn session(e: SessionError) -> Status {
    let msg = e.to_string();
    match e {
        SessionError::NotFound => status(Code::NotFound, detail(ErrorCode::NotFound, msg)),
        SessionError::Expired => status(Code::FailedPrecondition, detail(ErrorCode::Expired, msg)),
        SessionError::Revoked { reason } => {
            let mut d = detail(ErrorCode::Revoked, msg);
            d.revoked_reason = reason;
            status(Code::PermissionDenied, d)
        }
        SessionError::TokenReused => {
            status(Code::PermissionDenied, detail(ErrorCode::TokenReused, msg))
        }
        SessionError::VersionConflict { current } => {
            let mut d = detail(ErrorCode::VersionConflict, msg);
            d.current_version = current;
            status(Code::Aborted, d)
        }
        SessionError::InvalidArgument(_) => status(
            Code::InvalidArgument,
            detail(ErrorCode::InvalidArgument, msg),
        ),
        SessionError::ResourceExhausted(_) => status(
            Code::ResourceExhausted,
            detail(ErrorCode::ResourceExhausted, msg),
        ),
    }
}

/// Storage failures are the server's problem, never the client's: logged, and reported as
/// unavailable so a client retries (elsewhere).
pub fn storage(e: StorageError) -> Status {
    tracing::error!(error = %e, "storage error while serving a request");
    status(
        Code::Unavailable,
        detail(ErrorCode::Unavailable, "storage error on this node"),
    )
}

/// Malformed ids and tokens.
pub fn format(e: FormatError) -> Status {
    invalid(e.to_string())
}

/// A proposal that did not produce an outcome.
pub fn propose(e: ProposeError) -> Status {
    match e {
        ProposeError::NotLeader { leader_id, leader } => not_leader(leader_id, leader.as_ref()),
        ProposeError::Unavailable(m) => unavailable(m, None),
    }
}

/// A read barrier that did not confirm leadership.
pub fn read(e: ReadError) -> Status {
    match e {
        ReadError::NotLeader { leader_id, leader } => not_leader(leader_id, leader.as_ref()),
        ReadError::Unavailable(m) => unavailable(m, None),
    }
}

/// Decode the detail of a status produced by [`status`] (used when forwarding and in tests).
pub fn detail_of(s: &Status) -> Option<ErrorDetail> {
    let v = s.metadata().get_bin(ERROR_DETAIL_KEY)?;
    let bytes = v.to_bytes().ok()?;
    ErrorDetail::decode(bytes.as_ref()).ok()
}
