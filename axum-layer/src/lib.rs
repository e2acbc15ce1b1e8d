//! Sessions for axum (and any tower) apps, kept in sessiond.
//!
//! ```no_run
//! use axum::{routing::{get, post}, Router};
//! use sessiond_axum::{Session, SessionConfig, SessionError, SessionLayer};
//!
//! async fn login(session: Session) -> Result<&'static str, SessionError> {
//!     session.login("alice").await?; // after checking a password
//!     Ok("welcome\n")
//! }
//!
//! async fn me(session: Session) -> Result<String, SessionError> {
//!     let user = session.user_id().ok_or(SessionError::NotLoggedIn)?;
//!     let visits = session.get::<u64>()?.unwrap_or(0) + 1;
//!     session.set(&visits)?; // saved (compare-and-set) after the handler returns
//!     Ok(format!("hello {user}, visit {visits}\n"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = sessiond_client::Client::from_env()?;
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/me", get(me))
//!     .layer(SessionLayer::new(client, SessionConfig::default())?);
//! # let _ = app; Ok(()) }
//! ```
//!
//! Why not a generic session store: stores of the "id is the cookie, save upserts the record"
//! kind write a session back after a request even when a logout revoked it meanwhile, and
//! rotate by copying a record under a new id, which logs out every other tab. Here the cookie
//! holds a sessiond token, and every step uses what the store guarantees (docs/semantics.md):
//! validation per request, one successor per token for racing tabs, compare-and-set saves by
//! session id, and revocations that nothing can undo.
//!
//! The choices a deployment should know, each documented where it is made:
//! - validation is STALE by default ([`SessionConfig::consistency`]); "unknown" and "expired"
//!   answers are confirmed by the leader before anyone is logged out;
//! - the rotation schedule counts generations from the session's creation
//!   ([`SessionConfig::rotate_after`]);
//! - saves are compare-and-set by session id; on a conflict a whole value is written once
//!   more and a modification is made once more on the value read back
//!   ([`Session::set`], [`Session::modify`]); a second conflict is a `409`;
//! - the cookie's `Max-Age` follows the absolute deadline by default ([`CookieExpiry`]).
//!
//! The token never leaves the cookie headers: it has no `Display`, the `Debug` of every type
//! here leaves it out, and no log line or error names it (the public session id, which is
//! safe to show, names a session instead).

mod config;
mod cookie;
mod error;
mod layer;
mod session;

pub use config::{ConfigError, CookieConfig, CookieExpiry, SameSite, SessionConfig};
pub use error::SessionError;
pub use layer::{SessionLayer, SessionService};
pub use session::{
    Record, Session, LOGOUT_EVERYWHERE_REASON, LOGOUT_OTHERS_REASON, LOGOUT_REASON, RELOGIN_REASON,
};
pub use sessiond_client::{Client, Consistency};
