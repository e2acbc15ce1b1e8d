//! Client of sessiond.
//!
//! - Typed calls for every RPC of the `Sessions` API, with errors an application matches on
//!   ([`Error::Revoked`], [`Error::TokenReused`], [`Error::VersionConflict`], …).
//! - Leader tracking: writes go to the node last named leader; `NOT_LEADER` answers and
//!   forwarded answers name it, and any node forwards to the leader anyway. The leader is
//!   found among the endpoints by node id (every answer names the node that gave it), so
//!   endpoints may spell the nodes' addresses differently from what the nodes advertise.
//! - Exactly-once retries: each logical mutation draws one `request_id` and reuses it on every
//!   retry (timeouts, resets, leader changes), with jittered exponential backoff inside a
//!   deadline, so a rotation whose answer was lost returns the same new token when retried.
//! - A dead endpoint is skipped for a while and probed again later.
//!
//! # Connecting to a secured cluster
//!
//! A sessiond node serves its client port over TLS with a certificate of the cluster's CA and
//! authenticates every call, so a client needs the CA certificate (`ca.crt`) and one
//! credential: a client certificate (`client-<name>.crt` / `.key`, the principal is its CN) or
//! a bearer secret the operator issued (kept in a file readable by the application only).
//! Missing or unknown credentials fail with [`Error::Unauthenticated`], a principal without
//! the role a call needs with [`Error::PermissionDenied`], and a certificate problem with
//! [`Error::Tls`], all at the first attempt.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessiond_client::Error> {
//! let client = sessiond_client::Client::builder(["127.0.0.1:7001", "127.0.0.1:7002"])
//!     .ca_cert_file("/etc/sessiond/ca.crt")?
//!     .bearer_token_file("/etc/myapp/sessiond.token")?
//!     .build()?;
//! let created = client.create_session(sessiond_client::NewSession::for_user("alice")).await?;
//! let rotated = client.rotate_token(&created.token).await?;
//! client.revoke_session(sessiond_client::SessionRef::Token(rotated.token), "logout").await?;
//! # Ok(()) }
//! ```
//!
//! Or take everything from the environment ([`Client::from_env`]): `SESSIOND_ENDPOINTS`,
//! `SESSIOND_CA`, `SESSIOND_CERT` + `SESSIOND_KEY`, `SESSIOND_TOKEN_FILE` — the same
//! variables `sessionctl` reads. A node started with `--insecure` (plaintext, no
//! authentication) takes a client given nothing but endpoints.

pub mod duration;
mod error;
mod routing;

pub use error::{detail, Error};
pub use routing::Routing;
pub use sessiond_proto::v1::{Consistency, Revocation, Session, StatusResponse};

use sessiond_proto::v1 as pb;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::sessions_client::SessionsClient;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::transport::{Channel, Endpoint};

/// How long an endpoint that failed to connect is skipped.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// Environment variable: comma-separated client addresses of the nodes.
pub const ENV_ENDPOINTS: &str = "SESSIOND_ENDPOINTS";
/// Environment variable: path of the cluster CA certificate (PEM).
pub const ENV_CA: &str = "SESSIOND_CA";
/// Environment variable: path of this client's certificate (PEM); needs [`ENV_KEY`].
pub const ENV_CERT: &str = "SESSIOND_CERT";
/// Environment variable: path of this client's private key (PEM); needs [`ENV_CERT`].
pub const ENV_KEY: &str = "SESSIOND_KEY";
/// Environment variable: path of a file holding this client's bearer secret (one line).
pub const ENV_TOKEN_FILE: &str = "SESSIOND_TOKEN_FILE";

/// The transport every client of this crate uses: a connection to one node that adds this
/// client's bearer credential (if any) to every call, whatever the service. Name it when
/// holding a [`ClusterClient`] from [`Client::cluster_client`].
pub type AuthChannel = InterceptedService<Channel, BearerAuth>;

/// Adds `authorization: Bearer <secret>` to every outgoing call (nothing without a secret),
/// and on the calls a [`Client`] retries, how long one attempt is waited for (`grpc-timeout`):
/// the node drops an attempt the client gave up on, and a node forwarding it to the leader
/// passes the deadline on, so an abandoned attempt never acts after its retry was answered.
///
/// One instance is shared by all services of a [`Client`], so no call can leave without it.
/// Its `Debug` never shows the secret, and the header value is marked sensitive (kept out of
/// HTTP/2 header compression tables and of `Debug` output of requests).
#[derive(Clone, Default)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
    attempt_timeout: Option<Duration>,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.header.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("BearerAuth")
            .field("bearer", &shown)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        if let Some(t) = self.attempt_timeout {
            req.set_timeout(t);
        }
        Ok(req)
    }
}

