//! A node's credentials: its TLS material (cluster CA, node certificate and key), the access
//! list of client principals, and the cluster's seal key — loaded from the files the
//! configuration names, and reloadable (SIGHUP) without a restart. With `--insecure` there
//! is none of it.

use crate::auth::Authenticator;
use crate::config::Security;
use anyhow::Context;
use sessiond_security::access::AccessStore;
use sessiond_security::tls::{self, TlsFiles, TlsStore};
use sessiond_state::token::SealKey;
use std::sync::Arc;

/// Everything a node needs to speak TLS and authenticate callers.
pub struct NodeCredentials {
    secure: Option<Secure>,
    seal_key: SealKey,
}

struct Secure {
    tls: Arc<TlsStore>,
    access: Arc<AccessStore>,
    peer_server: Arc<rustls::ServerConfig>,
    client_server: Arc<rustls::ServerConfig>,
    peer_client: Arc<rustls::ClientConfig>,
}

impl NodeCredentials {
    /// Load what `security` names for node `node_id`.
    pub fn load(security: &Security, node_id: u64) -> anyhow::Result<NodeCredentials> {
        let files = match security {
            Security::Insecure => {
                return Ok(NodeCredentials {
                    secure: None,
                    // Without TLS nothing is protected anyway; replays open with the id alone.
                    seal_key: SealKey::from_bytes([0; 32]),
                });
            }
            Security::Tls(files) => files,
        };
        let store = Arc::new(
            TlsStore::load(TlsFiles {
                ca: files.ca_cert.clone(),
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
            .context("loading the node's TLS material")?,
        );
        let named = store.node_id();
        if named != Some(node_id) {
            anyhow::bail!(
                "the certificate {} names node {:?}, not this node {node_id}",
                files.cert.display(),
                named
            );
        }
        let access =
            Arc::new(AccessStore::load(&files.access_file).context("loading the access list")?);
        let seal = sessiond_security::certs::load_seal_key(&files.seal_key)
            .context("loading the seal key")?;
        Ok(NodeCredentials {
            secure: Some(Secure {
                peer_server: tls::server_config_for_peers(&store)?,
                client_server: tls::server_config_for_clients(&store)?,
                peer_client: tls::client_config_for_peers(&store)?,
                tls: store,
                access,
            }),
            seal_key: SealKey::from_bytes(*seal.bytes()),
        })
    }

    /// True under `--insecure`.
    pub fn insecure(&self) -> bool {
        self.secure.is_none()
    }

    /// The seal key of created sessions' tokens in dedup rows.
    pub fn seal_key(&self) -> SealKey {
        self.seal_key.clone()
    }

    /// How the client port authenticates callers.
    pub fn authenticator(&self) -> Authenticator {
        match &self.secure {
            Some(s) => Authenticator::Secure(s.access.clone()),
            None => Authenticator::Insecure,
        }
    }

    /// The peer port's TLS (client certificate required), if any.
    pub fn peer_server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.secure.as_ref().map(|s| s.peer_server.clone())
    }

    /// The client port's TLS (client certificate optional), if any.
    pub fn client_server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.secure.as_ref().map(|s| s.client_server.clone())
    }

    /// How this node dials peers, if over TLS.
    pub fn peer_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.secure.as_ref().map(|s| s.peer_client.clone())
    }

    /// Re-read the TLS material and the access list; either keeps its old state when its
    /// files do not load.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(s) = &self.secure else {
            return Ok(());
        };
        let tls = s.tls.reload().context("reloading the TLS material");
        let access = s.access.reload().context("reloading the access list");
        tls.and(access)
    }
}
