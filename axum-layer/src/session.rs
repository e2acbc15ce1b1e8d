//! The per-request session handle: typed data, login, logout, rotation.

use crate::cookie::{self, Token};
use crate::error::{kind, Kind, SessionError};
use crate::layer::Shared;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sessiond_client::{Consistency, Error as StoreError, NewSession, Rotated, SessionRef};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The store's session record (no token in it).
pub use sessiond_client::Session as Record;

/// The revocation reason [`Session::login`] gives the session it replaces. A request that
/// still presents that session's token (another tab's, sent before the login's response
/// arrived) is anonymous but leaves the cookie alone: the browser most likely holds the new
/// session's cookie already, and clearing it would log the user out of the session they
/// just logged into.
pub const RELOGIN_REASON: &str = "relogin";
/// The revocation reason of [`Session::logout`].
pub const LOGOUT_REASON: &str = "logout";
/// The revocation reason of [`Session::logout_everywhere`].
pub const LOGOUT_EVERYWHERE_REASON: &str = "logout_everywhere";
/// The revocation reason of [`Session::logout_other_sessions`].
pub const LOGOUT_OTHERS_REASON: &str = "logout_other_sessions";

/// A change to the data made during this request: the value as it stands, and how to make
/// it again on top of a newer stored value if the compare-and-set loses.
type Edit = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, serde_json::Error> + Send + Sync>;

#[derive(Clone)]
struct Pending {
    /// The data as this request sees it now.
    value: Vec<u8>,
    /// The last whole value set, if any: re-applying starts from it instead of the store's.
    base: Option<Vec<u8>>,
    /// [`Session::modify`] calls since `base` (or since the read), in order.
    edits: Vec<Edit>,
}

impl Pending {
    /// The change made again on top of `stored`.
    fn reapply(&self, stored: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
        let mut v = self.base.clone().unwrap_or_else(|| stored.to_vec());
        for e in &self.edits {
            v = e(&v)?;
        }
        Ok(v)
    }
}

/// The logged-in session of a request.
pub(crate) struct Current {
    pub(crate) token: Token,
    /// The record as read: `data` and `version` are one snapshot, the base of the
    /// compare-and-set; the deadlines are the newest seen.
    pub(crate) record: Record,
    /// The browser does not hold `token` yet.
    pub(crate) send: bool,
}

impl Current {
    /// Take in what a rotation answered. The token always; `version` only when this very
    /// rotation is the one write since the read (a fresh rotation, one version on), since
    /// otherwise the answer's data and version need not be the snapshot `data` was read from
    /// (another request may have written, and a replayed answer may come back without data).
    pub(crate) fn adopt_rotation(&mut self, r: &Rotated, token: Token) {
        if r.session.id != self.record.id {
            return;
        }
        if token != self.token {
            self.token = token;
            self.send = true;
        }
        if r.rotated && !r.replayed && r.session.version == self.record.version + 1 {
            self.record.version = r.session.version;
        }
        self.record.generation = self.record.generation.max(r.session.generation);
        self.record.last_active_at_ms = self
            .record
            .last_active_at_ms
            .max(r.session.last_active_at_ms);
        self.record.expires_at_ms = self.record.expires_at_ms.max(r.session.expires_at_ms);
    }
}

pub(crate) struct State {
    pub(crate) current: Option<Current>,
    /// The request carried a cookie of the session's name (valid or not).
    pub(crate) presented: bool,
    /// Leave a presented, dead cookie in place (see [`RELOGIN_REASON`]).
    pub(crate) keep_cookie: bool,
    pending: Option<Pending>,
    /// Counts changes, so a save knows whether more were made while it ran.
    seq: u64,
}

impl State {
    pub(crate) fn new(current: Option<Current>, presented: bool, keep_cookie: bool) -> State {
        State {
            current,
            presented,
            keep_cookie,
            pending: None,
            seq: 0,
        }
    }

    /// The session is over for this request: no session, no pending change, and a presented
    /// cookie is cleared.
    fn end(&mut self) {
        self.current = None;
        self.pending = None;
        self.keep_cookie = false;
        self.seq += 1;
    }

