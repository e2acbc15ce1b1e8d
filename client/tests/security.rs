//! The client against small in-process tonic servers that play a secured (or an insecure)
//! sessiond node: credentials reach every service, refusals are final, and TLS failures are
//! typed and immediate. No cluster needed.

use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use sessiond_client::{Client, Consistency, Error, NewSession};
use sessiond_proto::v1 as pb;
use sessiond_proto::v1::cluster_server::{Cluster, ClusterServer};
use sessiond_proto::v1::sessions_server::{Sessions, SessionsServer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const SECRET: &str = "s3cret-app-credential";

/// A CA and what it signed, as PEM.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// A cluster CA with a node certificate for `hosts` and a client certificate with CN `app`.
fn pki(hosts: &[&str]) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "sessiond test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let server = CertificateParams::new(hosts)
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "app");
    let client = client.signed_by(&client_key, &ca).unwrap();

    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// How the fake node answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    /// `UNAUTHENTICATED` with an `ErrorDetail`, as a secured node answers a call without a
    /// valid credential.
    Unauthenticated,
    /// `PERMISSION_DENIED` with an `ErrorDetail`.
    PermissionDenied,
}

/// Every call the fake node saw: the method and its `authorization` metadata.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<(&'static str, Option<String>)>>,
    /// Calls that presented a client certificate.
    with_client_cert: AtomicUsize,
}

#[derive(Clone)]
struct Fake {
    mode: Mode,
    seen: Arc<Seen>,
}

fn refusal(code: tonic::Code, ec: pb::ErrorCode, msg: &str) -> Status {
    let mut s = Status::new(code, msg);
    let d = pb::ErrorDetail {
        code: ec as i32,
        message: msg.into(),
        ..Default::default()
    };
    s.metadata_mut().insert_bin(
        sessiond_proto::ERROR_DETAIL_KEY,
        tonic::metadata::MetadataValue::from_bytes(&d.encode_to_vec()),
    );
    s
}

impl Fake {
    fn see<T>(&self, method: &'static str, req: &Request<T>) -> Result<(), Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        if req.peer_certs().is_some_and(|c| !c.is_empty()) {
            self.seen.with_client_cert.fetch_add(1, Ordering::SeqCst);
        }
        self.seen.calls.lock().unwrap().push((method, auth));
        match self.mode {
            Mode::Serve => Ok(()),
            Mode::Unauthenticated => Err(refusal(
                tonic::Code::Unauthenticated,
                pb::ErrorCode::Unauthenticated,
                "no valid credential",
            )),
            Mode::PermissionDenied => Err(refusal(
                tonic::Code::PermissionDenied,
                pb::ErrorCode::PermissionDenied,
                "principal lacks role app",
            )),
        }
    }

    fn session() -> pb::Session {
        pb::Session {
            id: "s1".into(),
            user_id: "alice".into(),
            generation: 1,
            version: 1,
            ..Default::default()
        }
    }
}

type RevocationStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::Revocation, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Sessions for Fake {
    async fn create_session(
        &self,
        r: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        self.see("Sessions/CreateSession", &r)?;
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(Self::session()),
            token: "sdt1_new".into(),
            replayed: false,
        }))
    }
    async fn get_session(
        &self,
        r: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        self.see("Sessions/GetSession", &r)?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(Self::session()),
            superseded: false,
        }))
    }
    async fn rotate_token(
        &self,
        _: Request<pb::RotateTokenRequest>,
    ) -> Result<Response<pb::RotateTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn update_session(
        &self,
        _: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::UpdateSessionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn touch_session(
        &self,
        _: Request<pb::TouchSessionRequest>,
    ) -> Result<Response<pb::TouchSessionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke_session(
        &self,
        _: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke_user_sessions(
        &self,
        _: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_user_sessions(
        &self,
        _: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type WatchRevocationsStream = RevocationStream;
    async fn watch_revocations(
        &self,
        r: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<RevocationStream>, Status> {
        self.see("Sessions/WatchRevocations", &r)?;
        let one = pb::Revocation {
            index: 7,
            session_id: "s1".into(),
            ..Default::default()
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(one)]))))
    }
}

