//! A real cluster, an axum app with the session layer on a loopback port, and browsers: HTTP
//! clients whose tabs share one cookie jar, where a test decides when each `Set-Cookie`
//! reaches the jar (to lose or reorder responses).
#![allow(dead_code)]

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use sessiond_axum::{Client, Session, SessionConfig, SessionError, SessionLayer};
use sessiond_client::SessionRef;
use sessiond_tests::TestCluster;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const COOKIE: &str = "sid";

/// The session data of the test app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub items: u64,
}

pub struct App {
    pub cluster: TestCluster,
    /// A client of the same cluster, for looking at the store directly.
    pub store: Client,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The cluster flags of a test: short grace window and rotation interval, so schedules and
/// windows pass within a test.
pub const FAST_ROTATION: &[&str] = &[
    "--grace-window-ms",
    "1000",
    "--rotation-min-interval-ms",
    "1000",
];

/// The layer's configuration the tests start from: plain HTTP on loopback, so no `Secure`.
pub fn config() -> SessionConfig {
    SessionConfig::default().secure(false)
}

/// A client of `cluster` with a short deadline, so an outage shows within a test.
pub fn client(cluster: &TestCluster) -> Client {
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.clone())
        .collect();
    cluster
        .client_builder(endpoints)
        .deadline(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(1))
        .build()
        .expect("client")
}

/// Start a 3-node cluster with `flags` and the test app on a loopback port.
pub async fn start(flags: &[&str], config: SessionConfig) -> App {
    let cluster = TestCluster::builder(3).flags(flags).start().await;
    let store = client(&cluster);
    let layer = SessionLayer::new(client(&cluster), config).expect("layer config");
    let app = router(store.clone()).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    App {
        cluster,
        store,
        addr,
        server,
    }
}

type Q = Query<HashMap<String, String>>;

fn num(q: &Q, k: &str) -> u64 {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn pause(q: &Q) {
    let ms = num(q, "delay_ms");
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn router(store: Client) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/whoami", get(whoami))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/rotate", post(rotate))
        .route("/cart", get(cart))
        .route("/cart/set", post(cart_set))
        .route("/cart/add", post(cart_add))
        .route("/cart/add-raced", post(cart_add_raced))
        .route("/cart/set-raced", post(cart_set_raced))
        .route("/debug", get(debug))
        .with_state(store)
}

async fn login(session: Session, q: Q) -> Result<&'static str, SessionError> {
    let user = q.get("user").cloned().unwrap_or_else(|| "alice".into());
    session.login(user).await?;
    Ok("logged in")
}

async fn whoami(session: Session, q: Q) -> Response {
    pause(&q).await;
    match session.user_id() {
        Some(u) => u.into_response(),
        None => (StatusCode::UNAUTHORIZED, "anonymous").into_response(),
    }
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.logout().await?;
    Ok("logged out")
}

async fn logout_everywhere(session: Session) -> Result<String, SessionError> {
    Ok(session.logout_everywhere().await?.to_string())
}

async fn rotate(session: Session) -> Result<String, SessionError> {
    Ok(format!("rotated:{}", session.rotate().await?))
}

async fn cart(session: Session) -> Result<String, SessionError> {
    if !session.is_logged_in() {
        return Err(SessionError::NotLoggedIn);
    }
    Ok(session
        .get::<Cart>()?
        .map(|c| c.items.to_string())
        .unwrap_or_else(|| "none".into()))
}

async fn cart_set(session: Session, q: Q) -> Result<&'static str, SessionError> {
    session.set(&Cart {
        items: num(&q, "items"),
    })?;
    pause(&q).await;
    Ok("set")
}

async fn cart_add(session: Session, q: Q) -> Result<String, SessionError> {
    session.modify(|c: Option<Cart>| Cart {
        items: c.unwrap_or_default().items + 1,
    })?;
    pause(&q).await;
    Ok(session.get::<Cart>()?.unwrap_or_default().items.to_string())
}

/// Write `items` to the session directly (unconditionally), as a concurrent request would.
async fn write_behind(store: &Client, id: &str, items: u64) {
    let data = serde_json::to_vec(&Cart { items }).expect("json");
    store
        .update_session(SessionRef::Id(id.to_string()), 0, Some(data), None)
        .await
        .expect("concurrent write");
}

/// `modify(+1)` while another writer gets in `inject` times: each of the first `inject` runs
/// of the change writes `items = 10 × run` to the store first, so the save that follows
/// conflicts.
async fn cart_add_raced(
    State(store): State<Client>,
    session: Session,
    q: Q,
) -> Result<String, SessionError> {
    let inject = num(&q, "inject") as usize;
    let id = session.id().ok_or(SessionError::NotLoggedIn)?;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    session.modify(move |c: Option<Cart>| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        if run <= inject {
            let (store, id) = (store.clone(), id.clone());
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(write_behind(
                    &store,
                    &id,
                    10 * run as u64,
                ))
            });
        }
        Cart {
            items: c.unwrap_or_default().items + 1,
        }
    })?;
    session.save().await?;
    Ok(format!("runs:{}", runs.load(Ordering::SeqCst)))
}

