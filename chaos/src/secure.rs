//! The harness's cluster credentials: clusters run as shipped, with TLS on both ports,
//! mutual TLS between peers and every call authenticated. One throwaway CA per harness
//! process serves every schedule of both layers (node ids restart at 1 for each cluster, and
//! clients reach nodes by 127.0.0.1, which every node certificate names); the harness's
//! clients present the certificate of principal [`PRINCIPAL`], which holds every role.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The principal the harness's clients authenticate as.
pub const PRINCIPAL: &str = "chaos";

/// Node certificates made up front: founding members plus replacements of a long schedule.
const NODE_CERTS: u64 = 64;

struct Credentials {
    /// Kept for the process's life; removed when it exits normally.
    _dir: tempfile::TempDir,
    path: PathBuf,
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

static CREDENTIALS: OnceLock<Result<Credentials, String>> = OnceLock::new();

fn make() -> anyhow::Result<Credentials> {
    let dir = tempfile::Builder::new()
        .prefix("sessiond-chaos-certs-")
        .tempdir()?;
    let path = dir.path().to_path_buf();
    sessiond::certs::ensure_local(
        &path,
        NODE_CERTS,
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
        &[(PRINCIPAL.to_owned(), sessiond_security::Role::ALL.to_vec())],
    )?;
    let read =
        |name: String| std::fs::read(path.join(&name)).with_context(|| format!("reading {name}"));
    Ok(Credentials {
        ca: read(sessiond_security::certs::CA_CERT.into())?,
        cert: read(sessiond_security::certs::client_cert_file(PRINCIPAL))?,
        key: read(sessiond_security::certs::client_key_file(PRINCIPAL))?,
        _dir: dir,
        path,
    })
}

fn credentials() -> anyhow::Result<&'static Credentials> {
    CREDENTIALS
        .get_or_init(|| make().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("making the harness's certificates: {e}"))
}

/// The certificates directory every node of every cluster of this process is started with
/// (`--certs-dir`).
pub fn certs_dir() -> anyhow::Result<&'static Path> {
    Ok(&credentials()?.path)
}

/// TLS settings of the harness's clients.
pub fn client_tls() -> anyhow::Result<ClientTlsConfig> {
    let c = credentials()?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&c.ca))
        .identity(Identity::from_pem(&c.cert, &c.key)))
}

/// A lazily connecting endpoint for `url` (`https://host:port`) with the harness's TLS.
pub fn endpoint(url: &str) -> anyhow::Result<tonic::transport::Endpoint> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?.tls_config(client_tls()?)?)
}