#[tonic::async_trait]
impl Cluster for Fake {
    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.see("Cluster/Status", &r)?;
        Ok(Response::new(pb::StatusResponse {
            node_id: 1,
            commit_index: 12,
            applied_index: 11,
            ..Default::default()
        }))
    }
    async fn add_learner(
        &self,
        _: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn change_membership(
        &self,
        _: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn trigger_snapshot(
        &self,
        _: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type BackupStream = BackupStream;
    async fn backup(
        &self,
        _: Request<pb::BackupRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

/// A running fake node.
struct Node {
    addr: SocketAddr,
    seen: Arc<Seen>,
    /// TCP connections accepted: each is one connection attempt of the client.
    accepted: Arc<AtomicUsize>,
}

/// Start a fake node: TLS with `tls` (plaintext without), answering as `mode`.
async fn start(mode: Mode, tls: Option<ServerTlsConfig>) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let incoming = futures::stream::unfold(listener, move |l| {
        let counter = counter.clone();
        async move {
            let r = l.accept().await.map(|(s, _)| s);
            counter.fetch_add(1, Ordering::SeqCst);
            Some((r, l))
        }
    });
    let seen = Arc::new(Seen::default());
    let fake = Fake {
        mode,
        seen: seen.clone(),
    };
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).unwrap();
    }
    let router = server
        .add_service(SessionsServer::new(fake.clone()))
        .add_service(ClusterServer::new(fake));
    tokio::spawn(async move {
        let _ = router.serve_with_incoming(Box::pin(incoming)).await;
    });
    Node {
        addr,
        seen,
        accepted,
    }
}

fn server_tls(p: &Pki) -> ServerTlsConfig {
    ServerTlsConfig::new().identity(Identity::from_pem(&p.server_cert, &p.server_key))
}

/// A file holding `contents`, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "sessiond-client-{}-{}-{name}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Retries are generous, so that a test can tell "failed at once" from "gave up at last".
fn patient(endpoint: String) -> sessiond_client::ClientBuilder {
    Client::builder([endpoint])
        .max_attempts(30)
        .deadline(Duration::from_secs(20))
        .request_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn the_bearer_secret_reaches_every_service_over_tls() {
    let p = pki(&["localhost", "127.0.0.1"]);
    let node = start(Mode::Serve, Some(server_tls(&p))).await;
    // A token file as an operator hands it out: one line, with its newline.
    let token = TempFile::new("token", &format!("{SECRET}\n"));
    let client = patient(node.addr.to_string())
        .ca_cert_pem(p.ca.clone())
        .bearer_token_file(&token.0)
        .unwrap()
        .build()
        .unwrap();

    let v = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap();
    assert_eq!(v.session.user_id, "alice");
    let status = client
        .cluster_client(0)
        .unwrap()
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.commit_index, status.applied_index), (12, 11));
    let mut stream = client.watch_revocations(0).await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().index, 7);

    let calls = node.seen.calls.lock().unwrap().clone();
    let want = Some(format!("Bearer {SECRET}"));
    assert_eq!(
        calls,
        vec![
            ("Sessions/GetSession", want.clone()),
            ("Cluster/Status", want.clone()),
            ("Sessions/WatchRevocations", want),
        ]
    );
}

#[tokio::test]
async fn a_client_certificate_authenticates_over_mutual_tls() {
    let p = pki(&["localhost"]);
    let tls = server_tls(&p).client_ca_root(Certificate::from_pem(&p.ca));
    let node = start(Mode::Serve, Some(tls)).await;
    let ca = TempFile::new("ca.crt", &p.ca);
    let cert = TempFile::new("client-app.crt", &p.client_cert);
    let key = TempFile::new("client-app.key", &p.client_key);
    let client = patient(format!("localhost:{}", node.addr.port()))
        .ca_cert_file(&ca.0)
        .unwrap()
        .identity_files(&cert.0, &key.0)
        .unwrap()
        .build()
        .unwrap();
    client
        .create_session(NewSession::for_user("alice"))
        .await
        .unwrap();
    client
        .cluster_client(0)
        .unwrap()
        .status(pb::StatusRequest {})
        .await
        .unwrap();
    assert_eq!(node.seen.with_client_cert.load(Ordering::SeqCst), 2);
    // No bearer configured: no authorization metadata either.
    assert!(node
        .seen
        .calls
        .lock()
        .unwrap()
        .iter()
        .all(|(_, auth)| auth.is_none()));
}

