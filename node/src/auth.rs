//! Authentication of every call on the client port: one tower layer, in front of every gRPC
//! service (and usable in front of any HTTP router), that turns what the connection and the
//! request present — a verified client certificate or a bearer credential — into a
//! [`Caller`] on the request's extensions. Handlers never authenticate; the cores authorise
//! the caller's roles ([`Caller::require`]).
//!
//! Who a caller is:
//! - a certificate of a cluster node (it names a node id): the node itself, with every role;
//!   or, when the call carries `sessiond-forwarded-for`, the principal that node forwards for
//!   (roles from this node's access list) — the only way a forwarded identity is trusted;
//! - another client certificate: the principal named by its common name;
//! - no certificate: the principal whose bearer credential (`authorization: Bearer …`) the
//!   access list holds the hash of;
//! - a certificate and an `authorization` header both: refused, whatever either is worth —
//!   two credentials may name two principals (and request ids are scoped by principal), and a
//!   credential the node would ignore must not look accepted;
//! - nothing valid: refused with `UNAUTHENTICATED` before any handler runs.
//!
//! With `--insecure` every caller is the anonymous principal with every role.

use crate::api::caller::Caller;
use crate::api::error::{self, ApiError};
use crate::api::route::FORWARDED_FOR_KEY;
use crate::api::{grpc, json};
use crate::metrics::Metrics;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use rustls::pki_types::CertificateDer;
use sessiond_security::access::AccessStore;
use sessiond_security::{identity, Principal, Role};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// The name of the principal every caller is when the node runs without TLS.
pub const ANONYMOUS: &str = "anonymous";

/// How callers are authenticated on this node.
#[derive(Clone)]
pub enum Authenticator {
    /// `--insecure`: no authentication; everyone is [`ANONYMOUS`] with every role.
    Insecure,
    /// Certificates verified by the TLS handshake, bearer credentials by the access list.
    Secure(Arc<AccessStore>),
}

/// A principal holding every role: a cluster node, or anyone under `--insecure`.
fn with_every_role(name: &str) -> Principal {
    Principal {
        name: name.to_owned(),
        roles: Role::ALL.into_iter().collect(),
    }
}

impl Authenticator {
    /// The caller of a request with these headers, over a connection that presented
    /// `certificate` (the leaf, already verified against the cluster CA by the handshake).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<Caller, ApiError> {
        Ok(self.identify(headers, certificate)?.with_timing(headers))
    }

    /// Who the caller is (see [`Authenticator::authenticate`]).
    fn identify(
        &self,
        headers: &HeaderMap,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<Caller, ApiError> {
        let forwarded_for = headers
            .get(FORWARDED_FOR_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let access = match self {
            Authenticator::Insecure => {
                let anyone = with_every_role(ANONYMOUS);
                return Ok(match forwarded_for {
                    Some(_) => Caller::forwarded_for(anyone),
                    None => Caller::direct(anyone),
                });
            }
            Authenticator::Secure(access) => access,
        };
        if let Some(der) = certificate {
            if headers.contains_key(http::header::AUTHORIZATION) {
                return Err(error::unauthenticated(
                    "present a client certificate or a bearer credential, not both",
                ));
            }
            if let Some(node) = identity::node_id_of(der) {
                return Ok(match forwarded_for {
                    Some(name) => Caller::forwarded_for(access.for_certificate_name(&name)),
                    None => Caller::direct(with_every_role(&format!("node-{node}"))),
                });
            }
            let Some(name) = identity::principal_name_of(der) else {
                return Err(error::unauthenticated(
                    "the client certificate names no principal (common name)",
                ));
            };
            return Ok(Caller::direct(access.for_certificate_name(&name)));
        }
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(error::unauthenticated(
                "a client certificate or a bearer credential is required",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(sessiond_security::access::bearer_from_header)
            .ok_or_else(|| {
                error::unauthenticated("the authorization header is not a bearer credential")
            })?;
        access
            .authenticate_bearer(secret)
            .map(Caller::direct)
            .ok_or_else(|| error::unauthenticated("the bearer credential is not valid"))
    }
}

/// The tower layer that authenticates every request (see the module doc).
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    /// Authenticate with `auth`, counting refusals in `metrics`.
    pub fn new(auth: Authenticator, metrics: Arc<Metrics>) -> AuthLayer {
        AuthLayer {
            auth: Arc::new(auth),
            metrics,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around another.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
}

/// A response body the refusal can be written into: the tonic body the client port's
/// services answer with, or axum's (an HTTP router behind the layer).
pub trait RefusalBody: Default {
    /// A body holding `bytes`.
    fn from_bytes(bytes: bytes::Bytes) -> Self;
}

impl RefusalBody for tonic::body::Body {
    fn from_bytes(bytes: bytes::Bytes) -> Self {
        tonic::body::Body::new(axum::body::Body::from(bytes))
    }
}

impl RefusalBody for axum::body::Body {
    fn from_bytes(bytes: bytes::Bytes) -> Self {
        axum::body::Body::from(bytes)
    }
}

/// The refusal: a gRPC status for gRPC requests, the HTTP/JSON API's error answer otherwise
/// (status and `ErrorDetail` as JSON, as its handlers answer errors).
fn refusal<B, RB: RefusalBody>(req: &Request<B>, e: ApiError) -> Response<RB> {
    if json::is_grpc(req.headers()) {
        return grpc::to_status(e).into_http();
    }
    json::error_answer(&e, RB::from_bytes)
}

impl<S, B, RB> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: RefusalBody + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        let leaf = certs.as_ref().and_then(|c| c.first());
        match self.layer.auth.authenticate(req.headers(), leaf) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                // The clone is the one that was made ready; keep a fresh one for next time.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { ready.call(req).await })
            }
            Err(e) => {
                self.layer.metrics.auth_refused(e.kind);
                let r = refusal(&req, e);
                Box::pin(async move { Ok(r) })
            }
        }
    }
}
