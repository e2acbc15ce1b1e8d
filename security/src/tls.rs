//! rustls configurations for the peer port, the client port and outgoing connections, over
//! TLS material that reloads without a restart.
//!
//! The crypto provider is ring's, passed explicitly to every builder
//! (`builder_with_provider`), never installed as a process-wide default: nothing else in the
//! process can change what these configurations use, and no `install_default` race exists.
//! ring rather than aws-lc-rs because ring builds with `cc` alone (no cmake, no nasm, no
//! bindgen), is small, and offers everything sessiond needs (ECDSA P-256, TLS 1.3/1.2 AEADs).
//!
//! Reloading: the configurations are built once; their certificate resolvers and verifiers
//! read the [`TlsStore`] at every handshake, so [`TlsStore::reload`] takes effect for every new
//! handshake (existing connections keep the identity they were established with). Session
//! resumption is disabled on every configuration here: a resumed TLS 1.3 session skips
//! certificate verification, which would let a client keep its access past a CA change.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

use crate::certs::{read, warn_if_readable_by_others};
use crate::error::{Error, Result};
use crate::identity;

/// The ALPN protocol every configuration here offers: gRPC runs over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// The ALPN protocol the client port offers besides `h2`, for HTTP/JSON clients that speak
/// only HTTP/1.1 (Python's standard library, many language runtimes' defaults).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider of every configuration here: ring's default provider (see the module
/// documentation for why ring). Also the source of random bytes for credentials and keys.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The server name to dial node `id` by on the peer port, `node-<id>.sessiond`. The peer's
/// certificate must name it, so a peer answering with another node's certificate fails the
/// handshake.
pub fn peer_server_name(id: u64) -> ServerName<'static> {
    // A `node-<digits>.sessiond` name is always a valid DNS name; the fallback is unreachable
    // and would fail every certificate check rather than match anything.
    ServerName::try_from(identity::node_dns_name(id))
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()))
}

/// The files of a node's (or client's) TLS material, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) to trust (several during a CA rotation).
    pub ca: PathBuf,
    /// This end's certificate, leaf first, then any intermediates.
    pub cert: PathBuf,
    /// This end's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Which port a client-certificate verifier serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// Peers: a certificate is required, and it must name a node id.
    Peer,
    /// Clients: a certificate is optional (bearer credentials otherwise), verified if given.
    Client,
}

/// One consistent set of loaded material; replaced as a whole on reload.
struct Material {
    certified: Arc<CertifiedKey>,
    peer_clients: Arc<dyn ClientCertVerifier>,
    app_clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

impl Material {
    fn client_verifier(&self, port: Port) -> &Arc<dyn ClientCertVerifier> {
        match port {
            Port::Peer => &self.peer_clients,
            Port::Client => &self.app_clients,
        }
    }
}

/// A node's TLS material (CA roots, certificate chain, key) with the verifiers built from
/// it, replaced atomically by [`TlsStore::reload`].
pub struct TlsStore {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
}

impl fmt::Debug for TlsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsStore {
    /// Loads the files; errors name the file at fault. Wrap the store in an `Arc` to build
    /// configurations on it.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let material = load_material(&files)?;
        Ok(TlsStore {
            files,
            current: RwLock::new(Arc::new(material)),
        })
    }

    /// Re-reads every file. Only if all of them load (and the key belongs to the
    /// certificate) is the material replaced, at once, for every configuration built on this
    /// store; otherwise the old material stays in force and the error is returned.
    pub fn reload(&self) -> Result<()> {
        match load_material(&self.files) {
            Ok(material) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
                tracing::info!(cert = %self.files.cert.display(), ca = %self.files.ca.display(), "TLS material reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS material not reloaded; keeping the previous one");
                Err(e)
            }
        }
    }

    /// The files this store loads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The leaf certificate in force now.
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        self.material().certified.cert.first().cloned()
    }

    /// The node id the certificate in force names (`node-<id>.sessiond`), if any: a node
    /// checks at start that it is its own.
    pub fn node_id(&self) -> Option<u64> {
        identity::node_id_of(self.material().certified.cert.first()?)
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn load_material(files: &TlsFiles) -> Result<Material> {
    let provider = provider();
    let roots = Arc::new(load_roots(&files.ca)?);
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        _ => Error::PrivateKey {
            path: files.key.clone(),
            reason: "a private key of a kind that cannot be used (ECDSA, Ed25519 or RSA expected)",
        },
    })?;
    let ca_err = |e: rustls::server::VerifierBuilderError| Error::Certificate {
        path: files.ca.clone(),
        reason: e.to_string(),
    };
    let peer_clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(ca_err)?;
    let app_clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(ca_err)?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(ca_err)?;
    Ok(Material {
        certified: Arc::new(certified),
        peer_clients,
        app_clients,
        servers,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate {
            path: path.to_owned(),
            reason: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Certificate {
            path: path.to_owned(),
            reason: "no PEM certificate".into(),
        });
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| Error::Certificate {
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The private key of a PEM file. The PEM parser's own error is not repeated: it can quote
/// what it could not decode, which here would be part of a key.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path)?;
    warn_if_readable_by_others(path);
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| Error::PrivateKey {
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (PKCS#8, PKCS#1 or SEC1)"
            }
            _ => "not a valid PEM private key",
        },
    })
}

