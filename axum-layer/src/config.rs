//! What a [`SessionLayer`](crate::SessionLayer) does: the cookie it writes, how it validates,
//! when it rotates, and what sessions it creates at login.

use sessiond_client::Consistency;
use std::time::Duration;

/// A configuration the layer refuses (at construction, never per request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session layer configuration: {0}")]
pub struct ConfigError(pub String);

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    /// The default: the cookie goes with top-level navigations from other sites (links), not
    /// with their subrequests or form posts, which stops most cross-site request forgery.
    Lax,
    /// Sent with every cross-site request; browsers require `Secure` with it.
    None,
}

/// What the cookie's `Max-Age` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieExpiry {
    /// The default: the session's `absolute_expires_at`, which never moves. The idle deadline
    /// (`expires_at`) slides with activity while the cookie is only rewritten when its token
    /// changes, so a cookie bound to it could expire in the browser while the session lives;
    /// the store still refuses an idle-expired token, and the layer then clears the cookie.
    Absolute,
    /// The session's `expires_at` at the moment the cookie is written. Suits apps whose
    /// rotation schedule is much shorter than the idle timeout (each rotation rewrites the
    /// cookie); otherwise the browser may drop the cookie before the store would.
    Expires,
    /// No `Max-Age`: the cookie ends with the browser session (or at the store's deadline,
    /// whichever comes first).
    BrowserSession,
}

/// The session cookie's name and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    pub name: String,
    pub path: String,
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    pub expiry: CookieExpiry,
}

impl Default for CookieConfig {
    /// `sid`, `Path=/`, no `Domain` (host-only), `Secure`, `HttpOnly`, `SameSite=Lax`,
    /// `Max-Age` to the absolute deadline: a token is a bearer credential, so it stays off
    /// plaintext connections and out of page scripts unless the app says otherwise.
    fn default() -> Self {
        CookieConfig {
            name: "sid".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            expiry: CookieExpiry::Absolute,
        }
    }
}

/// Settings of a [`SessionLayer`](crate::SessionLayer), built by chaining from
/// [`SessionConfig::default`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) cookie: CookieConfig,
    pub(crate) consistency: Consistency,
    pub(crate) touch: bool,
    pub(crate) rotate_after: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) absolute_timeout: Option<Duration>,
}

impl Default for SessionConfig {
    /// STALE validation with touch, a scheduled rotation every 5 minutes of session age, the
    /// default cookie and the cluster's default timeouts for new sessions.
    fn default() -> Self {
        SessionConfig {
            cookie: CookieConfig::default(),
            consistency: Consistency::Stale,
            touch: true,
            rotate_after: Some(Duration::from_secs(5 * 60)),
            idle_timeout: None,
            absolute_timeout: None,
        }
    }
}

impl SessionConfig {
    /// The whole cookie configuration at once.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// The cookie's name (default `sid`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie's `Domain` (default none: only the host that set it gets it back).
    pub fn cookie_domain(mut self, domain: Option<String>) -> Self {
        self.cookie.domain = domain;
        self
    }

    /// `Secure` (default on). Turn off only for plain-HTTP development.
    pub fn secure(mut self, on: bool) -> Self {
        self.cookie.secure = on;
        self
    }

    /// `HttpOnly` (default on): page scripts cannot read the token.
    pub fn http_only(mut self, on: bool) -> Self {
        self.cookie.http_only = on;
        self
    }

    /// `SameSite` (default `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// What `Max-Age` follows (default [`CookieExpiry::Absolute`]).
    pub fn cookie_expiry(mut self, expiry: CookieExpiry) -> Self {
        self.cookie.expiry = expiry;
        self
    }

    /// How each request's token is validated. `Stale` (the default) is served by any fresh
    /// node and may miss a logout acknowledged within the last moments (the store's stale
    /// bound, about an election timeout); writes the request makes are compare-and-set and
    /// by id, so they still cannot touch a revoked session. `Linearizable` sees every
    /// acknowledged logout at the price of a leader round trip per request.
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Shorthand for `consistency(Consistency::Linearizable)`.
    pub fn linearizable(self) -> Self {
        self.consistency(Consistency::Linearizable)
    }

    /// Slide the idle deadline on validation (default on). The store writes a touch at most
    /// once per its touch interval, so this costs a write only now and then.
    pub fn touch(mut self, on: bool) -> Self {
        self.touch = on;
        self
    }

    /// Rotate the token on a schedule: the token of generation `g` is rotated by the first
    /// request that finds the session at least `(g + 1) × every` old (`created_at_ms` and
    /// `generation` of the store's record; `None` turns the schedule off).
    ///
    /// Why these fields: the record carries no rotation time, and the store's own fields
    /// make every app instance and every tab agree on when a rotation is due without state
    /// of their own or anything a browser could alter. An active session thus gets a new
    /// token every `every`. After an idle gap longer than `every` the generation is behind
    /// the schedule and catches up by one generation per rotation; the store keeps the
    /// current token (answering without a new generation) for rotations inside its
    /// `rotation_min_interval` (default 30 s), so catching up costs at most one rotation
    /// call per request for a few intervals. Keep `every` well above that interval.
    pub fn rotate_after(mut self, every: Option<Duration>) -> Self {
        self.rotate_after = every;
        self
    }

    /// Idle timeout of sessions created by [`Session::login`](crate::Session::login)
    /// (default: the cluster's).
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Absolute timeout of sessions created by [`Session::login`](crate::Session::login)
    /// (default: the cluster's).
    pub fn absolute_timeout(mut self, d: Option<Duration>) -> Self {
        self.absolute_timeout = d;
        self
    }

    /// The cookie settings.
    pub fn cookie_config(&self) -> &CookieConfig {
        &self.cookie
    }
}