#[tokio::test]
async fn unauthenticated_and_permission_denied_are_final_after_one_attempt() {
    let p = pki(&["127.0.0.1"]);
    for (mode, mutation) in [
        (Mode::Unauthenticated, false),
        (Mode::Unauthenticated, true),
        (Mode::PermissionDenied, false),
        (Mode::PermissionDenied, true),
    ] {
        let node = start(mode, Some(server_tls(&p))).await;
        let client = patient(node.addr.to_string())
            .ca_cert_pem(p.ca.clone())
            .bearer_token("not-a-known-secret")
            .build()
            .unwrap();
        let started = Instant::now();
        let e = if mutation {
            client
                .create_session(NewSession::for_user("alice"))
                .await
                .unwrap_err()
        } else {
            client
                .get_session("sdt1_x", Consistency::Linearizable, false)
                .await
                .unwrap_err()
        };
        match mode {
            Mode::Unauthenticated => assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}"),
            _ => assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}"),
        }
        assert_eq!(
            node.seen.calls.lock().unwrap().len(),
            1,
            "{e:?}: one attempt"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // A refused call is not the node's fault: the next call still goes to it.
        let again = client
            .get_session("sdt1_x", Consistency::Stale, false)
            .await;
        assert!(again.is_err());
        assert_eq!(node.seen.calls.lock().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn a_node_certificate_of_another_ca_fails_fast_and_typed() {
    let p = pki(&["127.0.0.1"]);
    let other = pki(&["127.0.0.1"]);
    let node = start(Mode::Serve, Some(server_tls(&p))).await;
    let client = patient(node.addr.to_string())
        .ca_cert_pem(other.ca)
        .bearer_token(SECRET)
        .build()
        .unwrap();
    let started = Instant::now();
    let e = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap_err();
    let Error::Tls(msg) = &e else {
        panic!("want Error::Tls, got {e:?}")
    };
    assert!(msg.contains(&node.addr.to_string()), "{msg}");
    assert!(msg.contains("not signed by the CA"), "{msg}");
    assert!(!e.to_string().contains(SECRET));
    assert_eq!(node.accepted.load(Ordering::SeqCst), 1, "one connection");
    assert!(node.seen.calls.lock().unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_node_certificate_for_another_name_fails_typed() {
    let p = pki(&["node-1.sessiond"]);
    let node = start(Mode::Serve, Some(server_tls(&p))).await;
    let client = patient(node.addr.to_string())
        .ca_cert_pem(p.ca)
        .build()
        .unwrap();
    let e = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap_err();
    match &e {
        Error::Tls(msg) => assert!(msg.contains("does not name the address"), "{msg}"),
        other => panic!("want Error::Tls, got {other:?}"),
    }
    assert_eq!(node.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_tls_client_against_a_plaintext_node_fails_fast_and_typed() {
    // An `--insecure` node: h2c, no TLS.
    let p = pki(&["127.0.0.1"]);
    let node = start(Mode::Serve, None).await;
    let client = patient(node.addr.to_string())
        .ca_cert_pem(p.ca)
        .build()
        .unwrap();
    let started = Instant::now();
    let e = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap_err();
    match &e {
        Error::Tls(msg) => assert!(msg.contains("does not answer TLS"), "{msg}"),
        other => panic!("want Error::Tls, got {other:?}"),
    }
    assert_eq!(node.accepted.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_plaintext_client_against_a_tls_node_fails_fast_and_typed() {
    let p = pki(&["127.0.0.1"]);
    let node = start(Mode::Serve, Some(server_tls(&p))).await;
    // Nothing but an endpoint: plaintext, as for an `--insecure` node.
    let client = patient(node.addr.to_string()).build().unwrap();
    let started = Instant::now();
    let e = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap_err();
    match &e {
        Error::Tls(msg) => {
            assert!(msg.contains("serves TLS"), "{msg}");
            assert!(msg.contains("SESSIOND_CA"), "{msg}");
        }
        other => panic!("want Error::Tls, got {other:?}"),
    }
    // The one attempt, and the check that the node answers TLS.
    assert_eq!(node.accepted.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_plaintext_node_that_drops_connections_is_still_retried() {
    // Like a node restarting: it accepts and closes. That is no TLS, so retries go on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let client = Client::builder([addr.to_string()])
        .max_attempts(3)
        .backoff(Duration::from_millis(1))
        .build()
        .unwrap();
    let e = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { attempts: 3, .. }), "{e:?}");
    // Three attempts and one TLS check.
    assert!(accepted.load(Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn a_node_that_requires_a_client_certificate_fails_typed_without_one() {
    let p = pki(&["127.0.0.1"]);
    // Not how sessiond is set up (a bearer token is enough there), but a proxy in front of it
    // may be: the refusal comes as a TLS alert, after the client finished its handshake.
    let tls = server_tls(&p)
        .client_ca_root(Certificate::from_pem(&p.ca))
        .client_auth_optional(false);
    let node = start(Mode::Serve, Some(tls)).await;
    let client = patient(node.addr.to_string())
        .ca_cert_pem(p.ca.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let e = client
        .get_session("sdt1_x", Consistency::Stale, false)
        .await
        .unwrap_err();
    match &e {
        Error::Tls(msg) => assert!(msg.contains("rejected this client's certificate"), "{msg}"),
        other => panic!("want Error::Tls, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