/// Serves the store's current certificate whatever the SNI: a node has one identity.
#[derive(Debug)]
struct StoreCert(Arc<TlsStore>);

impl ResolvesServerCert for StoreCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().certified.clone())
    }
}

impl ResolvesClientCert for StoreCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates with the WebPKI verifier of the store's current CA; on the
/// peer port it also requires the certificate to name a node id, so a client certificate of
/// the same CA cannot take part in Raft.
#[derive(Debug)]
struct StoreClientVerifier {
    store: Arc<TlsStore>,
    port: Port,
}

impl ClientCertVerifier for StoreClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.port == Port::Peer
    }

    /// No hints: the CA list changes on reload and this returns a borrowed slice. An empty
    /// list tells clients to send whatever certificate they have, which is what ours do.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let material = self.store.material();
        let verified = material.client_verifier(self.port).verify_client_cert(
            end_entity,
            intermediates,
            now,
        )?;
        if self.port == Port::Peer && identity::node_id_of(end_entity).is_none() {
            tracing::debug!("peer certificate refused: it names no node id");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.store
            .material()
            .client_verifier(self.port)
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.store
            .material()
            .client_verifier(self.port)
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store
            .material()
            .client_verifier(self.port)
            .supported_verify_schemes()
    }
}

/// Verifies server certificates (chain to the current CA, name = the name dialled) with the
/// WebPKI verifier of the store's current CA.
#[derive(Debug)]
struct StoreServerVerifier(Arc<TlsStore>);

impl ServerCertVerifier for StoreServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.0.material().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .material()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .material()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.material().servers.supported_verify_schemes()
    }
}

/// Peers are all sessiond nodes of the same release: TLS 1.3 only.
const PEER_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
/// Applications may have older stacks: TLS 1.3 and 1.2.
const CLIENT_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn tls_err(e: rustls::Error) -> Error {
    Error::Tls(e.to_string())
}

fn server_config(
    store: &Arc<TlsStore>,
    port: Port,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(StoreClientVerifier {
            store: store.clone(),
            port,
        }))
        .with_cert_resolver(Arc::new(StoreCert(store.clone())));
    config.alpn_protocols = match port {
        Port::Peer => vec![ALPN_H2.to_vec()],
        Port::Client => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
    };
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The peer port's server configuration: TLS 1.3, ALPN `h2`, a client certificate is
/// required, must chain to the cluster CA and must name a node id (read it with
/// [`identity::node_id_of`] on [`identity::peer_leaf`] of the accepted connection).
pub fn server_config_for_peers(store: &Arc<TlsStore>) -> Result<Arc<ServerConfig>> {
    server_config(store, Port::Peer, PEER_VERSIONS)
}

/// The client port's server configuration: TLS 1.3 or 1.2, ALPN `h2` (gRPC and JSON) or
/// `http/1.1` (JSON only); a client certificate
/// is optional and verified against the CA when given (a bad one fails the handshake);
/// without one the caller must present a bearer credential.
pub fn server_config_for_clients(store: &Arc<TlsStore>) -> Result<Arc<ServerConfig>> {
    server_config(store, Port::Client, CLIENT_VERSIONS)
}

/// The configuration a node dials peers with: TLS 1.3, ALPN `h2`, presents the store's
/// certificate, and accepts only a server certificate of the current CA naming the server
/// name dialled, which must be [`peer_server_name`] of the node id meant.
pub fn client_config_for_peers(store: &Arc<TlsStore>) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PEER_VERSIONS)
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(StoreServerVerifier(store.clone())))
        .with_client_cert_resolver(Arc::new(StoreCert(store.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A configuration for applications and the CLI (loaded once, not reloaded): trusts the CA
/// certificates in `ca`, presents the certificate and key of `client` (`(cert, key)`) if
/// given, TLS 1.3 or 1.2, ALPN `h2`. Dial a node by a host its certificate names.
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(CLIENT_VERSIONS)
        .map_err(tls_err)?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, der)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                        cert: cert.to_owned(),
                        key: key.to_owned(),
                    },
                    _ => Error::PrivateKey {
                        path: key.to_owned(),
                        reason: "a private key of a kind that cannot be used (ECDSA, Ed25519 or RSA expected)",
                    },
                })?
        }
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}
