//! Client of sessiond.
//!
//! - Typed calls for every RPC of the `Sessions` API, with errors an application matches on
//!   ([`Error::Revoked`], [`Error::TokenReused`], [`Error::VersionConflict`], …).
//! - Leader tracking: writes go to the node last named leader; `NOT_LEADER` answers update it,
//!   and any node forwards to the leader anyway.
//! - Exactly-once retries: each logical mutation draws one `request_id` and reuses it on every
//!   retry (timeouts, resets, leader changes), with jittered exponential backoff inside a
//!   deadline, so a rotation whose answer was lost returns the same new token when retried.
//! - A dead endpoint is skipped for a while and probed again later.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessiond_client::Error> {
//! let client = sessiond_client::Client::builder(["127.0.0.1:7001", "127.0.0.1:7002"]).build()?;
//! let created = client.create_session(sessiond_client::NewSession::for_user("alice")).await?;
//! let rotated = client.rotate_token(&created.token).await?;
//! client.revoke_session(sessiond_client::SessionRef::Token(rotated.token), "logout").await?;
//! # Ok(()) }
//! ```

pub mod duration;
mod error;

pub use error::{detail, Error};
pub use sessiond_proto::v1::{Consistency, Revocation, Session, StatusResponse};

use sessiond_proto::v1 as pb;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::sessions_client::SessionsClient;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use tonic::transport::{Certificate, ClientTlsConfig};
use tonic::transport::{Channel, Endpoint};

/// How long an endpoint that failed to connect is skipped.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    deadline: Duration,
    max_attempts: u32,
    backoff: Duration,
    tls: Option<ClientTlsConfig>,
}

impl ClientBuilder {
    /// Connect with TLS (rustls). Endpoints given as `https://host:port`, or plain
    /// `host:port` once this is set, use it. Without a CA in the config, the platform's
    /// trusted roots verify the server.
    pub fn tls(mut self, config: ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Timeout for establishing a connection to one node.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Timeout of one attempt.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Total time one logical call may take, retries included.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// Most attempts of one logical call.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// First backoff between attempts (doubles, with jitter, up to one second).
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// Build the client, inside a Tokio runtime. Connections are made lazily, so this does no
    /// I/O.
    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        let mut nodes = Vec::new();
        for addr in &self.endpoints {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            let url = if addr.contains("://") {
                addr.clone()
            } else {
                format!("{scheme}://{addr}")
            };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::Config(format!("endpoint {addr}: {e}")))?
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true);
            if url.starts_with("https://") {
                let tls = self
                    .tls
                    .clone()
                    .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| Error::Config(format!("TLS for {addr}: {e}")))?;
            }
            let channel = endpoint.connect_lazy();
            nodes.push(Node {
                addr: addr.clone(),
                channel,
                down_until: Mutex::new(None),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                nodes,
                leader: Mutex::new(None),
                next: AtomicUsize::new(0),
                cfg: self,
            }),
            request_id: None,
        })
    }
}

struct Node {
    addr: String,
    channel: Channel,
    down_until: Mutex<Option<Instant>>,
}

struct Inner {
    nodes: Vec<Node>,
    leader: Mutex<Option<usize>>,
    next: AtomicUsize,
    cfg: ClientBuilder,
}

/// A handle to a cluster; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Set by [`Client::with_request_id`]: the id every mutation of this handle uses.
    request_id: Option<Vec<u8>>,
}

/// Names a session by one of its tokens or by its public id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRef {
    Token(String),
    Id(String),
}

impl SessionRef {
    fn to_pb(&self) -> Option<pb::SessionRef> {
        Some(pb::SessionRef {
            by: Some(match self {
                SessionRef::Token(t) => pb::session_ref::By::Token(t.clone()),
                SessionRef::Id(i) => pb::session_ref::By::Id(i.clone()),
            }),
        })
    }
}

/// What a new session starts with.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub user_id: String,
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
    /// `None`: the cluster default.
    pub idle_timeout: Option<Duration>,
    /// `None`: the cluster default.
    pub absolute_timeout: Option<Duration>,
}

impl NewSession {
    /// A session for `user_id` with no data.
    pub fn for_user(user_id: impl Into<String>) -> Self {
        NewSession {
            user_id: user_id.into(),
            ..Default::default()
        }
    }
}