    fn value(&self) -> Option<&[u8]> {
        match (&self.pending, &self.current) {
            (Some(p), _) => Some(&p.value),
            (None, Some(c)) => Some(&c.record.data),
            (None, None) => None,
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Held for the whole of a save, so that two saves of one handle never race each other.
    saving: tokio::sync::Mutex<()>,
}

/// The session of one request: an axum extractor, cheap to clone.
///
/// Reads are served from what the layer validated at the start of the request; data changes
/// are kept here and written once, when the handler has returned (or by [`Session::save`]),
/// with a compare-and-set against the version read. Login, logout and rotation go to the
/// store at once, so the handler learns whether they happened.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// Shows the public session id and user, never the token.
impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        let mut d = f.debug_struct("Session");
        match &st.current {
            Some(c) => d
                .field("id", &c.record.id)
                .field("user_id", &c.record.user_id)
                .field("generation", &c.record.generation),
            None => d.field("id", &None::<String>),
        };
        d.field("changed", &st.pending.is_some()).finish()
    }
}

/// Available on every route under a [`SessionLayer`](crate::SessionLayer), logged in or not;
/// elsewhere it fails with [`SessionError::MissingLayer`] (500), a wiring mistake.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingLayer)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An answer of the store that should hold a token and does not: the store is not itself.
fn bad_answer() -> SessionError {
    SessionError::Unavailable(StoreError::Unavailable(
        "the store answered without a well-formed token".into(),
    ))
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, state: State) -> Session {
        Session {
            inner: Arc::new(Inner {
                shared,
                state: Mutex::new(state),
                saving: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The state, also after a panic elsewhere left the lock poisoned: every change to it is
    /// a single assignment, so it is never half-done.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the request has a live session.
    pub fn is_logged_in(&self) -> bool {
        self.lock().current.is_some()
    }

    /// The logged-in user.
    pub fn user_id(&self) -> Option<String> {
        self.lock()
            .current
            .as_ref()
            .map(|c| c.record.user_id.clone())
    }

    /// The session's public id (stable across rotations; safe to log or show, unlike the
    /// token).
    pub fn id(&self) -> Option<String> {
        self.lock().current.as_ref().map(|c| c.record.id.clone())
    }

    /// The session record as read at the start of the request (data as stored, without this
    /// request's unsaved changes).
    pub fn record(&self) -> Option<Record> {
        self.lock().current.as_ref().map(|c| c.record.clone())
    }

    /// When the session ends if it stays idle (the store's `expires_at`), as last seen.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.lock()
            .current
            .as_ref()
            .map(|c| UNIX_EPOCH + Duration::from_millis(c.record.expires_at_ms))
    }

    /// The session's data as `T` (JSON in the record's `data`), with this request's changes;
    /// `None` when not logged in or no data was ever set.
    pub fn get<T: DeserializeOwned>(&self) -> Result<Option<T>, SessionError> {
        let st = self.lock();
        match st.value() {
            None | Some([]) => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(SessionError::Data),
        }
    }

    /// Replace the whole data with `value`; saved when the handler returns.
    ///
    /// Conflict policy: a whole value does not depend on what was stored before, so when the
    /// compare-and-set loses to a concurrent write (another request's save, or a rotation or
    /// touch, which also move the version) it is written once more at the version the
    /// conflict reports: the last whole-value write wins. A second conflict in a row is
    /// [`SessionError::Conflict`]. Use [`Session::modify`] for read-modify-write changes.
    pub fn set<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SessionError> {
        let bytes = serde_json::to_vec(value).map_err(SessionError::Data)?;
        self.replace(bytes)
    }

    /// Remove the data (the record's `data` becomes empty); same policy as [`Session::set`].
    pub fn clear_data(&self) -> Result<(), SessionError> {
        self.replace(Vec::new())
    }

    fn replace(&self, bytes: Vec<u8>) -> Result<(), SessionError> {
        let mut st = self.lock();
        if st.current.is_none() {
            return Err(SessionError::NotLoggedIn);
        }
        st.seq += 1;
        st.pending = Some(Pending {
            value: bytes.clone(),
            base: Some(bytes),
            edits: Vec::new(),
        });
        Ok(())
    }

    /// Change the data with `f` (given the current value, `None` if there is none); saved
    /// when the handler returns.
    ///
    /// Conflict policy: when the compare-and-set loses to a concurrent write, the session is
    /// read again (linearizable) and `f` runs once more on the value read, so concurrent
    /// modifications are never lost; a second conflict in a row is
    /// [`SessionError::Conflict`] and nothing is saved. `f` therefore runs once now and at
    /// most once more, and should do nothing but compute the new value.
    pub fn modify<T, F>(&self, f: F) -> Result<(), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let edit: Edit = Arc::new(move |bytes: &[u8]| {
            let old = if bytes.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(bytes)?)
            };
            serde_json::to_vec(&f(old))
        });
        // `f` runs without the lock held: it may take its time, or use this handle.
        loop {
            let (now, seq) = {
                let st = self.lock();
                let now = st.value().map(<[u8]>::to_vec);
                (now.ok_or(SessionError::NotLoggedIn)?, st.seq)
            };
            let value = edit(&now).map_err(SessionError::Data)?;
            let mut st = self.lock();
            if st.seq != seq {
                // Changed meanwhile (by another task holding this handle): compute again.
                continue;
            }
            if st.current.is_none() {
                return Err(SessionError::NotLoggedIn);
            }
            st.seq += 1;
            let mut p = st.pending.take().unwrap_or(Pending {
                value: Vec::new(),
                base: None,
                edits: Vec::new(),
            });
            p.value = value;
            p.edits.push(edit);
            st.pending = Some(p);
            return Ok(());
        }
    }

    /// Whether there are changes not saved yet.
    pub fn is_changed(&self) -> bool {
        self.lock().pending.is_some()
    }

    /// Write this request's data changes now (the layer does it after the handler
    /// otherwise), by session id and compare-and-set with the version read; nothing is
    /// written when the data did not change. A change that fails to save is dropped, not
    /// tried again after the handler: the error was the caller's to act on. On [`SessionError::NotLoggedIn`] the session
    /// ended meanwhile (a logout won the race): the change is dropped and the cookie cleared,
    /// which is what keeps a logout final.
    pub async fn save(&self) -> Result<(), SessionError> {
        let _saving = self.inner.saving.lock().await;
        let (id, user, version, pending, seq) = {
            let mut st = self.lock();
            let Some(p) = st.pending.clone() else {
                return Ok(());
            };
            let Some(c) = &st.current else {
                st.pending = None;
                return Err(SessionError::NotLoggedIn);
            };
            if p.value == c.record.data {
                st.pending = None;
                return Ok(());
            }
            let (id, user, version) = (
                c.record.id.clone(),
                c.record.user_id.clone(),
                c.record.version,
            );
            (id, user, version, p, st.seq)
        };
        let client = &self.inner.shared.client;
        let first = client
            .update_session(
                SessionRef::Id(id.clone()),
                version,
                Some(pending.value.clone()),
                None,
            )
            .await;
        let outcome = match first {
            Ok(r) => Ok(r),
            Err(StoreError::VersionConflict { current }) => {
                tracing::debug!(session_id = %id, version, current, "save conflicted; applying the change again");
                self.save_again(&id, &user, current, &pending).await
            }
            Err(e) => Err(SessionError::from_store(e)),
        };
        let mut st = self.lock();
        match outcome {
            Ok(record) => {
                if let Some(c) = st.current.as_mut().filter(|c| c.record.id == record.id) {
                    c.record.data = record.data;
                    c.record.version = record.version;
                    c.record.expires_at_ms = c.record.expires_at_ms.max(record.expires_at_ms);
                }
                if st.seq == seq {
                    st.pending = None;
                } else if let Some(p) = st.pending.as_mut() {
                    // Changed while the save ran: what remains is saved as a whole value.
                    p.base = Some(p.value.clone());
                    p.edits.clear();
                }
                Ok(())
            }
            Err(SessionError::NotLoggedIn) => {
                tracing::debug!(session_id = %id, "save found the session ended; change dropped");
                st.end();
                Err(SessionError::NotLoggedIn)
            }
            Err(e) => {
                // Reported to the caller; the layer does not try it again after the handler.
                st.pending = None;
                Err(e)
            }
        }
    }

    /// The second and last attempt of a save that conflicted (the policy of
    /// [`Session::set`] and [`Session::modify`]).
    async fn save_again(
        &self,
        id: &str,
        user: &str,
        current: u64,
        pending: &Pending,
    ) -> Result<Record, SessionError> {
        let client = &self.inner.shared.client;
        let (version, value) = if pending.edits.is_empty() {
            (current, pending.base.clone().unwrap_or_default())
        } else {
            let fresh = self.reread(id, user).await?;
            let value = pending.reapply(&fresh.data).map_err(SessionError::Data)?;
            if value == fresh.data {
                return Ok(fresh);
            }
            (fresh.version, value)
        };
        match client
            .update_session(SessionRef::Id(id.to_string()), version, Some(value), None)
            .await
        {
            Ok(r) => Ok(r),
            Err(StoreError::VersionConflict { .. }) => {
                tracing::info!(session_id = %id, "save conflicted twice; change not saved");
                Err(SessionError::Conflict)
            }
            Err(e) => Err(SessionError::from_store(e)),
        }
    }

    /// The session as it is now (linearizable), found by id among its user's sessions.
    /// Not by token: the request's token may have been rotated twice by other tabs since it
    /// was validated, and presenting it would count as token reuse.
    async fn reread(&self, id: &str, user: &str) -> Result<Record, SessionError> {
        let client = &self.inner.shared.client;
        let mut page_token = String::new();
        loop {
            let page = client
                .list_user_sessions_page(user, Consistency::Linearizable, 0, &page_token)
                .await
                .map_err(SessionError::from_store)?;
            if let Some(s) = page.sessions.into_iter().find(|s| s.id == id) {
                return Ok(s);
            }
            if page.next_page_token.is_empty() || page.next_page_token == page_token {
                return Err(SessionError::NotLoggedIn);
            }
            page_token = page.next_page_token;
        }
    }

    /// Log `user_id` in: a new session (new id and token, so a token planted in the browser
    /// before login is worth nothing after it — session fixation defence) and its cookie.
    /// A session the request had is revoked first (reason [`RELOGIN_REASON`]); its data
    /// (with this request's changes) moves to the new session when it belonged to the same
    /// user, and is dropped otherwise. Nothing is created if the revocation fails.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let (old, data) = {
            let st = self.lock();
            match &st.current {
                Some(c) if c.record.user_id == user_id => (
                    Some(c.record.id.clone()),
                    st.value().map(<[u8]>::to_vec).unwrap_or_default(),
                ),
                Some(c) => (Some(c.record.id.clone()), Vec::new()),
                None => (None, Vec::new()),
            }
        };
        let client = &self.inner.shared.client;
        if let Some(id) = old {
            match client
                .revoke_session(SessionRef::Id(id), RELOGIN_REASON)
                .await
            {
                Ok(_) => {}
                Err(e) if matches!(kind(&e), Kind::Gone) => {}
                Err(e) => return Err(SessionError::from_store(e)),
            }
            self.lock().end();
        }
        let config = &self.inner.shared.config;
        let mut new = NewSession::for_user(user_id);
        new.data = data;
        new.idle_timeout = config.idle_timeout;
        new.absolute_timeout = config.absolute_timeout;
        let created = client
            .create_session(new)
            .await
            .map_err(SessionError::from_store)?;
        let token = Token::parse(&created.token).ok_or_else(bad_answer)?;
        tracing::debug!(session_id = %created.session.id, "logged in");
        let mut st = self.lock();
        st.current = Some(Current {
            token,
            record: created.session,
            send: true,
        });
        st.pending = None;
        st.keep_cookie = false;
        st.seq += 1;
        Ok(())
    }

    /// Log out: revoke the session (final: nothing can write to it or bring it back) and
    /// clear the cookie. A session that had already ended counts as logged out. On an error
    /// the session is left as it was, cookie included.
    pub async fn logout(&self) -> Result<(), SessionError> {
        let id = self.id();
        if let Some(id) = id {
            match self
                .inner
                .shared
                .client
                .revoke_session(SessionRef::Id(id.clone()), LOGOUT_REASON)
                .await
            {
                Ok(_) => tracing::debug!(session_id = %id, "logged out"),
                Err(e) if matches!(kind(&e), Kind::Gone) => {}
                Err(e) => return Err(SessionError::from_store(e)),
            }
        }
        self.lock().end();
        Ok(())
    }

    /// Log the user out of every session they have (all browsers and devices), this one
    /// included, and clear the cookie. Returns how many sessions were revoked.
    pub async fn logout_everywhere(&self) -> Result<usize, SessionError> {
        let user = self.user_id().ok_or(SessionError::NotLoggedIn)?;
        let revoked = self
            .inner
            .shared
            .client
            .revoke_user_sessions(&user, None, LOGOUT_EVERYWHERE_REASON)
            .await
            .map_err(SessionError::from_store)?;
        self.lock().end();
        Ok(revoked.len())
    }

    /// Log the user out of every other session (after a password change, say), keeping this
    /// one. Returns how many sessions were revoked.
    pub async fn logout_other_sessions(&self) -> Result<usize, SessionError> {
        let (user, id) = {
            let st = self.lock();
            let c = st.current.as_ref().ok_or(SessionError::NotLoggedIn)?;
            (c.record.user_id.clone(), c.record.id.clone())
        };
        let revoked = self
            .inner
            .shared
            .client
            .revoke_user_sessions(&user, Some(&id), LOGOUT_OTHERS_REASON)
            .await
            .map_err(SessionError::from_store)?;
        Ok(revoked.len())
    }

    /// Rotate the token now (at a privilege change, say): the browser gets the successor
    /// with this response, and other tabs move to the same successor on their next request.
    /// Returns whether the token changed: inside the store's `rotation_min_interval` of the
    /// last rotation the store keeps the current token, which is then at most that old.
    /// [`Session::login`] is the stronger reset (a new session).
    pub async fn rotate(&self) -> Result<bool, SessionError> {
        let token = {
            let st = self.lock();
            st.current
                .as_ref()
                .map(|c| c.token.clone())
                .ok_or(SessionError::NotLoggedIn)?
        };
        match self.inner.shared.client.rotate_token(token.expose()).await {
            Ok(r) => {
                let next = Token::parse(&r.token).ok_or_else(bad_answer)?;
                let changed = next != token;
                if let Some(c) = self.lock().current.as_mut() {
                    c.adopt_rotation(&r, next);
                }
                Ok(changed)
            }
            Err(e) if matches!(kind(&e), Kind::Gone) => {
                self.lock().end();
                Err(SessionError::NotLoggedIn)
            }
            Err(e) => Err(SessionError::from_store(e)),
        }
    }

    /// The `Set-Cookie` the response needs: the token when the browser does not hold it
    /// yet (and `true`: it carries a token), a removal when the request presented a cookie
    /// and has no session now.
    pub(crate) fn set_cookie(&self) -> Option<(HeaderValue, bool)> {
        let shared = &self.inner.shared;
        let c = &shared.config.cookie;
        let st = self.lock();
        match &st.current {
            Some(cur) if cur.send => {
                let until = match c.expiry {
                    crate::CookieExpiry::Absolute => Some(cur.record.absolute_expires_at_ms),
                    crate::CookieExpiry::Expires => Some(cur.record.expires_at_ms),
                    crate::CookieExpiry::BrowserSession => None,
                };
                let max_age = until.map(|t| t.saturating_sub(now_ms()).div_ceil(1000).max(1));
                cookie::set(&c.name, &shared.attributes, &cur.token, max_age).map(|h| (h, true))
            }
            Some(_) => None,
            None if st.presented && !st.keep_cookie => {
                cookie::clear(&c.name, &shared.attributes).map(|h| (h, false))
            }
            None => None,
        }
    }
}
