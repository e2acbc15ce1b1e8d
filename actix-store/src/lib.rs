//! An [`actix_session::storage::SessionStore`] backed by sessiond, for actix-web apps that use
//! `actix-session`'s `SessionMiddleware`.
//!
//! The session key in the cookie is a sessiond token. What the store adds over a key-value
//! store is what sessiond guarantees:
//! - **logout is final**: `Session::purge` revokes the session, leaving a tombstone; a save
//!   racing it (another tab, a slow request) is dropped, never turned into a new session with
//!   the old state — a key-value store's upsert would resurrect it;
//! - **retries are exactly once**: the client crate retries each call with one request id, so
//!   a save whose answer was lost is applied once;
//! - **rotated tokens keep working**: a cookie holding a token that was rotated elsewhere
//!   (another tab, the app's own rotation through `sessiond-client`) is moved to the shared
//!   successor on its next save: `update` returns the successor as the new session key;
//! - expiry is the store's: the session's idle timeout is the TTL given at `save`, and
//!   `update_ttl` slides it.
//!
//! Call `Session::renew()` at login: it creates the session anew (session fixation defence)
//! and, when the state holds the user's id under [`StoreConfig::user_key`], under that user,
//! so `sessionctl session list --user`, `RevokeUserSessions` and the per-user cap apply to it.
//! A session saved without a user id belongs to a user id of its own (`anonymous:` + random).
//!
//! ```no_run
//! use actix_session::SessionMiddleware;
//! use actix_web::{cookie::Key, App, HttpServer};
//! use sessiond_actix::SessiondStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SessiondStore::new(sessiond_client::Client::from_env()?);
//! let key = Key::generate(); // load it from a secret in production: it signs the cookie
//! HttpServer::new(move || App::new().wrap(SessionMiddleware::new(store.clone(), key.clone())))
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use sessiond_client::{Client, Consistency, Error, NewSession, SessionRef};
use std::collections::HashMap;

/// How the store reads and writes sessions.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The state key holding the user's id (as actix-session stores values: JSON), read when
    /// a session is saved for the first time. Default `user_id`.
    pub user_key: String,
    /// How `load` reads. `Linearizable` (default) sees every save acknowledged before it:
    /// actix-session writes the whole state back, so a load that missed the previous
    /// request's save would write an older state over it. `Stale` is served by the node the
    /// client reaches, within the cluster's staleness bound (a follower may not have applied
    /// the last save yet): for apps whose requests only read the session.
    pub consistency: Consistency,
    /// The reason recorded when `purge` revokes a session. Default `logout`.
    pub logout_reason: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            user_key: "user_id".into(),
            consistency: Consistency::Linearizable,
            logout_reason: "logout".into(),
        }
    }
}

/// The store; cheap to clone (the client is shared).
#[derive(Clone)]
pub struct SessiondStore {
    client: Client,
    config: StoreConfig,
}

impl SessiondStore {
    /// A store over `client` with the default configuration.
    pub fn new(client: Client) -> SessiondStore {
        SessiondStore::with_config(client, StoreConfig::default())
    }

    /// A store over `client` configured by `config`.
    pub fn with_config(client: Client, config: StoreConfig) -> SessiondStore {
        SessiondStore { client, config }
    }
}

/// Answers meaning "this cookie holds no session (any more)": the request goes on without
/// one. A cookie that is not a token at all (`InvalidArgument`) is treated the same way.
fn logged_out(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound
            | Error::Expired
            | Error::Revoked { .. }
            | Error::TokenReused
            | Error::InvalidArgument(_)
    )
}

/// A client error as the middleware's error source. Client errors never hold a token.
fn other(e: Error) -> anyhow::Error {
    anyhow::Error::new(e).context("sessiond")
}

/// The session's idle timeout for an actix TTL: within what sessiond accepts (1 s here, as
/// a cookie's Max-Age is in seconds, to 400 days).
fn idle_timeout(ttl: &Duration) -> std::time::Duration {
    let ms = ttl.whole_milliseconds().clamp(1_000, 400 * 86_400_000);
    std::time::Duration::from_millis(ms as u64)
}

fn key(token: String) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(token).map_err(|_| anyhow::anyhow!("a token that is no session key"))
}