/// `set(items)` and, before the handler returns, a concurrent direct write of `items = 7`.
async fn cart_set_raced(
    State(store): State<Client>,
    session: Session,
    q: Q,
) -> Result<&'static str, SessionError> {
    let id = session.id().ok_or(SessionError::NotLoggedIn)?;
    session.set(&Cart {
        items: num(&q, "items"),
    })?;
    write_behind(&store, &id, 7).await;
    Ok("set")
}

async fn debug(session: Session) -> String {
    format!("{session:?}")
}

/// One answer of the app, with its `Set-Cookie` headers kept apart from the jar.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Reply {
    /// The value this answer sets the session cookie to (`Some("")` for a removal).
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=')?;
            if name.trim() != COOKIE {
                return None;
            }
            let removed = attrs
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            Some(if removed {
                String::new()
            } else {
                value.trim().to_string()
            })
        })
    }

    /// Whether this answer removes the session cookie.
    pub fn clears_cookie(&self) -> bool {
        self.session_cookie().as_deref() == Some("")
    }
}

/// An HTTP/1.1 connection to the app.
pub struct Conn(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

/// A browser: tabs made with [`Browser::tab`] share its cookie jar.
#[derive(Clone)]
pub struct Browser {
    addr: SocketAddr,
    jar: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            jar: Arc::default(),
        }
    }

    /// Another tab of this browser (same jar).
    pub fn tab(&self) -> Browser {
        self.clone()
    }

    /// The session cookie in the jar.
    pub fn cookie(&self) -> Option<String> {
        self.jar.lock().unwrap().get(COOKIE).cloned()
    }

    /// Put `value` in the jar as the session cookie (a browser that kept an old cookie).
    pub fn set_cookie(&self, value: &str) {
        self.jar
            .lock()
            .unwrap()
            .insert(COOKIE.to_string(), value.to_string());
    }

    /// Apply an answer's `Set-Cookie` headers to the jar, as a browser does on arrival.
    pub fn apply(&self, r: &Reply) {
        let mut jar = self.jar.lock().unwrap();
        for c in &r.set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let removed = value.trim().is_empty()
                || attrs
                    .split(';')
                    .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if removed {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    /// An open connection to the app, for requests that must leave without a connect first.
    pub async fn connect(&self) -> Conn {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the app");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        Conn(sender)
    }

    /// Send a request with the jar's cookies; the answer's cookies are not applied.
    pub async fn send(&self, method: Method, path: &str) -> Reply {
        let mut conn = self.connect().await;
        self.send_on(&mut conn, method, path).await
    }

    /// The `Cookie` header the jar makes now.
    fn cookie_header(&self) -> String {
        let jar = self.jar.lock().unwrap();
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A request that takes the jar's cookies now but reaches the app only after `lag` (it
    /// is in flight meanwhile); its answer's cookies are applied on arrival.
    pub async fn go_late(&self, method: Method, path: &str, lag: Duration) -> Reply {
        let cookies = self.cookie_header();
        tokio::time::sleep(lag).await;
        let mut conn = self.connect().await;
        let r = self.send_with(&mut conn, method, path, cookies).await;
        self.apply(&r);
        r
    }

    /// [`Browser::send`] on an open connection.
    pub async fn send_on(&self, conn: &mut Conn, method: Method, path: &str) -> Reply {
        let cookies = self.cookie_header();
        self.send_with(conn, method, path, cookies).await
    }

    async fn send_with(
        &self,
        conn: &mut Conn,
        method: Method,
        path: &str,
        cookies: String,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies);
        }
        conn.0.ready().await.expect("connection ready");
        let res = conn
            .0
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("HTTP request");
        let status = res.status();
        let headers = res.headers().clone();
        let set_cookies = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ASCII Set-Cookie").to_string())
            .collect();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            set_cookies,
        }
    }

    /// Send and apply the answer's cookies on arrival.
    pub async fn go(&self, method: Method, path: &str) -> Reply {
        let r = self.send(method, path).await;
        self.apply(&r);
        r
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.go(Method::GET, path).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        self.go(Method::POST, path).await
    }

    /// Log in as `user`; panics unless it worked and set a cookie.
    pub async fn login(&self, user: &str) -> String {
        let r = self.post(&format!("/login?user={user}")).await;
        assert_eq!(r.status, StatusCode::OK, "login: {r:?}");
        r.session_cookie()
            .filter(|c| !c.is_empty())
            .expect("login sets the session cookie")
    }
}