/// A bearer secret: kept out of `Debug` output, logs and error messages.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The files a client's TLS and credentials come from: the one form in which both the
/// `SESSIOND_*` environment variables ([`ClientBuilder::from_env`]) and `sessionctl`'s flags
/// reach the builder ([`ClientBuilder::security_files`]), so both check them the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityFiles {
    /// The cluster CA certificate (`ca.crt`), `SESSIOND_CA`.
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate (`client-<name>.crt`), `SESSIOND_CERT`.
    pub cert: Option<PathBuf>,
    /// This client's key (`client-<name>.key`), `SESSIOND_KEY`.
    pub key: Option<PathBuf>,
    /// A file holding a bearer secret on one line, `SESSIOND_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
}

impl SecurityFiles {
    /// The files named by `SESSIOND_CA`, `SESSIOND_CERT`, `SESSIOND_KEY` and
    /// `SESSIOND_TOKEN_FILE` as `lookup` sees them (empty counts as unset). Takes a lookup
    /// rather than reading the process environment so it can be checked without touching it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let path = |k: &str| lookup(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        SecurityFiles {
            ca_cert: path(ENV_CA),
            cert: path(ENV_CERT),
            key: path(ENV_KEY),
            token_file: path(ENV_TOKEN_FILE),
        }
    }
}

/// Settings of a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    deadline: Duration,
    max_attempts: u32,
    backoff: Duration,
    tls: Option<ClientTlsConfig>,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    bearer: Option<Secret>,
}

/// Written by hand so that no key or secret is ever printed: only whether they are set.
impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |b: bool| if b { "<set>" } else { "none" };
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("deadline", &self.deadline)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("tls", &set(self.tls.is_some()))
            .field("ca_cert", &set(self.ca_pem.is_some()))
            .field("identity", &set(self.identity.is_some()))
            .field("bearer", &self.bearer)
            .finish()
    }
}

/// Read a file for the builder; the error names what it is and where, never its contents.
fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("reading {what} {}: {e}", path.display())))
}

fn has_pem(pem: &[u8], label: &str) -> bool {
    let pem = String::from_utf8_lossy(pem);
    pem.contains("-----BEGIN ") && pem.contains(label)
}

