//! A web app's session handling with sessiond: log in, validate on every request (rotating
//! when the browser presents a superseded token), and log out.
//!
//! Run a local cluster (`sessiond dev`), export the `SESSIOND_*` variables it prints (the
//! endpoints, the cluster CA and a client certificate; or `SESSIOND_TOKEN_FILE` for a bearer
//! credential), then:
//! `cargo run -p sessiond-client --example axum_sessions`
//! (an argument `host:port,host:port` overrides `SESSIOND_ENDPOINTS`)
//! and try `curl -c jar -b jar -X POST localhost:3000/login?user=alice`, `curl -b jar localhost:3000/me`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sessiond_client::{Client, Consistency, Error, NewSession, SecurityFiles, SessionRef};
use std::collections::HashMap;
use std::time::Duration;

const COOKIE: &str = "sid";

fn token(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

fn set_cookie(token: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{COOKIE}={token}; HttpOnly; Secure; SameSite=Lax; Path=/"),
    )
}

/// Map store answers to HTTP: anything that means "not logged in" is a 401.
fn reject(e: Error) -> Response {
    match e {
        Error::NotFound | Error::Expired | Error::Revoked { .. } | Error::TokenReused => {
            (StatusCode::UNAUTHORIZED, "please log in\n").into_response()
        }
        Error::InvalidArgument(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        // Unauthenticated, PermissionDenied and Tls are this app's own misconfiguration: log
        // them and fix the deployment, the user can do nothing about them.
        other => (StatusCode::SERVICE_UNAVAILABLE, other.to_string()).into_response(),
    }
}

async fn login(State(c): State<Client>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(user) = q.get("user") else {
        return (StatusCode::BAD_REQUEST, "user is required\n").into_response();
    };
    let mut new = NewSession::for_user(user.clone());
    new.idle_timeout = Some(Duration::from_secs(30 * 60));
    match c.create_session(new).await {
        Ok(created) => ([set_cookie(&created.token)], "logged in\n").into_response(),
        Err(e) => reject(e),
    }
}

async fn me(State(c): State<Client>, headers: HeaderMap) -> Response {
    let Some(t) = token(&headers) else {
        return (StatusCode::UNAUTHORIZED, "please log in\n").into_response();
    };
    // Stale reads are the fast path for validation; `touch` slides the idle deadline.
    let valid = match c.get_session(&t, Consistency::Stale, true).await {
        Ok(v) => v,
        Err(e) => return reject(e),
    };
    let body = format!("hello {}\n", valid.session.user_id);
    if valid.superseded {
        // Another tab rotated this token: move this browser to the shared successor.
        match c.rotate_or_current(&t).await {
            Ok(next) => return ([set_cookie(&next)], body).into_response(),
            Err(e) => return reject(e),
        }
    }
    body.into_response()
}

async fn rotate(State(c): State<Client>, headers: HeaderMap) -> Response {
    let Some(t) = token(&headers) else {
        return (StatusCode::UNAUTHORIZED, "please log in\n").into_response();
    };
    match c.rotate_or_current(&t).await {
        Ok(next) => ([set_cookie(&next)], "rotated\n").into_response(),
        Err(e) => reject(e),
    }
}

async fn logout(State(c): State<Client>, headers: HeaderMap) -> Response {
    if let Some(t) = token(&headers) {
        if let Err(e) = c.revoke_session(SessionRef::Token(t), "logout").await {
            return reject(e);
        }
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Max-Age=0; Path=/"))],
        "logged out\n",
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The CA and credential always come from the environment; so do the endpoints, unless
    // given as an argument.
    let client = match std::env::args().nth(1) {
        Some(endpoints) => Client::builder(endpoints.split(',').map(str::to_string))
            .security_files(&SecurityFiles::from_lookup(|k| std::env::var_os(k)))?
            .build()?,
        None => Client::from_env()?,
    };
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/rotate", post(rotate))
        .route("/logout", post(logout))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app).await?;
    Ok(())
}
