//! Real TLS handshakes (tokio-rustls over an in-memory duplex pipe) with certificates made by
//! `certs`, through the configurations of `tls`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use sessiond_security::certs::{self, Ca};
use sessiond_security::identity;
use sessiond_security::tls::{self, TlsFiles, TlsStore};
use sessiond_security::Error;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the server saw of a successful handshake.
#[derive(Debug)]
struct ServerSaw {
    client_node: Option<u64>,
    client_name: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// What the client saw of a successful handshake.
#[derive(Debug)]
struct ClientSaw {
    server_cert: CertificateDer<'static>,
    server_node: Option<u64>,
}

/// Runs one handshake; each side's result is an error string if it failed. The server
/// writes two bytes after accepting and the client reads them: in TLS 1.3 the client's
/// handshake finishes before the server has checked the client's certificate, so only that
/// read tells the client it was accepted.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> (Result<ServerSaw, String>, Result<ClientSaw, String>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut stream = tokio_rustls::TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = stream.get_ref().1;
        let leaf = identity::peer_leaf(conn);
        let saw = ServerSaw {
            client_node: leaf.and_then(identity::node_id_of),
            client_name: leaf.and_then(identity::principal_name_of),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        stream.write_all(b"ok").await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        Ok(saw)
    };
    let client_side = async move {
        let mut stream = tokio_rustls::TlsConnector::from(client)
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut ok = [0u8; 2];
        stream
            .read_exact(&mut ok)
            .await
            .map_err(|e| e.to_string())?;
        let server_cert = identity::peer_leaf(stream.get_ref().1)
            .cloned()
            .ok_or("no server certificate")?;
        Ok(ClientSaw {
            server_node: identity::node_id_of(&server_cert),
            server_cert,
        })
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(server_side, client_side)
    })
    .await
    .expect("the handshake hung")
}

/// A CA in `root/<name>/` with its node and client certificates in the same directory.
struct Authority {
    dir: std::path::PathBuf,
    ca: Ca,
}

impl Authority {
    fn new(root: &Path, name: &str) -> Authority {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = certs::create_ca(&dir).unwrap();
        Authority { dir, ca }
    }

    fn node(&self, id: u64) -> TlsFiles {
        certs::create_node(&self.dir, &self.ca, id, ["localhost", "127.0.0.1"]).unwrap()
    }

    fn node_store(&self, id: u64) -> Arc<TlsStore> {
        Arc::new(TlsStore::load(self.node(id)).unwrap())
    }

    fn client(&self, name: &str) -> TlsFiles {
        certs::create_client(&self.dir, &self.ca, name).unwrap()
    }
}

fn app_config(files: &TlsFiles) -> Arc<ClientConfig> {
    tls::client_config(&files.ca, Some((&files.cert, &files.key))).unwrap()
}

#[tokio::test]
async fn peer_handshake_succeeds_both_ways_and_names_node_ids() {
    let tmp = TempDir::new().unwrap();
    let a = Authority::new(tmp.path(), "a");
    let (one, two) = (a.node_store(1), a.node_store(2));
    assert_eq!(one.node_id(), Some(1));

    // 2 dials 1, then 1 dials 2.
    for (server, client, server_id, client_id) in [(&one, &two, 1, 2), (&two, &one, 2, 1)] {
        let (s, c) = handshake(
            tls::server_config_for_peers(server).unwrap(),
            tls::client_config_for_peers(client).unwrap(),
            tls::peer_server_name(server_id),
        )
        .await;
        let s = s.unwrap();
        let c = c.unwrap();
        assert_eq!(
            s.client_node,
            Some(client_id),
            "the server knows who dialled"
        );
        assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(c.server_node, Some(server_id));
    }
}

#[tokio::test]
async fn peer_server_refuses_a_client_certificate_of_another_ca() {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (
        Authority::new(tmp.path(), "a"),
        Authority::new(tmp.path(), "b"),
    );
    let server = a.node_store(1);
    // Node 2 of CA b, trusting CA a so that only the server's check can refuse it.
    let foreign = b.node(2);
    let foreign = Arc::new(
        TlsStore::load(TlsFiles {
            ca: a.ca.cert_path().to_owned(),
            ..foreign
        })
        .unwrap(),
    );
    let (s, c) = handshake(
        tls::server_config_for_peers(&server).unwrap(),
        tls::client_config_for_peers(&foreign).unwrap(),
        tls::peer_server_name(1),
    )
    .await;
    let e = s.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(c.is_err());
}

