//! The tower layer: validate the cookie's token before the handler, write changes and the
//! cookie after it.

use crate::config::{ConfigError, SessionConfig};
use crate::cookie::{self, Presented, Token};
use crate::error::{kind, Kind, SessionError};
use crate::session::{Current, Record, Session, State, RELOGIN_REASON};
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::BoxError;
use sessiond_client::{Client, Consistency, Error as StoreError};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower::{Layer, Service};

/// What every request of one layer shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: SessionConfig,
    /// The cookie's attributes, checked and formatted once.
    pub(crate) attributes: String,
}

/// Sessions for the routes it wraps: each request's cookie is validated against sessiond
/// and the handler gets a [`Session`] (extractor) to read and change.
///
/// Per request, before the handler:
/// - no cookie, or one that is not a token: anonymous (a malformed cookie is cleared);
/// - `GetSession` with the configured consistency (a STALE answer of "unknown" or "expired"
///   is checked again linearizably, since a lagging node does not know a token issued a
///   moment ago): a token that is unknown, expired, revoked or reused makes the request
///   anonymous and the cookie is cleared (kept only after a re-login, see
///   [`RELOGIN_REASON`]); a store that cannot answer makes the answer `503` without running
///   the handler and leaves the cookie alone, since an outage is not a logout;
/// - a `superseded` token (another tab rotated it) moves to the shared successor with
///   `rotate_or_current`, and so does a token due by the rotation schedule
///   ([`SessionConfig::rotate_after`]); if that rotation cannot reach the store the request
///   goes on with the presented token, which is still valid, and the next one tries again.
///
/// After the handler: data changes are saved (compare-and-set, see [`Session::set`]): a
/// conflict that the policy cannot resolve turns the answer into `409`, an unavailable store
/// into `503`, a session that ended meanwhile clears the cookie. Then the cookie is written
/// when the browser's token is not the request's any more (login, rotation) or removed
/// (logout, dead token); a response carrying a token gets `Cache-Control: no-store` unless
/// it has a `Cache-Control` already, so no shared cache keeps it.
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer for the cluster `client` talks to. Fails on a cookie configuration that would
    /// need escaping or that browsers would refuse (checked here once, not per request).
    pub fn new(client: Client, config: SessionConfig) -> Result<SessionLayer, ConfigError> {
        let attributes = cookie::attributes(&config.cookie)?;
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                client,
                config,
                attributes,
            }),
        })
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around the routes.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready is the one to call; the fresh clone stays for the
        // next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let presented = cookie::read(req.headers(), &shared.config.cookie.name);
            let state = match begin(&shared, presented).await {
                Ok(state) => state,
                Err(e) => return Ok(SessionError::Unavailable(e).into_response()),
            };
            let session = Session::new(shared.clone(), state);
            req.extensions_mut().insert(session.clone());
            let mut res = inner.call(req).await?.map(Body::new);
            match session.save().await {
                Ok(()) | Err(SessionError::NotLoggedIn) => {}
                Err(e) => {
                    if let SessionError::Unavailable(cause) = &e {
                        tracing::warn!(session_id = ?session.id(), error = %cause, "saving the session failed");
                    }
                    res = e.into_response();
                }
            }
            if let Some((cookie, carries_token)) = session.set_cookie() {
                let headers = res.headers_mut();
                headers.append(header::SET_COOKIE, cookie);
                if carries_token && !headers.contains_key(header::CACHE_CONTROL) {
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
            }
            Ok(res)
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether the rotation schedule wants a new token: generation `g` is due once the session
/// is `(g + 1) × every` old ([`SessionConfig::rotate_after`]).
pub(crate) fn rotation_due(record: &Record, every: Duration, now_ms: u64) -> bool {
    let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    let due_at = record
        .created_at_ms
        .saturating_add(every.saturating_mul(record.generation.saturating_add(1)));
    now_ms >= due_at
}

/// The session a request starts with; `Err` when the store cannot say (answered `503`).
async fn begin(shared: &Shared, presented: Presented) -> Result<State, StoreError> {
    let token = match presented {
        Presented::None => return Ok(State::new(None, false, false)),
        Presented::Malformed => return Ok(State::new(None, true, false)),
        Presented::Token(t) => t,
    };
    let config = &shared.config;
    let client = &shared.client;
    let mut answer = client
        .get_session(token.expose(), config.consistency, config.touch)
        .await;
    if config.consistency == Consistency::Stale
        && matches!(answer, Err(StoreError::NotFound | StoreError::Expired))
    {
        // A STALE read may lag by a moment: a token another tab just received from a
        // rotation or a login is unknown there, and a touch that slid the idle deadline may
        // not be applied yet. Only the leader may log the browser out for these.
        answer = client
            .get_session(token.expose(), Consistency::Linearizable, config.touch)
            .await;
    }
    let valid = match answer {
        Ok(v) => v,
        Err(e) => {
            return match kind(&e) {
                Kind::Gone | Kind::Refused => {
                    let relogin =
                        matches!(&e, StoreError::Revoked { reason } if reason == RELOGIN_REASON);
                    tracing::debug!(error = %e, "session cookie not valid; anonymous");
                    Ok(State::new(None, true, relogin))
                }
                Kind::Conflict | Kind::Unavailable => {
                    tracing::warn!(error = %e, "validating a session failed");
                    Err(e)
                }
            }
        }
    };
    let mut current = Current {
        token,
        record: valid.session,
        send: false,
    };
    let due = config
        .rotate_after
        .is_some_and(|every| rotation_due(&current.record, every, now_ms()));
    if valid.superseded || due {
        match shared.client.rotate_token(current.token.expose()).await {
            Ok(r) => match Token::parse(&r.token) {
                Some(next) => current.adopt_rotation(&r, next),
                None => {
                    tracing::warn!(session_id = %current.record.id, "rotation answered without a well-formed token")
                }
            },
            Err(e) if matches!(kind(&e), Kind::Gone) => {
                tracing::debug!(session_id = %current.record.id, error = %e, "session ended at rotation; anonymous");
                return Ok(State::new(None, true, false));
            }
            Err(e) => {
                tracing::warn!(session_id = %current.record.id, error = %e, superseded = valid.superseded, "rotation failed; continuing with the presented token");
            }
        }
    }
    Ok(State::new(Some(current), true, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_generations_from_creation() {
        let every = Duration::from_secs(60);
        let rec = |generation, created_at_ms| Record {
            generation,
            created_at_ms,
            ..Record::default()
        };
        assert!(!rotation_due(&rec(0, 1_000), every, 60_999));
        assert!(rotation_due(&rec(0, 1_000), every, 61_000));
        assert!(!rotation_due(&rec(1, 1_000), every, 61_000));
        assert!(rotation_due(&rec(1, 1_000), every, 121_000));
        // A clock behind the store's is never due early.
        assert!(!rotation_due(&rec(0, 1_000), every, 0));
        assert!(!rotation_due(
            &rec(u64::MAX, 0),
            Duration::MAX,
            u64::MAX - 1
        ));
    }
}