impl ClientBuilder {
    /// Settings from the environment: endpoints from `SESSIOND_ENDPOINTS` (comma-separated,
    /// required) and TLS and credentials from the variables of [`SecurityFiles`]. Lets an
    /// application be pointed at a secured cluster by its deployment, with no code of its own.
    /// Errors name the variable and the file, never a secret.
    pub fn from_env() -> Result<ClientBuilder, Error> {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// [`ClientBuilder::from_env`] with the variables looked up by `lookup` (for tests, or an
    /// application that keeps its settings elsewhere).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<ClientBuilder, Error> {
        let endpoints = match lookup(ENV_ENDPOINTS) {
            None => {
                return Err(Error::Config(format!(
                    "{ENV_ENDPOINTS} is not set (the nodes' client addresses, host:port,host:port)"
                )))
            }
            Some(v) => v
                .into_string()
                .map_err(|_| Error::Config(format!("{ENV_ENDPOINTS} is not valid UTF-8")))?,
        };
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config(format!(
                "{ENV_ENDPOINTS} is empty (the nodes' client addresses, host:port,host:port)"
            )));
        }
        Client::builder(endpoints).security_files(&SecurityFiles::from_lookup(lookup))
    }

    /// Apply the files of `files`: the CA, the client identity (certificate and key, both or
    /// neither) and the bearer secret. Each error names the environment variable that
    /// corresponds to the file as well as the file.
    pub fn security_files(mut self, files: &SecurityFiles) -> Result<Self, Error> {
        if let Some(ca) = &files.ca_cert {
            self = self.ca_cert_file(ca).map_err(named(ENV_CA))?;
        }
        match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                self = self
                    .identity_files(cert, key)
                    .map_err(named(&format!("{ENV_CERT}/{ENV_KEY}")))?;
            }
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "{ENV_CERT} is set but {ENV_KEY} is not: a client certificate needs its key"
                )))
            }
            (None, Some(_)) => {
                return Err(Error::Config(format!(
                    "{ENV_KEY} is set but {ENV_CERT} is not: a client key needs its certificate"
                )))
            }
            (None, None) => {}
        }
        if let Some(token) = &files.token_file {
            self = self
                .bearer_token_file(token)
                .map_err(named(ENV_TOKEN_FILE))?;
        }
        Ok(self)
    }

    /// Connect with TLS (rustls). Endpoints given as `https://host:port`, or plain
    /// `host:port` once this is set, use it. Without a CA in the config, the platform's
    /// trusted roots verify the server. [`ClientBuilder::ca_cert_pem`] and
    /// [`ClientBuilder::identity_pem`] add to this config.
    pub fn tls(mut self, config: ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Verify the nodes with this CA certificate (PEM, the cluster's `ca.crt`) instead of
    /// the platform's roots, which do not know a cluster's own CA. Implies TLS: endpoints
    /// without a scheme use `https://`. Checked by [`ClientBuilder::build`].
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// [`ClientBuilder::ca_cert_pem`] with the PEM read from `path` now.
    pub fn ca_cert_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let pem = read_file("CA certificate", path.as_ref())?;
        Ok(self.ca_cert_pem(pem))
    }

    /// Authenticate with a client certificate (PEM certificate chain and PEM private key, a
    /// cluster's `client-<name>.crt` / `.key`): the node takes the certificate's CN as the
    /// principal. Implies TLS: endpoints without a scheme use `https://`. Checked by
    /// [`ClientBuilder::build`].
    pub fn identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// [`ClientBuilder::identity_pem`] with both files read from disk now.
    pub fn identity_files(
        self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let cert = read_file("client certificate", cert_path.as_ref())?;
        let key = read_file("client key", key_path.as_ref())?;
        Ok(self.identity_pem(cert, key))
    }

    /// Authenticate every call with `authorization: Bearer <secret>`, a credential the
    /// operator issued to this application (surrounding whitespace, such as the newline a
    /// file ends with, is dropped). The secret is sent over TLS only: endpoints without a
    /// scheme use `https://`, and [`ClientBuilder::build`] refuses an `http://` endpoint. It
    /// never appears in `Debug` output or an error.
    pub fn bearer_token(mut self, secret: impl Into<String>) -> Self {
        self.bearer = Some(Secret(secret.into().trim().to_string()));
        self
    }

    /// [`ClientBuilder::bearer_token`] with the secret read from `path` (one line) now, so it
    /// can live in a file only the application may read instead of in its arguments or
    /// environment.
    pub fn bearer_token_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = read_file("bearer token file", path)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::Config(format!(
                "bearer token file {} is not UTF-8 text",
                path.display()
            ))
        })?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(Error::Config(format!(
                "bearer token file {} is empty",
                path.display()
            )));
        }
        if secret.contains(['\n', '\r']) {
            return Err(Error::Config(format!(
                "bearer token file {} has more than one line (it holds one secret)",
                path.display()
            )));
        }
        Ok(self.bearer_token(secret))
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

    /// The TLS config endpoints use, if any: the one given to [`ClientBuilder::tls`] with
    /// the CA and identity added.
    fn tls_config(&self) -> Result<Option<ClientTlsConfig>, Error> {
        if self.ca_pem.is_none() && self.identity.is_none() {
            return Ok(self.tls.clone());
        }
        let mut tls = self.tls.clone().unwrap_or_default();
        match &self.ca_pem {
            Some(pem) => {
                if !has_pem(pem, "CERTIFICATE-----") {
                    return Err(Error::Config(
                        "the CA certificate is not a PEM certificate".into(),
                    ));
                }
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None if self.tls.is_none() => tls = tls.with_native_roots(),
            None => {}
        }
        if let Some((cert, key)) = &self.identity {
            if !has_pem(cert, "CERTIFICATE-----") {
                return Err(Error::Config(
                    "the client certificate is not a PEM certificate".into(),
                ));
            }
            if !has_pem(key, "PRIVATE KEY-----") {
                return Err(Error::Config(
                    "the client key is not a PEM private key".into(),
                ));
            }
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(Some(tls))
    }

    /// The interceptor that carries the bearer secret.
    fn bearer_auth(&self) -> Result<BearerAuth, Error> {
        let Some(Secret(secret)) = &self.bearer else {
            return Ok(BearerAuth::default());
        };
        if secret.is_empty() {
            return Err(Error::Config("the bearer token is empty".into()));
        }
        // A bearer credential is visible ASCII (RFC 6750). Say nothing of the value.
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "the bearer token has characters other than visible ASCII".into(),
            ));
        }
        let mut header: MetadataValue<Ascii> = format!("Bearer {secret}")
            .parse()
            .map_err(|_| Error::Config("the bearer token is not a valid header value".into()))?;
        header.set_sensitive(true);
        Ok(BearerAuth {
            header: Some(header),
            attempt_timeout: None,
        })
    }

    /// Build the client, inside a Tokio runtime. Connections are made lazily, so this does no
    /// I/O.
    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        if self.identity.is_some() && self.bearer.is_some() {
            // The nodes refuse a call that presents both.
            return Err(Error::Config(
                "give a client certificate or a bearer token, not both".into(),
            ));
        }
        let tls = self.tls_config()?;
        let auth = self.bearer_auth()?;
        let secure = tls.is_some() || self.bearer.is_some();
        let mut nodes = Vec::new();
        for addr in &self.endpoints {
            let scheme = if secure { "https" } else { "http" };
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
                let tls = tls
                    .clone()
                    .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| Error::Config(format!("TLS for {addr}: {}", chain(&e))))?;
            } else if self.bearer.is_some() {
                return Err(Error::Config(format!(
                    "endpoint {addr} is plaintext: a bearer token is only sent over TLS \
                     (use https:// or give the cluster's CA)"
                )));
            }
            let plaintext = (!url.starts_with("https://")).then(|| {
                let uri = endpoint.uri();
                let host = uri.host().unwrap_or_default();
                format!("{host}:{}", uri.port_u16().unwrap_or(80))
            });
            let connection = endpoint.connect_lazy();
            let timed = BearerAuth {
                attempt_timeout: Some(self.request_timeout),
                ..auth.clone()
            };
            nodes.push(Node {
                addr: addr.clone(),
                channel: InterceptedService::new(connection.clone(), auth.clone()),
                timed: InterceptedService::new(connection, timed),
                plaintext,
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                routing: Routing::new(self.endpoints.iter().cloned()),
                nodes,
                cfg: self,
            }),
            request_id: None,
        })
    }
}