#[tokio::test]
async fn no_client_certificate_is_refused_by_peer_port_and_accepted_by_client_port() {
    let tmp = TempDir::new().unwrap();
    let a = Authority::new(tmp.path(), "a");
    let server = a.node_store(1);
    let anonymous = tls::client_config(a.ca.cert_path(), None).unwrap();

    let (s, c) = handshake(
        tls::server_config_for_peers(&server).unwrap(),
        anonymous.clone(),
        tls::peer_server_name(1),
    )
    .await;
    let e = s.unwrap_err();
    assert!(e.contains("no certificates"), "{e}");
    assert!(c.is_err());

    let (s, c) = handshake(
        tls::server_config_for_clients(&server).unwrap(),
        anonymous,
        ServerName::try_from("localhost").unwrap(),
    )
    .await;
    let s = s.unwrap();
    assert_eq!(
        s.client_name, None,
        "anonymous: the caller must bring a bearer credential"
    );
    assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
    c.unwrap();
}

#[tokio::test]
async fn peer_server_refuses_a_principal_certificate_of_the_same_ca() {
    let tmp = TempDir::new().unwrap();
    let a = Authority::new(tmp.path(), "a");
    let server = a.node_store(1);
    let web = app_config(&a.client("web"));
    let (s, c) = handshake(
        tls::server_config_for_peers(&server).unwrap(),
        web,
        tls::peer_server_name(1),
    )
    .await;
    let e = s.unwrap_err();
    assert!(e.contains("ApplicationVerificationFailure"), "{e}");
    assert!(c.is_err());
}

#[tokio::test]
async fn client_port_reads_the_principal_and_refuses_a_foreign_client_certificate() {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (
        Authority::new(tmp.path(), "a"),
        Authority::new(tmp.path(), "b"),
    );
    let server = a.node_store(1);
    let server_config = tls::server_config_for_clients(&server).unwrap();

    // By IP address and by host name, both in the node certificate.
    for (host, principal) in [("127.0.0.1", "web"), ("localhost", "billing")] {
        let (s, c) = handshake(
            server_config.clone(),
            app_config(&a.client(principal)),
            ServerName::try_from(host).unwrap(),
        )
        .await;
        assert_eq!(s.unwrap().client_name.as_deref(), Some(principal));
        assert_eq!(c.unwrap().server_node, Some(1));
    }

    // A certificate of another CA, trusting the right CA itself: refused, not ignored.
    let foreign = b.client("web");
    let foreign =
        tls::client_config(a.ca.cert_path(), Some((&foreign.cert, &foreign.key))).unwrap();
    let (s, c) = handshake(
        server_config,
        foreign,
        ServerName::try_from("localhost").unwrap(),
    )
    .await;
    assert!(s.unwrap_err().contains("UnknownIssuer"));
    assert!(c.is_err());
}

#[tokio::test]
async fn dialling_node_3_and_reaching_node_2_fails() {
    let tmp = TempDir::new().unwrap();
    let a = Authority::new(tmp.path(), "a");
    let (two, one) = (a.node_store(2), a.node_store(1));
    let (s, c) = handshake(
        tls::server_config_for_peers(&two).unwrap(),
        tls::client_config_for_peers(&one).unwrap(),
        tls::peer_server_name(3),
    )
    .await;
    let e = c.unwrap_err();
    assert!(e.contains("not valid for name \"node-3.sessiond\""), "{e}");
    assert!(s.is_err());
}

