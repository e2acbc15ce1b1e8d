//! What a session operation can fail with, and the HTTP answer each failure means.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_client::Error as StoreError;

/// Why a session operation failed. None of the variants, nor their sources, carry a token.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// There is no session: the browser sent no valid token, or the session ended (logout,
    /// expiry, revocation) during the request.
    #[error("not logged in")]
    NotLoggedIn,
    /// A data change met a concurrent write twice (see [`Session::set`](crate::Session::set)
    /// and [`Session::modify`](crate::Session::modify)); the change was not saved.
    #[error("the session was changed concurrently; the change was not saved")]
    Conflict,
    /// The store could not be reached or answered with a failure of its own (timeouts,
    /// no leader, and this app's own credential problems). Not a logout: the same cookie
    /// works once the store is back.
    #[error("session store unavailable")]
    Unavailable(#[source] StoreError),
    /// The store refused the request as malformed or over a limit (a user id or data too
    /// long, the per-user cap under `refuse`).
    #[error("session request refused by the store")]
    Refused(#[source] StoreError),
    /// The session's data is not JSON of the type asked for, or a value does not serialize.
    #[error("session data does not match the type used")]
    Data(#[source] serde_json::Error),
    /// The [`Session`](crate::Session) extractor was used on a route without the
    /// [`SessionLayer`](crate::SessionLayer).
    #[error("no SessionLayer on this route")]
    MissingLayer,
}

/// Which of the store's answers mean what to a web session.
pub(crate) enum Kind {
    /// The token or session is no longer valid: the request is anonymous.
    Gone,
    Conflict,
    Refused,
    Unavailable,
}

pub(crate) fn kind(e: &StoreError) -> Kind {
    match e {
        StoreError::NotFound
        | StoreError::Expired
        | StoreError::Revoked { .. }
        | StoreError::TokenReused => Kind::Gone,
        StoreError::VersionConflict { .. } => Kind::Conflict,
        StoreError::InvalidArgument(_) | StoreError::ResourceExhausted(_) => Kind::Refused,
        StoreError::Unavailable(_)
        | StoreError::Timeout { .. }
        | StoreError::Config(_)
        | StoreError::Unauthenticated(_)
        | StoreError::PermissionDenied(_)
        | StoreError::Tls(_) => Kind::Unavailable,
    }
}

impl SessionError {
    /// The error a store failure becomes outside the conflict path.
    pub(crate) fn from_store(e: StoreError) -> SessionError {
        match kind(&e) {
            Kind::Gone => SessionError::NotLoggedIn,
            Kind::Conflict => SessionError::Conflict,
            Kind::Refused => SessionError::Refused(e),
            Kind::Unavailable => SessionError::Unavailable(e),
        }
    }

    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            SessionError::NotLoggedIn => StatusCode::UNAUTHORIZED,
            SessionError::Conflict => StatusCode::CONFLICT,
            SessionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Refused(StoreError::ResourceExhausted(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            SessionError::Refused(_) => StatusCode::BAD_REQUEST,
            SessionError::Data(_) | SessionError::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The status and a one-line text; the store's own message stays in the logs (it speaks of
/// the deployment, not of anything the user can act on).
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}
