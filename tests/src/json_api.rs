//! A client of the HTTP/JSON API for tests: one TLS connection per call (HTTP/1.1 or HTTP/2 by
//! ALPN), trusting the cluster CA, authenticated by a principal's certificate, a bearer
//! credential, or nothing.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How a [`JsonClient`] authenticates.
#[derive(Clone)]
pub enum Auth {
    /// The certificate of a principal of the harness (`client-<name>.crt`).
    Certificate(String),
    /// `Authorization: Bearer <secret>`.
    Bearer(String),
    /// Nothing.
    None,
}

/// A JSON API client of one node.
#[derive(Clone)]
pub struct JsonClient {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    bearer: Option<String>,
    http2: bool,
}

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer {} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl JsonClient {
    /// A client of the node at `addr` trusting `certs/ca.crt`, over HTTP/1.1.
    pub fn new(certs: &Path, addr: &str, auth: Auth) -> JsonClient {
        let ca = certs.join("ca.crt");
        let (cert, key, bearer) = match &auth {
            Auth::Certificate(p) => (
                Some(certs.join(format!("client-{p}.crt"))),
                Some(certs.join(format!("client-{p}.key"))),
                None,
            ),
            Auth::Bearer(s) => (None, None, Some(s.clone())),
            Auth::None => (None, None, None),
        };
        let pair = cert.as_deref().zip(key.as_deref());
        let tls = sessiond_security::tls::client_config(&ca, pair).expect("client TLS config");
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        JsonClient {
            addr: addr.to_owned(),
            tls: Arc::new(tls),
            bearer,
            http2: false,
        }
    }

    /// The same client speaking HTTP/2 (ALPN `h2`).
    pub fn http2(mut self) -> JsonClient {
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        self.tls = Arc::new(tls);
        self.http2 = true;
        self
    }

    /// `POST path` with `body` as `content_type`; the whole answer (10 s at most).
    pub async fn post_as(&self, path: &str, content_type: &str, body: &str) -> Answer {
        let mut r = self.send(path, content_type, body).await;
        let collected = tokio::time::timeout(Duration::from_secs(10), r.body_mut().collect())
            .await
            .expect("answer body in time")
            .expect("answer body");
        let (parts, _) = r.into_parts();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.post_as(path, "application/json", &body.to_string())
            .await
    }

    /// `POST path` with `body` as JSON, returning the answer as it starts (for streams).
    pub async fn send(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> http::Response<hyper::body::Incoming> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let io = TokioIo::new(tls);
        let mut req = http::Request::post(format!("https://{}{path}", self.addr))
            .header(http::header::CONTENT_TYPE, content_type);
        if let Some(secret) = &self.bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let call = async {
            if self.http2 {
                let (mut tx, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                tx.send_request(req).await
            } else {
                let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                tx.send_request(req).await
            }
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("answer in time")
            .expect("HTTP exchange")
    }
}

/// Standard base64, as proto3 JSON writes `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