#[tokio::test]
async fn reload_switches_certificate_and_ca_for_new_handshakes() {
    let tmp = TempDir::new().unwrap();
    let (old, new) = (
        Authority::new(tmp.path(), "old"),
        Authority::new(tmp.path(), "new"),
    );
    // The server's files live in their own directory, replaced in place later.
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let old_files = old.node(1);
    let files = TlsFiles {
        ca: live.join("ca.crt"),
        cert: live.join("node-1.crt"),
        key: live.join("node-1.key"),
    };
    copy(&old_files, &files);
    let server = Arc::new(TlsStore::load(files.clone()).unwrap());
    let peer_config = tls::server_config_for_peers(&server).unwrap();
    let old_client = old.node_store(2);
    let new_client = new.node_store(2);

    let (s, c) = handshake(
        peer_config.clone(),
        tls::client_config_for_peers(&old_client).unwrap(),
        tls::peer_server_name(1),
    )
    .await;
    s.unwrap();
    let before = c.unwrap().server_cert;

    // Rotate: new CA, new certificate and key for node 1, then reload.
    copy(&new.node(1), &files);
    server.reload().unwrap();

    // The same configuration object now serves the new certificate...
    let (s, c) = handshake(
        peer_config.clone(),
        tls::client_config_for_peers(&new_client).unwrap(),
        tls::peer_server_name(1),
    )
    .await;
    assert_eq!(s.unwrap().client_node, Some(2));
    let after = c.unwrap().server_cert;
    assert_ne!(before, after);
    assert_eq!(Some(after), server.certificate());

    // ...and refuses clients of the old CA (which in turn refuse the new certificate).
    let (s, c) = handshake(
        peer_config.clone(),
        tls::client_config_for_peers(&old_client).unwrap(),
        tls::peer_server_name(1),
    )
    .await;
    assert!(s.is_err() && c.is_err());

    // The dialling side reloads too: a client configuration built on old-CA material gets
    // in once its files are replaced by the new ones and reloaded.
    let client_dir = tmp.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let client_files = TlsFiles {
        ca: client_dir.join("ca.crt"),
        cert: client_dir.join("node-2.crt"),
        key: client_dir.join("node-2.key"),
    };
    copy(old_client.files(), &client_files);
    let reloading = Arc::new(TlsStore::load(client_files.clone()).unwrap());
    let dial = tls::client_config_for_peers(&reloading).unwrap();
    copy(new_client.files(), &client_files);
    reloading.reload().unwrap();
    let (s, c) = handshake(peer_config, dial, tls::peer_server_name(1)).await;
    assert_eq!(s.unwrap().client_node, Some(2));
    c.unwrap();
}

#[tokio::test]
async fn reload_with_a_broken_file_keeps_the_old_material() {
    let tmp = TempDir::new().unwrap();
    let a = Authority::new(tmp.path(), "a");
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let files = TlsFiles {
        ca: live.join("ca.crt"),
        cert: live.join("node-1.crt"),
        key: live.join("node-1.key"),
    };
    copy(&a.node(1), &files);
    let server = Arc::new(TlsStore::load(files.clone()).unwrap());
    let config = tls::server_config_for_peers(&server).unwrap();
    let client = a.node_store(2);
    let before = server.certificate();

    // A truncated key file.
    let key = std::fs::read_to_string(&files.key).unwrap();
    std::fs::write(&files.key, &key[..key.len() / 2]).unwrap();
    let e = server.reload().unwrap_err();
    assert!(
        matches!(&e, Error::PrivateKey { path, .. } if path == &files.key),
        "{e:?}"
    );
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("node-1.key"), "{shown}");
    assert_key_not_shown(&key, &shown);

    // The key of another certificate.
    let other = a.node(3);
    std::fs::copy(&other.key, &files.key).unwrap();
    let e = server.reload().unwrap_err();
    assert!(matches!(e, Error::KeyMismatch { .. }), "{e:?}");

    // A CA file without certificates.
    std::fs::write(&files.key, &key).unwrap();
    std::fs::write(&files.ca, "not a certificate\n").unwrap();
    let e = server.reload().unwrap_err();
    assert!(
        e.to_string().contains("ca.crt") && e.to_string().contains("no PEM certificate"),
        "{e}"
    );

    // Still the old material: handshakes work, with the old certificate.
    assert_eq!(server.certificate(), before);
    let (s, c) = handshake(
        config,
        tls::client_config_for_peers(&client).unwrap(),
        tls::peer_server_name(1),
    )
    .await;
    assert_eq!(s.unwrap().client_node, Some(2));
    assert_eq!(Some(c.unwrap().server_cert), before);
}

#[tokio::test]
async fn a_loaded_ca_signs_certificates_its_original_file_trusts() {
    let tmp = TempDir::new().unwrap();
    let a = Authority::new(tmp.path(), "a");
    let loaded = Ca::load(&a.dir).unwrap();
    assert_eq!(loaded.cert_der(), a.ca.cert_der());
    let server = a.node_store(1);
    let two = Arc::new(
        TlsStore::load(certs::create_node(&a.dir, &loaded, 2, ["10.0.0.2"]).unwrap()).unwrap(),
    );
    let (s, c) = handshake(
        tls::server_config_for_peers(&server).unwrap(),
        tls::client_config_for_peers(&two).unwrap(),
        tls::peer_server_name(1),
    )
    .await;
    assert_eq!(s.unwrap().client_node, Some(2));
    c.unwrap();
}

fn copy(from: &TlsFiles, to: &TlsFiles) {
    std::fs::copy(&from.ca, &to.ca).unwrap();
    std::fs::copy(&from.cert, &to.cert).unwrap();
    std::fs::copy(&from.key, &to.key).unwrap();
}

/// No line of the key's base64 body appears in `shown`.
fn assert_key_not_shown(key_pem: &str, shown: &str) {
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "key material in {shown}");
    }
}
