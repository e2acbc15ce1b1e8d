//! sessiond through its HTTP/JSON API (`POST /v1/...`, canonical proto3 JSON) instead of gRPC:
//! the same cluster, TLS material, client certificate and request messages as
//! [`super::sessiond`], so the two rows of a report differ only in how a client talks to the
//! store. Every mapping matches the gRPC backend call for call: a fresh 16-byte request id per
//! mutation, reused on every retry; update is a compare-and-swap on the version last seen;
//! `get` is linearizable unless stale; writes and linearizable gets go to the leader learnt
//! from answers (`sessiond-node`, `sessiond-leader-id`, `sessiond-leader` headers), stale gets
//! round the nodes. Retries follow the client crate's policy: 503/504 and failed connections,
//! same body, jittered backoff, bounded attempts and deadline.
//!
//! Connections: **HTTP/1.1 with keep-alive, one connection per worker and node**, opened on
//! first use and kept for the whole run. That is the fair pick of the two: a worker has one
//! request in flight at a time, so an HTTP/2 connection per worker would carry one stream at a
//! time and pay HTTP/2's framing, HPACK and flow control for multiplexing it never uses;
//! HTTP/1.1 keep-alive is the cheapest framing for that pattern and what the JSON API's
//! clients (Python, Node, shell tools) use by default. The gRPC client instead multiplexes
//! every worker onto one HTTP/2 connection per node, as gRPC clients do; the report compares
//! each protocol as its clients use it.

use super::Handle;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sessiond_client::Routing;
use sessiond_proto::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The retry policy of the client crate's defaults, so both backends recover alike.
/// How long one attempt (connect, send, read the whole answer) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one logical call may take, retries included.
const DEADLINE: Duration = Duration::from_secs(15);
const MAX_ATTEMPTS: u32 = 30;
/// First backoff between attempts (jittered, doubled up to a second).
const BACKOFF: Duration = Duration::from_millis(20);

/// A connection to one node over HTTP/1.1, its handshake done.
type Conn = SendRequest<Full<Bytes>>;

/// One worker's client. Clones share the cluster's settings and what answers taught about
/// the leader, but not connections: each clone (each worker) opens its own.
pub struct Http {
    shared: Arc<Shared>,
    /// By endpoint index: this worker's keep-alive connection, if open.
    conns: Vec<Option<Conn>>,
}

impl Clone for Http {
    fn clone(&self) -> Http {
        Http {
            shared: self.shared.clone(),
            conns: self.shared.nodes.iter().map(|_| None).collect(),
        }
    }
}

struct Shared {
    nodes: Vec<Node>,
    /// `None`: the nodes run `--insecure` (plaintext, no authentication).
    tls: Option<tokio_rustls::TlsConnector>,
    /// Which endpoint a call goes to, kept as the gRPC client keeps it.
    routing: Routing,
}

struct Node {
    /// `host:port` to connect to, also the `Host` header.
    authority: String,
    /// The name the node's certificate is checked against (the endpoint's host).
    server_name: rustls::pki_types::ServerName<'static>,
}