/// Whether the server at `hostport` answers a TLS ClientHello with a TLS record (a
/// ServerHello or an alert). A plaintext HTTP/2 server answers with an HTTP/2 frame or closes.
/// Only the first bytes of the answer are read: no certificate is looked at and nothing is
/// trusted.
async fn speaks_tls(hostport: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(hello) = client_hello() else {
        return false;
    };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(hostport).await.ok()?;
        s.write_all(&hello).await.ok()?;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.ok()?;
        // Record type handshake (22) or alert (21), protocol version 3.x.
        Some(matches!(head, [0x15 | 0x16, 0x03]))
    };
    tokio::time::timeout(timeout.max(Duration::from_millis(200)), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The bytes of a TLS ClientHello, as rustls would send it.
fn client_hello() -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("probe.sessiond").ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).ok()?;
    Some(hello)
}

/// An error and its sources, `a: b: c` (tonic's own message is only "transport error").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// A config error prefixed with the variable the setting came from.
fn named(var: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Config(m) => Error::Config(format!("{var}: {m}")),
        other => other,
    }
}

struct Node {
    addr: String,
    /// For streams and the `Cluster` service: no deadline per call.
    channel: AuthChannel,
    /// The same connection, for retried unary calls: each attempt states its timeout.
    timed: AuthChannel,
    /// `host:port` of a plaintext (`http://`) endpoint: where to check, after a transport
    /// failure, whether the node actually serves TLS.
    plaintext: Option<String>,
}

struct Inner {
    /// By endpoint index, as `routing`'s.
    nodes: Vec<Node>,
    routing: Routing,
    cfg: ClientBuilder,
}