/// The user a first save belongs to: the state's user id (a JSON string, as actix-session
/// writes values, or the raw text), else a user of its own.
fn user_of(state: &HashMap<String, String>, user_key: &str) -> String {
    let named = state.get(user_key).map(|v| {
        serde_json::from_str::<String>(v)
            .ok()
            .unwrap_or_else(|| v.clone())
    });
    match named {
        Some(u) if !u.is_empty() && u.len() <= 256 => u,
        _ => format!("anonymous:{}", hex_id()),
    }
}

fn hex_id() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SessionStore for SessiondStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        match self
            .client
            .get_session(session_key.as_ref(), self.config.consistency, false)
            .await
        {
            Ok(v) => serde_json::from_slice(&v.session.data)
                .map(Some)
                .map_err(|e| LoadError::Deserialization(anyhow::Error::new(e))),
            Err(e) if logged_out(&e) => Ok(None),
            Err(e) => Err(LoadError::Other(other(e))),
        }
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        let data = serde_json::to_vec(&session_state)
            .map_err(|e| SaveError::Serialization(anyhow::Error::new(e)))?;
        let created = self
            .client
            .create_session(NewSession {
                user_id: user_of(&session_state, &self.config.user_key),
                data,
                idle_timeout: Some(idle_timeout(ttl)),
                ..Default::default()
            })
            .await
            .map_err(|e| SaveError::Other(other(e)))?;
        key(created.token).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        _ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let data = serde_json::to_vec(&session_state)
            .map_err(|e| UpdateError::Serialization(anyhow::Error::new(e)))?;
        // A token rotated elsewhere moves to the successor every holder of it shares. Whether
        // the session is still there is the write's to say (it is linearizable; a STALE read
        // on a lagging node might not know the session yet).
        let token = match self
            .client
            .get_session(session_key.as_ref(), self.config.consistency, false)
            .await
        {
            Ok(v) if v.superseded => {
                match self.client.rotate_or_current(session_key.as_ref()).await {
                    Ok(t) => Some(t),
                    Err(e) if logged_out(&e) => None,
                    Err(e) => return Err(UpdateError::Other(other(e))),
                }
            }
            Ok(_) => None,
            Err(e) if logged_out(&e) => None,
            Err(e) => return Err(UpdateError::Other(other(e))),
        };
        let target = token
            .clone()
            .unwrap_or_else(|| session_key.as_ref().to_owned());
        match self
            .client
            .update_session(SessionRef::Token(target), 0, Some(data), None)
            .await
        {
            Ok(_) => {}
            // Logged out meanwhile: the logout wins; the next request has no session.
            Err(e) if logged_out(&e) => {
                tracing::debug!("save of a session that is logged out dropped");
            }
            Err(e) => return Err(UpdateError::Other(other(e))),
        }
        match token {
            Some(t) => key(t).map_err(UpdateError::Other),
            None => Ok(session_key),
        }
    }

    async fn update_ttl(&self, session_key: &SessionKey, _ttl: &Duration) -> anyhow::Result<()> {
        match self.client.touch_session(session_key.as_ref()).await {
            Ok(_) => Ok(()),
            Err(e) if logged_out(&e) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let target = SessionRef::Token(session_key.as_ref().to_owned());
        match self
            .client
            .revoke_session(target, &self.config.logout_reason)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if logged_out(&e) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_the_state_or_is_one_of_its_own() {
        let mut s = HashMap::new();
        s.insert("user_id".to_string(), "\"alice\"".to_string());
        assert_eq!(user_of(&s, "user_id"), "alice");
        s.insert("user_id".to_string(), "bob".to_string());
        assert_eq!(user_of(&s, "user_id"), "bob");
        s.insert("user_id".to_string(), "\"\"".to_string());
        let a = user_of(&s, "user_id");
        let b = user_of(&HashMap::new(), "user_id");
        assert!(a.starts_with("anonymous:") && b.starts_with("anonymous:"));
        assert_ne!(a, b, "anonymous sessions never share a user (nor its cap)");
    }

    #[test]
    fn ttls_become_idle_timeouts_sessiond_accepts() {
        assert_eq!(
            idle_timeout(&Duration::seconds(30)),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            idle_timeout(&Duration::ZERO),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(
            idle_timeout(&Duration::days(1000)),
            std::time::Duration::from_secs(400 * 86_400)
        );
    }
}