/// An answer to one attempt, whatever its status.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Http {
    /// A client of the nodes at `endpoints` (`https://host:port`, or `http://` for nodes run
    /// `--insecure`), over TLS with `tls` (the cluster CA and the driver's client
    /// certificate) when given. Connects lazily.
    pub fn connect(
        endpoints: &[String],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Http> {
        anyhow::ensure!(!endpoints.is_empty(), "no endpoints");
        let nodes = endpoints
            .iter()
            .map(|e| {
                let (scheme, authority) = e.split_once("://").unwrap_or(("https", e));
                let authority = authority.trim_end_matches('/').to_string();
                anyhow::ensure!(
                    (scheme == "https") == tls.is_some(),
                    "endpoint {e}: https needs the cluster's TLS settings, http runs without"
                );
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let server_name = rustls::pki_types::ServerName::try_from(host)
                    .with_context(|| format!("endpoint {e}: not a host name"))?;
                Ok(Node {
                    authority,
                    server_name,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The same configuration as the gRPC client's, but offering HTTP/1.1 by ALPN.
        let tls = tls.map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        let shared = Arc::new(Shared {
            routing: Routing::new(nodes.iter().map(|n| n.authority.clone())),
            nodes,
            tls,
        });
        Ok(Http {
            conns: shared.nodes.iter().map(|_| None).collect(),
            shared,
        })
    }

    pub async fn create(&mut self, user: &str, data: &[u8]) -> anyhow::Result<Handle> {
        let req = pb::CreateSessionRequest {
            user_id: user.to_string(),
            data: data.to_vec(),
            request_id: request_id(),
            ..pb::CreateSessionRequest::default()
        };
        let r: pb::CreateSessionResponse = self.call("/v1/sessions/create", &req, true).await?;
        Ok(Handle {
            token: r.token,
            user: user.to_string(),
            version: session(r.session)?.version,
            ..Handle::default()
        })
    }

    pub async fn get(&mut self, h: &Handle, stale: bool) -> anyhow::Result<()> {
        let consistency = if stale {
            pb::Consistency::Stale
        } else {
            pb::Consistency::Linearizable
        };
        let req = pb::GetSessionRequest {
            token: h.token.clone(),
            consistency: consistency as i32,
            touch: false,
        };
        let r: pb::GetSessionResponse = self.call("/v1/sessions/get", &req, !stale).await?;
        session(r.session)?;
        Ok(())
    }

    pub async fn rotate(&mut self, h: &mut Handle) -> anyhow::Result<()> {
        let req = pb::RotateTokenRequest {
            token: h.token.clone(),
            request_id: request_id(),
        };
        let r: pb::RotateTokenResponse = self.call("/v1/sessions/rotate", &req, true).await?;
        h.version = session(r.session)?.version;
        h.token = r.token;
        Ok(())
    }

    pub async fn update(&mut self, h: &mut Handle, data: &[u8]) -> anyhow::Result<()> {
        let req = pb::UpdateSessionRequest {
            session: token_ref(&h.token),
            expected_version: h.version,
            data: Some(data.to_vec()),
            attributes: None,
            request_id: request_id(),
        };
        let r: pb::UpdateSessionResponse = self.call("/v1/sessions/update", &req, true).await?;
        h.version = session(r.session)?.version;
        Ok(())
    }

    pub async fn revoke(&mut self, h: &Handle) -> anyhow::Result<()> {
        let req = pb::RevokeSessionRequest {
            session: token_ref(&h.token),
            reason: "logout".into(),
            request_id: request_id(),
        };
        let _: pb::RevokeSessionResponse = self.call("/v1/sessions/revoke", &req, true).await?;
        Ok(())
    }

    /// One logical call: `req` encoded once and sent as is on every attempt (its request id
    /// included, which makes retries exactly-once), until a node answers something other than
    /// "unavailable" or the attempts or the deadline run out.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        path: &'static str,
        req: &Req,
        prefer_leader: bool,
    ) -> anyhow::Result<Resp> {
        let body = Bytes::from(serde_json::to_vec(req).context("encoding the request")?);
        let deadline = Instant::now() + DEADLINE;
        let mut backoff = BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let i = self.shared.routing.pick(prefer_leader);
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.exchange(i, path, &body));
            let last = match attempt.await {
                Ok(Ok(a)) if a.status.is_success() => {
                    self.shared.learn_answer(i, &a.headers);
                    return serde_json::from_slice(&a.body)
                        .with_context(|| format!("{path}: the answer is not the expected JSON"));
                }
                Ok(Ok(a)) => {
                    let detail: pb::ErrorDetail =
                        serde_json::from_slice(&a.body).unwrap_or_default();
                    self.shared.learn_node(i, &a.headers);
                    let code =
                        pb::ErrorCode::try_from(detail.code).unwrap_or(pb::ErrorCode::Unspecified);
                    let e = format!(
                        "{path}: HTTP {} {}: {}",
                        a.status.as_u16(),
                        code.as_str_name(),
                        detail.message
                    );
                    let unavailable =
                        matches!(code, pb::ErrorCode::Unavailable | pb::ErrorCode::NotLeader)
                            || (code == pb::ErrorCode::Unspecified && a.status.is_server_error());
                    if !unavailable {
                        anyhow::bail!(e);
                    }
                    if detail.leader_id != 0 || !detail.leader_addr.is_empty() {
                        self.shared.routing.leader_named(
                            (detail.leader_id != 0).then_some(detail.leader_id),
                            Some(detail.leader_addr.as_str()).filter(|a| !a.is_empty()),
                        );
                    } else {
                        self.shared.routing.forget_leader(i);
                    }
                    e
                }
                Ok(Err(e)) => {
                    self.conns[i] = None;
                    self.shared.routing.forget_leader(i);
                    if is_tls_failure(&e) {
                        // A wrong CA or certificate fails every attempt alike.
                        return Err(e.context(format!("{path}: TLS with {}", self.authority(i))));
                    }
                    format!("{path}: {}: {e:#}", self.authority(i))
                }
                Err(_) => {
                    // The connection may hold a half-read answer: never reuse it.
                    self.conns[i] = None;
                    self.shared.routing.forget_leader(i);
                    format!("{path}: attempt timed out after {ATTEMPT_TIMEOUT:?}")
                }
            };
            let jitter = backoff.mul_f64(rand::random::<f64>());
            if attempts >= MAX_ATTEMPTS || Instant::now() + jitter >= deadline {
                anyhow::bail!("gave up after {attempts} attempts; last: {last}");
            }
            tokio::time::sleep(jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn authority(&self, i: usize) -> &str {
        &self.shared.nodes[i].authority
    }

    /// One attempt on endpoint `i`: `POST path` on this worker's connection to it (opened
    /// if there is none, or the previous one closed), the whole answer read, so that the
    /// connection is ready for the next request.
    async fn exchange(&mut self, i: usize, path: &str, body: &Bytes) -> anyhow::Result<Answer> {
        let reusable = match self.conns[i].take() {
            Some(mut c) => c.ready().await.is_ok().then_some(c),
            None => None,
        };
        let conn = match reusable {
            Some(c) => c,
            None => self.open(i).await?,
        };
        let conn = self.conns[i].insert(conn);
        let req = http::Request::post(path)
            .header(http::header::HOST, &self.shared.nodes[i].authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .context("building the request")?;
        let answer = conn.send_request(req).await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.conns[i] = None;
                return Err(e).context("sending the request");
            }
        };
        let (parts, incoming) = answer.into_parts();
        let body = match incoming.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conns[i] = None;
                return Err(e).context("reading the answer");
            }
        };
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A new HTTP/1.1 connection to endpoint `i` (TCP_NODELAY, as the gRPC client sets it),
    /// over TLS unless the cluster runs in plaintext; its driver runs as its own task and
    /// ends when the connection is dropped.
    async fn open(&self, i: usize) -> anyhow::Result<Conn> {
        let node = &self.shared.nodes[i];
        let tcp = tokio::net::TcpStream::connect(&node.authority)
            .await
            .with_context(|| format!("connecting to {}", node.authority))?;
        tcp.set_nodelay(true)?;
        match &self.shared.tls {
            Some(tls) => {
                let stream = tls.connect(node.server_name.clone(), tcp).await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                Ok(sender)
            }
            None => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                Ok(sender)
            }
        }
    }
}

impl Shared {
    /// A successful answer of endpoint `i`: the node that gave it, and the leader named by a
    /// node that forwarded the call (so the next leader-only call skips the extra hop).
    fn learn_answer(&self, i: usize, headers: &http::HeaderMap) {
        self.learn_node(i, headers);
        self.routing.leader_named(
            header_id(headers, sessiond_proto::LEADER_ID_KEY),
            headers
                .get(sessiond_proto::LEADER_KEY)
                .and_then(|v| v.to_str().ok()),
        );
    }

    /// Endpoint `i` reaches the node its answer names.
    fn learn_node(&self, i: usize, headers: &http::HeaderMap) {
        self.routing
            .answered(i, header_id(headers, sessiond_proto::NODE_KEY));
    }
}

/// A decimal node id in header `name`.
fn header_id(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Whether a failed attempt is a TLS handshake failure (a rustls error in its sources).
fn is_tls_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<rustls::Error>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>())
    })
}