/// A created session and the token to hand to the browser.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub session: Session,
    pub token: String,
    /// This answer is a replay of an earlier attempt of the same call.
    pub replayed: bool,
}

/// A validated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub session: Session,
    /// The token is the previous generation, inside its grace window: the client should
    /// switch to the current token (see [`Client::rotate_or_current`]).
    pub superseded: bool,
}

/// The result of a rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotated {
    pub session: Session,
    /// The token to hold from now on.
    pub token: String,
    /// A new generation exists for the presented token (made by this call or a racing one).
    pub rotated: bool,
    pub replayed: bool,
}

fn ms(d: Option<Duration>) -> u64 {
    d.map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A fresh request id for one logical mutation.
pub fn request_id() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

fn session(s: Option<Session>) -> Result<Session, Error> {
    s.ok_or_else(|| Error::Unavailable("response without a session".into()))
}

impl Client {
    /// Settings for a client of the cluster reachable at `endpoints` (`host:port`).
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(15),
            max_attempts: 30,
            backoff: Duration::from_millis(20),
            tls: None,
        }
    }

    /// A handle whose mutations all carry `request_id` (16 bytes) instead of a fresh one, so
    /// that a script can retry a command exactly once across process restarts.
    pub fn with_request_id(&self, request_id: [u8; 16]) -> Client {
        Client {
            inner: self.inner.clone(),
            request_id: Some(request_id.to_vec()),
        }
    }

    fn request_id(&self) -> Vec<u8> {
        self.request_id.clone().unwrap_or_else(request_id)
    }

    fn pick(&self, prefer_leader: bool) -> usize {
        let now = Instant::now();
        let up = |i: usize| {
            self.inner.nodes[i]
                .down_until
                .lock()
                .map(|d| d.is_none_or(|t| t <= now))
                .unwrap_or(true)
        };
        if prefer_leader {
            if let Some(l) = self.inner.leader.lock().ok().and_then(|l| *l) {
                if up(l) {
                    return l;
                }
            }
        }
        let n = self.inner.nodes.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| up(*i))
            .unwrap_or(start % n)
    }

    fn learn(&self, i: usize, status: &tonic::Status) {
        let d = detail(status);
        if let Some(addr) = d
            .as_ref()
            .map(|d| d.leader_addr.as_str())
            .filter(|a| !a.is_empty())
        {
            if let Some(l) = self.node_at(addr) {
                if let Ok(mut leader) = self.inner.leader.lock() {
                    *leader = Some(l);
                }
                return;
            }
        }
        if d.is_none() {
            // No answer from sessiond itself: the node is unreachable.
            self.mark_down(i);
        }
    }

    /// A node that forwarded the call to the leader names it in the answer's metadata;
    /// remember it, so the next leader-only call skips the extra hop.
    fn learn_leader(&self, metadata: &tonic::metadata::MetadataMap) {
        let Some(addr) = metadata
            .get(sessiond_proto::LEADER_KEY)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        if let Some(l) = self.node_at(addr) {
            if let Ok(mut leader) = self.inner.leader.lock() {
                *leader = Some(l);
            }
        }
    }

    /// The endpoint a node's advertised client address names. Endpoints may carry a scheme
    /// (`http://host:port`); advertised addresses do not.
    fn node_at(&self, advertised: &str) -> Option<usize> {
        fn bare(a: &str) -> &str {
            a.split_once("://")
                .map_or(a, |(_, rest)| rest)
                .trim_end_matches('/')
        }
        let want = bare(advertised);
        self.inner.nodes.iter().position(|n| bare(&n.addr) == want)
    }

    /// Skip endpoint `i` for a while (and forget it as leader), so the next attempt of a
    /// call goes elsewhere instead of waiting on the same silent connection.
    fn mark_down(&self, i: usize) {
        if let Ok(mut down) = self.inner.nodes[i].down_until.lock() {
            *down = Some(Instant::now() + DOWN_FOR);
        }
        if let Ok(mut leader) = self.inner.leader.lock() {
            if *leader == Some(i) {
                *leader = None;
            }
        }
    }

    /// Run one logical call with retries. `f` must send the same request every time (the
    /// request id is drawn once by the caller), which is what makes retries exactly-once.
    async fn call<T, F, Fut>(&self, prefer_leader: bool, f: F) -> Result<T, Error>
    where
        F: Fn(SessionsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let cfg = &self.inner.cfg;
        let deadline = Instant::now() + cfg.deadline;
        let mut backoff = cfg.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let i = self.pick(prefer_leader);
            let client = SessionsClient::new(self.inner.nodes[i].channel.clone());
            let last = match tokio::time::timeout(cfg.request_timeout, f(client)).await {
                Ok(Ok(r)) => {
                    self.learn_leader(r.metadata());
                    return Ok(r.into_inner());
                }
                Ok(Err(status)) => {
                    self.learn(i, &status);
                    let e = Error::from(status);
                    if !e.retryable() {
                        return Err(e);
                    }
                    e.to_string()
                }
                Err(_) => {
                    self.mark_down(i);
                    format!("attempt timed out after {:?}", cfg.request_timeout)
                }
            };
            let jitter = backoff.mul_f64(rand::random::<f64>());
            if attempts >= cfg.max_attempts || Instant::now() + jitter >= deadline {
                return Err(Error::Timeout { attempts, last });
            }
            tokio::time::sleep(jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Create a session. Retried with one request id: a retry never creates a second session.
    pub async fn create_session(&self, new: NewSession) -> Result<Created, Error> {
        let req = pb::CreateSessionRequest {
            user_id: new.user_id,
            data: new.data,
            attributes: new.attributes,
            idle_timeout_ms: ms(new.idle_timeout),
            absolute_timeout_ms: ms(new.absolute_timeout),
            request_id: self.request_id(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.create_session(req).await }
            })
            .await?;
        Ok(Created {
            session: session(r.session)?,
            token: r.token,
            replayed: r.replayed,
        })
    }

    /// Validate a token; `touch` slides the idle deadline (written at most once per touch
    /// interval).
    pub async fn get_session(
        &self,
        token: &str,
        consistency: Consistency,
        touch: bool,
    ) -> Result<Validated, Error> {
        let req = pb::GetSessionRequest {
            token: token.to_string(),
            consistency: consistency as i32,
            touch,
        };
        let linearizable = consistency == Consistency::Linearizable;
        let r = self
            .call(linearizable, |mut c| {
                let req = req.clone();
                async move { c.get_session(req).await }
            })
            .await?;
        Ok(Validated {
            session: session(r.session)?,
            superseded: r.superseded,
        })
    }

    /// Rotate a token. Every racing rotation of one token, and every retry, returns the same
    /// successor.
    pub async fn rotate_token(&self, token: &str) -> Result<Rotated, Error> {
        let req = pb::RotateTokenRequest {
            token: token.to_string(),
            request_id: self.request_id(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.rotate_token(req).await }
            })
            .await?;
        Ok(Rotated {
            session: session(r.session)?,
            token: r.token,
            rotated: r.rotated,
            replayed: r.replayed,
        })
    }

    /// The token a request holding `token` should continue with: the successor when this call
    /// or a racing one rotated it, or `token` itself inside the rotation interval. This is the
    /// one call a web handler needs for the "two tabs rotate at once" race.
    pub async fn rotate_or_current(&self, token: &str) -> Result<String, Error> {
        Ok(self.rotate_token(token).await?.token)
    }

    /// Compare-and-swap write (`expected_version = 0`: unconditional). `attributes`, when
    /// given, replace all attributes.
    pub async fn update_session(
        &self,
        target: SessionRef,
        expected_version: u64,
        data: Option<Vec<u8>>,
        attributes: Option<HashMap<String, String>>,
    ) -> Result<Session, Error> {
        let req = pb::UpdateSessionRequest {
            session: target.to_pb(),
            expected_version,
            data,
            attributes: attributes.map(|entries| pb::AttributeMap { entries }),
            request_id: self.request_id(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.update_session(req).await }
            })
            .await?;
        session(r.session)
    }

    /// Slide the idle deadline.
    pub async fn touch_session(&self, token: &str) -> Result<Validated, Error> {
        let req = pb::TouchSessionRequest {
            token: token.to_string(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.touch_session(req).await }
            })
            .await?;
        Ok(Validated {
            session: session(r.session)?,
            superseded: r.superseded,
        })
    }

    /// Log out. Idempotent; returns whether the session was already revoked.
    pub async fn revoke_session(&self, target: SessionRef, reason: &str) -> Result<bool, Error> {
        let req = pb::RevokeSessionRequest {
            session: target.to_pb(),
            reason: reason.to_string(),
            request_id: self.request_id(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.revoke_session(req).await }
            })
            .await?;
        Ok(r.already_revoked)
    }

    /// Log a user out everywhere, except `except_id` when given. Returns the revoked ids.
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except_id: Option<&str>,
        reason: &str,
    ) -> Result<Vec<String>, Error> {
        let req = pb::RevokeUserSessionsRequest {
            user_id: user_id.to_string(),
            except_id: except_id.unwrap_or_default().to_string(),
            reason: reason.to_string(),
            request_id: self.request_id(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.revoke_user_sessions(req).await }
            })
            .await?;
        Ok(r.revoked_ids)
    }

    /// A user's live sessions (never tokens).
    pub async fn list_user_sessions(
        &self,
        user_id: &str,
        consistency: Consistency,
    ) -> Result<Vec<Session>, Error> {
        let req = pb::ListUserSessionsRequest {
            user_id: user_id.to_string(),
            consistency: consistency as i32,
        };
        let r = self
            .call(consistency == Consistency::Linearizable, |mut c| {
                let req = req.clone();
                async move { c.list_user_sessions(req).await }
            })
            .await?;
        Ok(r.sessions)
    }

    /// Stream revocations from log index `from_index` (0: from now on).
    pub async fn watch_revocations(
        &self,
        from_index: u64,
    ) -> Result<tonic::Streaming<Revocation>, Error> {
        let req = pb::WatchRevocationsRequest { from_index };
        self.call(false, |mut c| async move { c.watch_revocations(req).await })
            .await
    }

    /// A `Cluster` client to the endpoint at `index` of the list given to the builder.
    pub fn cluster_client(&self, index: usize) -> Option<ClusterClient<Channel>> {
        self.inner
            .nodes
            .get(index)
            .map(|n| ClusterClient::new(n.channel.clone()))
    }

    /// The endpoints given to the builder.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builder_checks_endpoints_and_accepts_tls() {
        assert!(matches!(
            Client::builder(Vec::<String>::new()).build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::builder(["not a uri at all"]).build(),
            Err(Error::Config(_))
        ));
        let c = Client::builder(["127.0.0.1:7001", "https://node2:7001"])
            .tls(ClientTlsConfig::new().with_native_roots())
            .build()
            .expect("TLS endpoints build");
        assert_eq!(c.endpoints(), vec!["127.0.0.1:7001", "https://node2:7001"]);
    }

    #[tokio::test]
    async fn a_forwarded_answer_teaches_the_leader_whatever_the_scheme() {
        let c = Client::builder(["http://127.0.0.1:7001", "127.0.0.1:7002", "http://n3:7003/"])
            .build()
            .unwrap();
        assert_eq!(c.node_at("127.0.0.1:7001"), Some(0));
        assert_eq!(c.node_at("http://127.0.0.1:7002"), Some(1));
        assert_eq!(c.node_at("n3:7003"), Some(2));
        assert_eq!(c.node_at("127.0.0.1:7009"), None);

        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(sessiond_proto::LEADER_KEY, "n3:7003".parse().unwrap());
        c.learn_leader(&md);
        assert!(
            (0..10).all(|_| c.pick(true) == 2),
            "leader-only calls go to n3"
        );
        // Calls that need no leader still spread over every node.
        let picked: std::collections::BTreeSet<_> = (0..10).map(|_| c.pick(false)).collect();
        assert_eq!(picked.len(), 3);

        // An answer without the entry (served by the node asked) changes nothing.
        c.learn_leader(&tonic::metadata::MetadataMap::new());
        assert_eq!(c.pick(true), 2);
    }

    #[tokio::test]
    async fn a_tls_client_against_a_plaintext_server_fails_typed_and_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A server that accepts and answers garbage, like a plaintext port would to TLS.
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let c = Client::builder([addr.to_string()])
            .tls(ClientTlsConfig::new().with_native_roots())
            .deadline(Duration::from_secs(2))
            .request_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let started = Instant::now();
        let e = c
            .get_session("sdt1_x", Consistency::Stale, false)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
