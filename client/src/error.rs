//! Errors an application matches on.

use prost::Message;
use sessiond_proto::v1::{ErrorCode, ErrorDetail};

/// Why a call failed. Session outcomes (`NotFound` … `VersionConflict`) are answers from the
/// store; `Unavailable` and `Timeout` mean the outcome is unknown after every retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("session not found")]
    NotFound,
    #[error("session expired")]
    Expired,
    #[error("session revoked ({reason})")]
    Revoked { reason: String },
    #[error("token reuse detected")]
    TokenReused,
    #[error("version conflict: current version is {current}")]
    VersionConflict { current: u64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    #[error("deadline exceeded after {attempts} attempts: {last}")]
    Timeout { attempts: u32, last: String },
    #[error("bad client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether the same request may be sent again (to this or another node).
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// The decoded detail of a status.
pub fn detail(s: &tonic::Status) -> Option<ErrorDetail> {
    let v = s.metadata().get_bin(sessiond_proto::ERROR_DETAIL_KEY)?;
    let b = v.to_bytes().ok()?;
    ErrorDetail::decode(b.as_ref()).ok()
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let d = detail(&s).unwrap_or_default();
        match ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Unspecified) {
            ErrorCode::NotFound => Error::NotFound,
            ErrorCode::Expired => Error::Expired,
            ErrorCode::Revoked => Error::Revoked {
                reason: d.revoked_reason,
            },
            ErrorCode::TokenReused => Error::TokenReused,
            ErrorCode::VersionConflict => Error::VersionConflict {
                current: d.current_version,
            },
            ErrorCode::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
            ErrorCode::ResourceExhausted => Error::ResourceExhausted(s.message().to_string()),
            ErrorCode::NotLeader | ErrorCode::Unavailable => {
                Error::Unavailable(s.message().to_string())
            }
            ErrorCode::Unspecified => match s.code() {
                tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
                _ => Error::Unavailable(format!("{:?}: {}", s.code(), s.message())),
            },
        }
    }
}