/// A decimal node id in metadata entry `key`.
fn node_id(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<u64> {
    metadata.get(key)?.to_str().ok()?.parse().ok()
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
    /// A client configured by the environment (see [`ClientBuilder::from_env`]).
    pub fn from_env() -> Result<Client, Error> {
        ClientBuilder::from_env()?.build()
    }

    /// Settings for a client of the cluster reachable at `endpoints` (`host:port`, or with
    /// an `http://` / `https://` scheme).
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
            ca_pem: None,
            identity: None,
            bearer: None,
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
        self.inner.routing.pick(prefer_leader)
    }

    /// Learn from a failed call to endpoint `i`: the node that answered, the leader it names,
    /// or, without an answer from sessiond itself, that the endpoint is unreachable. A node
    /// that answers UNAVAILABLE or NOT_LEADER without naming a leader (an election, a node
    /// whose disk failed) is skipped for a while too: the next attempt asks another node
    /// rather than the same one again as "the last leader known".
    fn learn(&self, i: usize, status: &tonic::Status) {
        self.learn_node(i, status.metadata());
        match detail(status) {
            Some(d) if d.leader_id != 0 || !d.leader_addr.is_empty() => self.learn_hint(
                (d.leader_id != 0).then_some(d.leader_id),
                Some(d.leader_addr.as_str()).filter(|a| !a.is_empty()),
            ),
            Some(d)
                if d.code == pb::ErrorCode::Unavailable as i32
                    || d.code == pb::ErrorCode::NotLeader as i32 =>
            {
                self.mark_down(i)
            }
            Some(_) => {}
            None => self.mark_down(i),
        }
    }

    /// Learn from an answer of endpoint `i`: the node that gave it, and the leader a node that
    /// forwarded the call names, so the next leader-only call skips the extra hop.
    fn learn_answer(&self, i: usize, metadata: &tonic::metadata::MetadataMap) {
        self.learn_node(i, metadata);
        self.learn_hint(
            node_id(metadata, sessiond_proto::LEADER_ID_KEY),
            metadata
                .get(sessiond_proto::LEADER_KEY)
                .and_then(|v| v.to_str().ok()),
        );
    }

    /// Endpoint `i` reaches the node its answer names, if it names one.
    fn learn_node(&self, i: usize, metadata: &tonic::metadata::MetadataMap) {
        self.inner
            .routing
            .answered(i, node_id(metadata, sessiond_proto::NODE_KEY));
    }

    /// A node named the leader (see [`Routing::leader_named`]).
    fn learn_hint(&self, id: Option<u64>, addr: Option<&str>) {
        self.inner.routing.leader_named(id, addr);
    }

    /// Skip endpoint `i` for a while (and forget it as leader), so the next attempt of a
    /// call goes elsewhere instead of waiting on the same silent connection.
    fn mark_down(&self, i: usize) {
        self.inner.routing.skip_for(i, DOWN_FOR);
    }

    /// Run one logical call with retries. `f` must send the same request every time (the
    /// request id is drawn once by the caller), which is what makes retries exactly-once.
    async fn call<T, F, Fut>(&self, prefer_leader: bool, f: F) -> Result<T, Error>
    where
        F: Fn(SessionsClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.attempts(prefer_leader, true, f).await
    }

    /// [`Client::call`], with each attempt's timeout stated to the node when `timed` (not for
    /// a stream, which lives past it).
    async fn attempts<T, F, Fut>(&self, prefer_leader: bool, timed: bool, f: F) -> Result<T, Error>
    where
        F: Fn(SessionsClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let cfg = &self.inner.cfg;
        let deadline = Instant::now() + cfg.deadline;
        let mut backoff = cfg.backoff;
        let mut attempts = 0;
        // Nodes already checked for TLS during this call (at most once each).
        let mut probed = vec![false; self.inner.nodes.len()];
        loop {
            attempts += 1;
            let i = self.pick(prefer_leader);
            let node = &self.inner.nodes[i];
            let channel = match timed {
                true => node.timed.clone(),
                false => node.channel.clone(),
            };
            let client = SessionsClient::new(channel)
                .max_decoding_message_size(sessiond_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(sessiond_proto::MAX_MESSAGE_BYTES);
            let last = match tokio::time::timeout(cfg.request_timeout, f(client)).await {
                Ok(Ok(r)) => {
                    self.learn_answer(i, r.metadata());
                    return Ok(r.into_inner());
                }
                Ok(Err(status)) => {
                    self.learn(i, &status);
                    let probe = !std::mem::replace(&mut probed[i], true);
                    let e = self.classify(i, status, probe).await;
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

    /// The [`Error`] a failed call to node `i` means. A TLS failure names the node (its
    /// certificate may be the wrong one). A transport failure of a plaintext endpoint is
    /// checked, when `probe`, for a node that serves TLS: that fails every attempt the same
    /// way (the node drops the connection), but looks like a reset connection otherwise.
    async fn classify(&self, i: usize, status: tonic::Status, probe: bool) -> Error {
        let node = &self.inner.nodes[i];
        let transport = detail(&status).is_none() && error::transport_failure(&status);
        match Error::from(status) {
            Error::Tls(m) => Error::Tls(format!("{}: {m}", node.addr)),
            Error::Unavailable(m) if transport && probe => match &node.plaintext {
                Some(hostport) if speaks_tls(hostport, self.inner.cfg.connect_timeout).await => {
                    Error::Tls(format!(
                        "{}: the node serves TLS but this client connects in plaintext: give \
                         the cluster's CA (ca_cert_file / SESSIOND_CA / --ca-cert) or an \
                         https:// endpoint",
                        node.addr
                    ))
                }
                _ => Error::Unavailable(m),
            },
            e => e,
        }
    }

    /// The [`Error`] a failed call made on [`Client::cluster_client`]`(index)` means, with
    /// the same recognition of TLS problems as the calls of this client (which it does not
    /// retry, so the caller converts its own failures).
    pub async fn error_from(&self, index: usize, status: tonic::Status) -> Error {
        if index >= self.inner.nodes.len() {
            return Error::from(status);
        }
        self.classify(index, status, true).await
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

    /// A user's live sessions (never tokens), oldest first: every page, fetched one after the
    /// other. Each page is read on its own, so a session created or revoked meanwhile may be
    /// missed or still listed.
    pub async fn list_user_sessions(
        &self,
        user_id: &str,
        consistency: Consistency,
    ) -> Result<Vec<Session>, Error> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_user_sessions_page(user_id, consistency, 0, &token)
                .await?;
            all.extend(page.sessions);
            if page.next_page_token.is_empty() || page.next_page_token == token {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// One page of a user's live sessions: `page_size` sessions at most (0: the server's
    /// default of 100), starting after `page_token` (empty: the first page). The answer's
    /// `next_page_token` is empty on the last page.
    pub async fn list_user_sessions_page(
        &self,
        user_id: &str,
        consistency: Consistency,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListUserSessionsResponse, Error> {
        let req = pb::ListUserSessionsRequest {
            user_id: user_id.to_string(),
            consistency: consistency as i32,
            page_size,
            page_token: page_token.to_string(),
        };
        self.call(consistency == Consistency::Linearizable, |mut c| {
            let req = req.clone();
            async move { c.list_user_sessions(req).await }
        })
        .await
    }

    /// Stream revocations from log index `from_index` (0: from now on).
    pub async fn watch_revocations(
        &self,
        from_index: u64,
    ) -> Result<tonic::Streaming<Revocation>, Error> {
        let req = pb::WatchRevocationsRequest { from_index };
        self.attempts(false, false, |mut c| async move {
            c.watch_revocations(req).await
        })
        .await
    }

    /// A `Cluster` client to the endpoint at `index` of the list given to the builder, over
    /// this client's connection and with its credentials (TLS identity and bearer token).
    /// Calls on it are not retried; the node must grant the principal the `operator` role.
    pub fn cluster_client(&self, index: usize) -> Option<ClusterClient<AuthChannel>> {
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

    const SECRET: &str = "hunter2-very-secret";

    /// A real certificate and key (PEM): tonic parses them when the client is built.
    fn pem_pair() -> (String, String) {
        let k = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (k.cert.pem(), k.signing_key.serialize_pem())
    }

    /// A file in a fresh temporary directory, removed with it.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            let d = std::env::temp_dir().join(format!(
                "sessiond-client-unit-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir(&d).unwrap();
            Dir(d)
        }
        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn config_err(r: Result<ClientBuilder, Error>) -> String {
        match r {
            Err(Error::Config(m)) => m,
            Err(other) => panic!("want Error::Config, got {other:?}"),
            Ok(b) => panic!("want Error::Config, got {b:?}"),
        }
    }

    fn header(b: &ClientBuilder) -> Option<String> {
        b.bearer_auth()
            .unwrap()
            .header
            .map(|h| h.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn from_env_reads_every_variable() {
        let dir = Dir::new();
        let (pem_cert, pem_key) = pem_pair();
        let ca = dir.file("ca.crt", &pem_cert);
        let cert = dir.file("client-app.crt", &pem_cert);
        let key = dir.file("client-app.key", &pem_key);
        let token = dir.file("token", &format!("{SECRET}\n"));
        let b = ClientBuilder::from_lookup(env(&[
            (
                ENV_ENDPOINTS,
                Path::new(" 10.0.0.1:7001, node-2.sessiond:7001 ,,"),
            ),
            (ENV_CA, &ca),
            (ENV_CERT, &cert),
            (ENV_KEY, &key),
            (ENV_TOKEN_FILE, &token),
        ]))
        .unwrap();
        assert_eq!(b.endpoints, ["10.0.0.1:7001", "node-2.sessiond:7001"]);
        assert_eq!(b.ca_pem.as_deref(), Some(pem_cert.as_bytes()));
        assert_eq!(
            b.identity,
            Some((pem_cert.clone().into_bytes(), pem_key.into_bytes()))
        );
        // The file's newline is not part of the secret.
        assert_eq!(header(&b), Some(format!("Bearer {SECRET}")));
        // Both credentials are read, but a client presents one of them: building refuses.
        assert!(matches!(b.build(), Err(Error::Config(m)) if m.contains("not both")));

        // A CA makes scheme-less endpoints https://, so nothing is probed for TLS.
        let c = ClientBuilder::from_lookup(env(&[
            (ENV_ENDPOINTS, Path::new("10.0.0.1:7001")),
            (ENV_CA, &ca),
            (ENV_CERT, &cert),
            (ENV_KEY, &key),
        ]))
        .unwrap()
        .build()
        .unwrap();
        assert!(c.inner.nodes.iter().all(|n| n.plaintext.is_none()));

        // Nothing but endpoints: plaintext, for an --insecure node.
        let b = ClientBuilder::from_lookup(env(&[
            (ENV_ENDPOINTS, Path::new("127.0.0.1:7001")),
            (ENV_CA, Path::new("")),
        ]))
        .unwrap();
        assert!(b.ca_pem.is_none() && b.identity.is_none() && b.bearer.is_none());
        let c = b.build().unwrap();
        assert_eq!(
            c.inner.nodes[0].plaintext.as_deref(),
            Some("127.0.0.1:7001")
        );
    }

    #[test]
    fn from_env_names_what_is_missing_or_unreadable() {
        let dir = Dir::new();
        let cert = dir.file("client-app.crt", &pem_pair().0);
        let eps = Path::new("127.0.0.1:7001");

        let m = config_err(ClientBuilder::from_lookup(env(&[])));
        assert!(m.contains(ENV_ENDPOINTS), "{m}");
        let m = config_err(ClientBuilder::from_lookup(env(&[(
            ENV_ENDPOINTS,
            Path::new(" , "),
        )])));
        assert!(m.contains(ENV_ENDPOINTS) && m.contains("empty"), "{m}");

        let m = config_err(ClientBuilder::from_lookup(env(&[
            (ENV_ENDPOINTS, eps),
            (ENV_CERT, &cert),
        ])));
        assert!(m.contains(ENV_CERT) && m.contains(ENV_KEY), "{m}");
        let m = config_err(ClientBuilder::from_lookup(env(&[
            (ENV_ENDPOINTS, eps),
            (ENV_KEY, &cert),
        ])));
        assert!(m.contains(ENV_CERT) && m.contains(ENV_KEY), "{m}");

        let missing = dir.0.join("nope.crt");
        let m = config_err(ClientBuilder::from_lookup(env(&[
            (ENV_ENDPOINTS, eps),
            (ENV_CA, &missing),
        ])));
        assert!(m.starts_with(ENV_CA), "{m}");
        assert!(m.contains(&missing.display().to_string()), "{m}");

        let m = config_err(ClientBuilder::from_lookup(env(&[
            (ENV_ENDPOINTS, eps),
            (ENV_CERT, &cert),
            (ENV_KEY, &missing),
        ])));
        assert!(m.contains(ENV_KEY) && m.contains("nope.crt"), "{m}");
    }

    #[tokio::test]
    async fn token_files_hold_one_line_and_errors_never_show_it() {
        let dir = Dir::new();
        let eps = Path::new("127.0.0.1:7001");
        for (name, contents, want) in [
            ("empty", "\n", "empty"),
            (
                "two-lines",
                &format!("{SECRET}\nsecond-{SECRET}\n") as &str,
                "more than one line",
            ),
            ("missing", "", "reading"),
        ] {
            let path = if name == "missing" {
                dir.0.join("missing")
            } else {
                dir.file(name, contents)
            };
            let m = config_err(ClientBuilder::from_lookup(env(&[
                (ENV_ENDPOINTS, eps),
                (ENV_TOKEN_FILE, &path),
            ])));
            assert!(m.starts_with(ENV_TOKEN_FILE), "{m}");
            assert!(m.contains(want) && m.contains(name), "{m}");
            assert!(!m.contains(SECRET), "{m}");
        }
        // CRLF and surrounding blanks are not part of the secret either.
        let path = dir.file("crlf", &format!("  {SECRET}\r\n"));
        let b = Client::builder(["x:1"]).bearer_token_file(&path).unwrap();
        assert_eq!(header(&b), Some(format!("Bearer {SECRET}")));
        // Not a bearer credential: refused without showing it.
        for bad in [
            format!("{SECRET}\u{e9}"),
            format!("{SECRET} {SECRET}"),
            " ".into(),
        ] {
            match Client::builder(["x:1"]).bearer_token(bad).build() {
                Err(Error::Config(m)) => assert!(!m.contains(SECRET), "{m}"),
                other => panic!("{:?}", other.err()),
            }
        }
    }

    #[tokio::test]
    async fn a_certificate_and_a_bearer_token_together_are_refused() {
        let (cert, key) = pem_pair();
        let e = Client::builder(["127.0.0.1:7001"])
            .ca_cert_pem(cert.clone())
            .identity_pem(cert, key)
            .bearer_token(SECRET)
            .build()
            .err()
            .expect("refused");
        match e {
            Error::Config(m) => {
                assert!(m.contains("not both") && !m.contains(SECRET), "{m}")
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_bearer_secret_never_shows_in_debug_or_errors() {
        let (cert, key) = pem_pair();
        let b = Client::builder(["127.0.0.1:7001"])
            .ca_cert_pem(cert.clone())
            .identity_pem(cert, key)
            .bearer_token(SECRET);
        let shown = format!("{b:?} {b:#?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        // Neither are the PEMs: only whether they are set.
        assert!(!shown.contains("BEGIN"), "{shown}");

        let auth = b.bearer_auth().unwrap();
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains(SECRET) && shown.contains("<redacted>"),
            "{shown}"
        );
        let shown = format!("{:?}", auth.header);
        assert!(!shown.contains(SECRET), "sensitive header value: {shown}");

        // A bearer is for TLS only: a plaintext endpoint is refused, without the secret.
        let e = Client::builder(["http://127.0.0.1:7001"])
            .bearer_token(SECRET)
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, Error::Config(_)));
        assert!(!format!("{e} {e:?}").contains(SECRET));
        // Scheme-less endpoints take https:// with a bearer, and the client builds.
        let c = Client::builder(["127.0.0.1:7001"])
            .bearer_token(SECRET)
            .tls(ClientTlsConfig::new())
            .build()
            .unwrap();
        assert!(c.inner.nodes[0].plaintext.is_none());
    }

    #[tokio::test]
    async fn pem_settings_are_checked_at_build() {
        let (cert, key) = pem_pair();
        let not_pem = "hello";
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        for b in [
            Client::builder(["a:1"]).ca_cert_pem(not_pem),
            Client::builder(["a:1"]).ca_cert_pem(broken),
            Client::builder(["a:1"]).identity_pem(not_pem, key.clone()),
            Client::builder(["a:1"]).identity_pem(cert.clone(), cert.clone()),
        ] {
            match b.build() {
                Err(Error::Config(m)) => assert!(!m.contains("BEGIN"), "{m}"),
                other => panic!("{:?}", other.err()),
            }
        }
        assert!(Client::builder(["a:1"])
            .ca_cert_pem(cert.clone())
            .identity_pem(cert, key)
            .build()
            .is_ok());
    }

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
        assert_eq!(c.inner.routing.endpoint_at("n3:7003"), Some(2));

        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(sessiond_proto::LEADER_KEY, "n3:7003".parse().unwrap());
        c.learn_answer(0, &md);
        assert!(
            (0..10).all(|_| c.pick(true) == 2),
            "leader-only calls go to n3"
        );
        // Calls that need no leader still spread over every node.
        let picked: std::collections::BTreeSet<_> = (0..10).map(|_| c.pick(false)).collect();
        assert_eq!(picked.len(), 3);

        // An answer without the entry (served by the node asked) changes nothing.
        c.learn_answer(1, &tonic::metadata::MetadataMap::new());
        assert_eq!(c.pick(true), 2);
    }

    fn metadata(entries: &[(&'static str, &str)]) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        for (k, v) in entries {
            md.insert(*k, v.parse().unwrap());
        }
        md
    }

    fn not_leader(from_node: &str, leader_id: u64, leader_addr: &str) -> tonic::Status {
        use prost::Message;
        let d = pb::ErrorDetail {
            code: pb::ErrorCode::NotLeader as i32,
            leader_id,
            leader_addr: leader_addr.to_string(),
            ..Default::default()
        };
        let mut s = tonic::Status::failed_precondition("not the leader");
        let md = s.metadata_mut();
        md.insert_bin(
            sessiond_proto::ERROR_DETAIL_KEY,
            MetadataValue::from_bytes(&d.encode_to_vec()),
        );
        md.insert(sessiond_proto::NODE_KEY, from_node.parse().unwrap());
        s
    }

    #[tokio::test]
    async fn leader_hints_find_the_leader_by_node_id_whatever_the_spelling() {
        use sessiond_proto::{LEADER_ID_KEY, LEADER_KEY, NODE_KEY};
        // The nodes advertise 127.0.0.1:700N; this client knows them by other names.
        let c = Client::builder(["localhost:7001", "https://db-2:7002", "localhost:7003"])
            .tls(ClientTlsConfig::new())
            .build()
            .unwrap();
        let leader = |c: &Client| c.inner.routing.leader();

        // Node 1 (endpoint 0) forwarded a call to node 3. No endpoint is known to reach node
        // 3 and none is spelt 127.0.0.1:7003: leader-only calls still go round the endpoints.
        let forwarded = [
            (NODE_KEY, "1"),
            (LEADER_KEY, "127.0.0.1:7003"),
            (LEADER_ID_KEY, "3"),
        ];
        c.learn_answer(0, &metadata(&forwarded));
        assert_eq!(leader(&c), None);
        let picked: std::collections::BTreeSet<_> = (0..6).map(|_| c.pick(true)).collect();
        assert_eq!(picked.len(), 3);

        // Endpoint 2 answers as node 3: it is the leader's from now on.
        c.learn_answer(2, &metadata(&[(NODE_KEY, "3")]));
        assert!(
            (0..10).all(|_| c.pick(true) == 2),
            "leader-only calls go to node 3"
        );
        // Later hints naming node 3 resolve at once.
        c.learn_answer(0, &metadata(&forwarded));
        assert_eq!(leader(&c), Some(2));

        // Endpoint 1 is node 2; node 3 says node 2 leads now (at an address no endpoint spells).
        c.learn_answer(1, &metadata(&[(NODE_KEY, "2")]));
        c.learn(2, &not_leader("3", 2, "127.0.0.1:7002"));
        assert_eq!(leader(&c), Some(1));
        assert!(
            (0..10).all(|_| c.pick(true) == 1),
            "leader-only calls go to node 2"
        );

        // A hint whose address is spelt like an endpoint known to reach another node does not
        // pick that endpoint.
        let c = Client::builder(["127.0.0.1:7001", "127.0.0.1:7002"])
            .build()
            .unwrap();
        c.learn_answer(1, &metadata(&[(NODE_KEY, "7")]));
        c.learn(0, &not_leader("1", 2, "127.0.0.1:7002"));
        assert_eq!(leader(&c), None);
        // A hint without a node id (an older node) still matches the spelling.
        c.learn_answer(0, &metadata(&[(LEADER_KEY, "127.0.0.1:7002")]));
        assert_eq!(leader(&c), Some(1));
    }

    #[tokio::test]
    async fn a_node_that_names_no_leader_is_not_asked_again_as_the_leader() {
        use sessiond_proto::NODE_KEY;
        let c = Client::builder(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
            .build()
            .unwrap();
        let leader = |c: &Client| c.inner.routing.leader();
        c.learn_answer(0, &metadata(&[(NODE_KEY, "1")]));
        c.learn(1, &not_leader("2", 1, "127.0.0.1:7001"));
        assert_eq!(leader(&c), Some(0));
        // Node 1 answers, but names no leader (its disk failed, or an election is on):
        // leader-only calls go to the other endpoints, not back to node 1.
        c.learn(0, &not_leader("1", 0, ""));
        assert_eq!(leader(&c), None);
        let picked: std::collections::BTreeSet<_> = (0..6).map(|_| c.pick(true)).collect();
        assert_eq!(picked, [1, 2].into_iter().collect());
        // An error that is the request's own (an unknown token, say) changes nothing.
        c.learn(1, &not_leader("2", 3, "127.0.0.1:7003"));
        let mut unknown = not_leader("3", 0, "");
        {
            use prost::Message;
            let d = pb::ErrorDetail {
                code: pb::ErrorCode::NotFound as i32,
                ..Default::default()
            };
            unknown.metadata_mut().insert_bin(
                sessiond_proto::ERROR_DETAIL_KEY,
                MetadataValue::from_bytes(&d.encode_to_vec()),
            );
        }
        c.learn(2, &unknown);
        assert_eq!(leader(&c), Some(2));
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
        // Final at the first attempt, not retried until the deadline.
        assert!(matches!(e, Error::Tls(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}
