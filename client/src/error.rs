//! Errors an application matches on.

use prost::Message;
use sessiond_proto::v1::{ErrorCode, ErrorDetail};

/// Why a call failed. Session outcomes (`NotFound` … `VersionConflict`) are answers from the
/// store; `Unavailable` and `Timeout` mean the outcome is unknown after every retry.
/// `Unauthenticated`, `PermissionDenied` and `Tls` are configuration problems of this client:
/// they are returned at the first attempt, since no retry can fix them.
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
    /// The node did not accept this client's credential: none was given (a client certificate
    /// or a bearer token), or the one given is unknown, expired or malformed.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The credential is valid but its principal's roles do not allow the call (e.g. an `app`
    /// principal calling the `Cluster` service). Nothing was written.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The TLS connection to a node could not be set up: the server's certificate is not
    /// signed by the configured CA or does not name the address used, the node rejected the
    /// client certificate, or one end speaks TLS and the other plaintext.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
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
        if let Some(why) = tls_failure(&s) {
            return Error::Tls(why);
        }
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
            ErrorCode::Unauthenticated => Error::Unauthenticated(s.message().to_string()),
            ErrorCode::PermissionDenied => Error::PermissionDenied(s.message().to_string()),
            // No detail: a status made by tonic, a proxy, or the node's transport layer.
            ErrorCode::Unspecified => match s.code() {
                tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
                tonic::Code::Unauthenticated => Error::Unauthenticated(s.message().to_string()),
                tonic::Code::PermissionDenied => Error::PermissionDenied(s.message().to_string()),
                // A message over a size limit: asking again cannot help.
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                    Error::ResourceExhausted(s.message().to_string())
                }
                _ => Error::Unavailable(format!("{:?}: {}", s.code(), s.message())),
            },
        }
    }
}

/// Whether a status was made by this client's transport from an I/O failure after the
/// connection was set up (a closed or reset connection), not received from a server and not a
/// refused connection.
pub(crate) fn transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut next: Option<&(dyn std::error::Error + 'static)> = status.source();
    if next.is_none() {
        return false;
    }
    while let Some(e) = next {
        if e.is::<tonic::ConnectError>() {
            return false;
        }
        next = e.source();
    }
    true
}

/// Why a status is a failed TLS handshake, if it is one: a `rustls` error somewhere in the
/// status's source chain. Such a failure repeats on every attempt (a wrong CA, a certificate
/// for another name, a rejected client certificate, a plaintext port), so it must not be
/// retried like a refused or reset connection, which carry only I/O errors.
fn tls_failure(status: &tonic::Status) -> Option<String> {
    use std::error::Error as _;
    let mut next: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(explain(t));
        }
        // `io::Error::source` skips the error it wraps (tokio-rustls puts rustls errors there).
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => {
                // An alert after the handshake (TLS 1.3 servers check the client certificate
                // then) reaches us through h2, which keeps only the kind and the message.
                if io.kind() == std::io::ErrorKind::InvalidData {
                    let msg = io.to_string();
                    if let Some(alert) = msg.strip_prefix(ALERT_PREFIX) {
                        return Some(with_hint(&msg, alert_hint(alert)));
                    }
                }
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => None,
                }
            }
            None => e.source(),
        };
    }
    None
}

/// How rustls words a fatal alert from the peer (`Error::AlertReceived`), followed by the
/// alert's name.
const ALERT_PREFIX: &str = "received fatal alert: ";

const NOT_TLS: &str = "the endpoint does not answer TLS; if the node runs with --insecure, \
                       connect with http:// and no CA, certificate or token";

/// What an alert from the node, by name, says about this client's setup.
fn alert_hint(name: &str) -> &'static str {
    match name {
        "BadCertificate"
        | "UnknownCA"
        | "CertificateRequired"
        | "CertificateExpired"
        | "CertificateRevoked"
        | "CertificateUnknown"
        | "UnsupportedCertificate"
        | "AccessDenied" => {
            "the node rejected this client's certificate (or wanted one and got none)"
        }
        "ProtocolVersion" | "DecodeError" | "UnexpectedMessage" => NOT_TLS,
        _ => "",
    }
}

fn with_hint(msg: &str, hint: &str) -> String {
    if hint.is_empty() {
        msg.to_string()
    } else {
        format!("{msg}: {hint}")
    }
}

/// A rustls error and what to check, for a person reading it.
fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let hint = match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the node's certificate is not signed by the CA this client trusts \
             (give the cluster's ca.crt: ca_cert_file / SESSIOND_CA / --ca-cert)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the node's certificate does not name the address used: connect by a host or IP \
             its certificate was made for (node-<id>.sessiond or a host given to `sessiond cert`)"
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "a certificate is outside its validity period (expired, or the clocks disagree)",
        E::AlertReceived(a) => alert_hint(&format!("{a:?}")),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerMisbehaved(_) => NOT_TLS,
        _ => "",
    };
    with_hint(&e.to_string(), hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_detail(code: tonic::Code, ec: ErrorCode) -> tonic::Status {
        let mut s = tonic::Status::new(code, "who are you");
        let d = ErrorDetail {
            code: ec as i32,
            ..Default::default()
        };
        s.metadata_mut().insert_bin(
            sessiond_proto::ERROR_DETAIL_KEY,
            tonic::metadata::MetadataValue::from_bytes(&d.encode_to_vec()),
        );
        s
    }

    #[test]
    fn auth_codes_are_typed_and_final() {
        let cases = [
            (
                Error::from(with_detail(
                    tonic::Code::Unauthenticated,
                    ErrorCode::Unauthenticated,
                )),
                Error::Unauthenticated("who are you".into()),
            ),
            (
                Error::from(with_detail(
                    tonic::Code::PermissionDenied,
                    ErrorCode::PermissionDenied,
                )),
                Error::PermissionDenied("who are you".into()),
            ),
            // Without a detail (the status of a proxy or of the node's auth layer).
            (
                Error::from(tonic::Status::unauthenticated("no credential")),
                Error::Unauthenticated("no credential".into()),
            ),
            (
                Error::from(tonic::Status::permission_denied("operator only")),
                Error::PermissionDenied("operator only".into()),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
            assert!(!got.retryable(), "{got:?} must not be retried");
        }
        // Transport trouble without a TLS error stays retryable.
        assert!(Error::from(tonic::Status::unavailable("connection refused")).retryable());
    }

    #[test]
    fn a_rustls_error_in_the_source_chain_is_a_tls_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        match Error::from(status) {
            Error::Tls(m) => assert!(m.contains("not signed by the CA"), "{m}"),
            other => panic!("{other:?}"),
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert!(matches!(Error::from(status), Error::Unavailable(_)));
    }
}