/// A fresh request id for one logical mutation (16 random bytes, as the client crate draws).
fn request_id() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

fn token_ref(token: &str) -> Option<pb::SessionRef> {
    Some(pb::SessionRef {
        by: Some(pb::session_ref::By::Token(token.to_string())),
    })
}

fn session(s: Option<pb::Session>) -> anyhow::Result<pb::Session> {
    s.context("answer without a session")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_canonical_proto3_json() {
        let req = pb::UpdateSessionRequest {
            session: token_ref("sdt1_x"),
            expected_version: 7,
            data: Some(b"hi".to_vec()),
            attributes: None,
            request_id: vec![0; 16],
        };
        let v: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(v["session"]["token"], "sdt1_x");
        assert_eq!(v["expectedVersion"], "7");
        assert_eq!(v["data"], "aGk=");
        assert_eq!(v["requestId"], "AAAAAAAAAAAAAAAAAAAAAA==");
    }

    #[test]
    fn endpoints_match_the_security_mode() {
        let plain = Http::connect(&["http://127.0.0.1:1".into()], None).unwrap();
        assert_eq!(plain.shared.nodes[0].authority, "127.0.0.1:1");
        assert!(Http::connect(&["https://127.0.0.1:1".into()], None).is_err());
    }

    #[test]
    fn answers_headers_find_the_leader_by_node_id_or_address() {
        let h = Http::connect(
            &["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            None,
        )
        .unwrap();
        let headers = |entries: &[(&'static str, &str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in entries {
                m.insert(*k, http::HeaderValue::from_str(v).unwrap());
            }
            m
        };
        h.shared
            .learn_node(1, &headers(&[(sessiond_proto::NODE_KEY, "5")]));
        // Node 1 forwarded a call to the leader, node 5.
        h.shared.learn_answer(
            0,
            &headers(&[
                (sessiond_proto::NODE_KEY, "1"),
                (sessiond_proto::LEADER_ID_KEY, "5"),
            ]),
        );
        assert_eq!(h.shared.routing.pick(true), 1);
        h.shared.routing.forget_leader(1);
        h.shared
            .learn_answer(1, &headers(&[(sessiond_proto::LEADER_KEY, "127.0.0.1:1")]));
        assert_eq!(h.shared.routing.pick(true), 0);
    }
}
