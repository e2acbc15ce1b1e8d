//! Security end to end, on real clusters with TLS and authentication on: who may connect, who
//! may call what, what a peer may claim, request ids scoped to their caller, credentials that
//! rotate without a restart, and no secret in any log line.

use rustls::pki_types::pem::PemObject as _;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::raft_client::RaftClient;
use sessiond_proto::v1::sessions_client::SessionsClient;
use sessiond_proto::v1::*;
use sessiond_tests::{
    code, expect_err, plaintext_channel, rid, sessiond_certs, wait_for, TestCluster, APP, WATCHER,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A failure of the connection itself (refused handshake, closed connection), not an answer.
fn is_transport_failure(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    )
}

/// A request carrying `msg`.
fn call<T>(msg: T) -> tonic::Request<T> {
    tonic::Request::new(msg)
}

fn create(user: &str, request_id: Vec<u8>) -> CreateSessionRequest {
    CreateSessionRequest {
        user_id: user.into(),
        data: b"d".to_vec(),
        request_id,
        ..Default::default()
    }
}

/// A TLS channel to `addr` that trusts `certs`' CA and presents no certificate.
fn anonymous_channel(certs: &Path, addr: &str) -> Channel {
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// A request carrying `authorization: Bearer <secret>`.
fn bearer<T>(msg: T, secret: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    r
}

/// Issue a bearer credential with the app role to principal `name` (`sessiond certs
/// credential`) and SIGHUP every node; the secret.
fn issue_credential(c: &TestCluster, name: &str) -> String {
    let file = c.certs.join(format!("{name}.secret"));
    sessiond_certs(
        &c.certs,
        &[
            "credential",
            "--name",
            name,
            "--role",
            "app",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    for i in 0..c.nodes.len() {
        c.reload(i);
    }
    std::fs::read_to_string(&file).unwrap().trim().to_owned()
}

/// Sessions of `user`, read by the harness's admin principal.
async fn sessions_of(c: &TestCluster, user: &str) -> usize {
    c.leader_client()
        .await
        .list_user_sessions(call(ListUserSessionsRequest {
            user_id: user.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .sessions
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_are_authenticated_and_authorised_by_role() {
    let c = TestCluster::start3().await;
    let leader = c.leader().await;
    let addr = c.nodes[leader].client_addr.clone();

    // A client that does not speak TLS gets an error, not an answer, well before its deadline.
    let started = std::time::Instant::now();
    let r = SessionsClient::new(plaintext_channel(&addr))
        .create_session(call(create("mallory", rid())))
        .await;
    let s = r.expect_err("a plaintext call to a TLS port must fail");
    assert!(is_transport_failure(&s), "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{s:?}");
    // The client crate names it: a TLS error, not a retried outage.
    let plain = sessiond_client::Client::builder([addr.clone()])
        .deadline(Duration::from_secs(20))
        .build()
        .unwrap();
    match plain
        .create_session(sessiond_client::NewSession::for_user("mallory"))
        .await
    {
        Err(sessiond_client::Error::Tls(m)) => assert!(m.contains("TLS"), "{m}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // TLS without any credential: UNAUTHENTICATED, nothing written.
    let before = c.status(leader).await.unwrap().last_log_index;
    let r = SessionsClient::new(anonymous_channel(&c.certs, &addr))
        .create_session(call(create("mallory", rid())))
        .await;
    expect_err(r, ErrorCode::Unauthenticated);
    // A bearer credential nobody issued: the same.
    let r = SessionsClient::new(anonymous_channel(&c.certs, &addr))
        .create_session(bearer(create("mallory", rid()), "sd_not-a-real-secret"))
        .await;
    expect_err(r, ErrorCode::Unauthenticated);
    assert_eq!(c.status(leader).await.unwrap().last_log_index, before);
    assert_eq!(sessions_of(&c, "mallory").await, 0);

    // The app principal may use sessions but not change the membership.
    let members_before = c.status(leader).await.unwrap().members;
    let r = ClusterClient::new(c.channel_as(APP, leader))
        .change_membership(call(ChangeMembershipRequest {
            voters: vec![1],
            retain: false,
            ..Default::default()
        }))
        .await;
    expect_err(r, ErrorCode::PermissionDenied);
    assert_eq!(c.status(leader).await.unwrap().members, members_before);
    let r = ClusterClient::new(c.channel_as(APP, leader))
        .status(call(StatusRequest {}))
        .await;
    expect_err(r, ErrorCode::PermissionDenied);
    let r = SessionsClient::new(c.channel_as(APP, leader))
        .watch_revocations(call(WatchRevocationsRequest { from_index: 0 }))
        .await;
    expect_err(r, ErrorCode::PermissionDenied);
    SessionsClient::new(c.channel_as(APP, leader))
        .create_session(call(create("ann", rid())))
        .await
        .expect("the app role may create sessions");

    // The watch principal may watch, and nothing else.
    SessionsClient::new(c.channel_as(WATCHER, leader))
        .watch_revocations(call(WatchRevocationsRequest { from_index: 0 }))
        .await
        .expect("the watch role may watch revocations");
    let before = c.status(leader).await.unwrap().last_log_index;
    let r = SessionsClient::new(c.channel_as(WATCHER, leader))
        .create_session(call(create("mallory", rid())))
        .await;
    expect_err(r, ErrorCode::PermissionDenied);
    assert_eq!(c.status(leader).await.unwrap().last_log_index, before);

    // Through a follower the forwarded call keeps the caller's principal: still refused.
    let follower = c.follower().await;
    let r = SessionsClient::new(c.channel_as(WATCHER, follower))
        .create_session(call(create("mallory", rid())))
        .await;
    expect_err(r, ErrorCode::PermissionDenied);
    // ... and a forwarded-for header from a client is not trusted.
    let mut spoofed = call(create("mallory", rid()));
    spoofed
        .metadata_mut()
        .insert("sessiond-forwarded-for", "admin".parse().unwrap());
    let r = SessionsClient::new(c.channel_as(WATCHER, follower))
        .create_session(spoofed)
        .await;
    expect_err(r, ErrorCode::PermissionDenied);
    assert_eq!(sessions_of(&c, "mallory").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_credential_authenticates_once_the_nodes_reload() {
    let c = TestCluster::start3().await;
    let secret = issue_credential(&c, "svc");
    assert!(secret.starts_with("sd_"));
    let access = std::fs::read_to_string(c.certs.join("access.toml")).unwrap();
    assert!(!access.contains(&secret), "only the hash is stored");
    let leader = c.leader().await;
    let addr = c.nodes[leader].client_addr.clone();
    let created = wait_for(
        Duration::from_secs(10),
        "the nodes to load the credential",
        || {
            let (certs, addr, secret) = (c.certs.clone(), addr.clone(), secret.clone());
            async move {
                SessionsClient::new(anonymous_channel(&certs, &addr))
                    .create_session(bearer(create("bea", rid()), &secret))
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert!(!created.into_inner().token.is_empty());

    // A client certificate and a bearer credential together are refused, even both valid:
    // two credentials may name two principals. Nothing is written.
    let before = c.status(leader).await.unwrap().last_log_index;
    for presented in [secret.as_str(), "sd_not-a-real-secret"] {
        let r = SessionsClient::new(c.channel_as(APP, leader))
            .create_session(bearer(create("bea-both", rid()), presented))
            .await;
        expect_err(r, ErrorCode::Unauthenticated);
    }
    assert_eq!(c.status(leader).await.unwrap().last_log_index, before);
    assert_eq!(sessions_of(&c, "bea-both").await, 0);
}

/// A Vote and an AppendEntries made with `tls` as sender `from` to node `to`, both refused;
/// how each was refused.
async fn peer_call(
    addr: &str,
    tls: ClientTlsConfig,
    to: u64,
    from: u64,
) -> (tonic::Status, tonic::Status) {
    let ch = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = RaftClient::new(ch);
    let msg = RaftRequest {
        target_node_id: to,
        from_node_id: from,
        // Not a message at all (a truncated varint): what gets past authentication fails
        // to decode.
        payload: vec![0xff; 3],
        ..RaftRequest::default()
    };
    let vote = client.vote(call(msg.clone())).await;
    let append = client.append_entries(call(msg)).await;
    let (Err(v), Err(a)) = (vote, append) else {
        panic!("a forged peer message was accepted");
    };
    (v, a)
}

/// Every node's (term, last log index).
async fn terms_and_logs(c: &TestCluster) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for i in 0..c.nodes.len() {
        let s = c.status(i).await.expect("status");
        out.push((s.term, s.last_log_index));
    }
    out
}

fn node_tls(certs: &Path, id: u64, expect: u64) -> ClientTlsConfig {
    let read = |n: String| std::fs::read(certs.join(n)).unwrap();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt".into())))
        .identity(Identity::from_pem(
            read(format!("node-{id}.crt")),
            read(format!("node-{id}.key")),
        ))
        .domain_name(format!("node-{expect}.sessiond"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_port_accepts_only_the_node_a_certificate_names() {
    let c = TestCluster::start3().await;
    let leader = c.leader().await;
    let target = c.follower().await;
    let (tid, addr) = (c.nodes[target].id, c.nodes[target].peer_addr.clone());
    let before = terms_and_logs(&c).await;

    // Certificates of another cluster's CA: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    sessiond_certs(other.path(), &["local", "--nodes", "3"]);
    let (v, a) = peer_call(&addr, node_tls(other.path(), 2, tid), tid, 2).await;
    assert!(
        is_transport_failure(&v) && is_transport_failure(&a),
        "{v:?} {a:?}"
    );

    // A client principal's certificate of the right CA: not a node, refused.
    let read = |n: &str| std::fs::read(c.certs.join(n)).unwrap();
    let app = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("client-app.crt"),
            read("client-app.key"),
        ))
        .domain_name(format!("node-{tid}.sessiond"));
    let (v, a) = peer_call(&addr, app, tid, 2).await;
    assert!(
        is_transport_failure(&v) && is_transport_failure(&a),
        "{v:?} {a:?}"
    );

    // A real node's certificate claiming to be another node: refused before decoding.
    let liar = c.nodes[leader].id;
    let claimed = (1..=3).find(|i| *i != liar && *i != tid).unwrap();
    let (v, a) = peer_call(&addr, node_tls(&c.certs, liar, tid), tid, claimed).await;
    assert_eq!(v.code(), tonic::Code::PermissionDenied, "{v:?}");
    assert_eq!(a.code(), tonic::Code::PermissionDenied, "{a:?}");
    // The same certificate as itself passes authentication and fails only on the bytes.
    let (v, a) = peer_call(&addr, node_tls(&c.certs, liar, tid), tid, liar).await;
    assert_eq!(v.code(), tonic::Code::InvalidArgument, "{v:?}");
    assert_eq!(a.code(), tonic::Code::InvalidArgument, "{a:?}");

    // Nothing reached Raft: terms and logs as they were (no writes in between).
    assert_eq!(before, terms_and_logs(&c).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_belongs_to_its_caller_and_its_request() {
    let c = TestCluster::start3().await;
    let mut admin = c.leader_client().await;
    let id = rid();
    let alice = admin
        .create_session(call(create("alice", id.clone())))
        .await
        .unwrap()
        .into_inner();
    // Bob under alice's request id: refused, never alice's answer.
    let r = admin.create_session(call(create("bob", id.clone()))).await;
    let d = expect_err(r, ErrorCode::InvalidArgument);
    assert!(d.message.contains("reused"), "{}", d.message);
    assert_eq!(sessions_of(&c, "bob").await, 0);
    // Alice's session is untouched and her retry still gets her first answer.
    let got = admin
        .get_session(call(GetSessionRequest {
            token: alice.token.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.session.unwrap().user_id, "alice");
    let again = admin
        .create_session(call(create("alice", id.clone())))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.token, alice.token);

    // Another principal using the same id makes its own session: no cross-principal answer.
    let leader = c.leader().await;
    let other = SessionsClient::new(c.channel_as(APP, leader))
        .create_session(call(create("alice", id)))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.replayed);
    assert_ne!(other.token, alice.token);
    assert_ne!(other.session.unwrap().id, alice.session.unwrap().id);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_without_tls_material_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(sessiond_tests::binary())
        .args(["serve", "--node-id", "1", "--client-addr", "127.0.0.1:1"])
        .args(["--peer-addr", "127.0.0.1:2", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure") && err.contains("sessiond certs"),
        "the refusal says what to do: {err}"
    );
}

/// The certificate node `addr` presents to a new TLS connection.
async fn served_certificate(certs: &Path, addr: &str) -> Vec<u8> {
    let config = sessiond_security::tls::client_config(&certs.join("ca.crt"), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_and_credentials_rotate_without_a_restart() {
    let c = TestCluster::start3().await;
    // An application on the admin certificate keeps working throughout.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let client = c
            .client_builder(c.nodes.iter().map(|n| n.client_addr.clone()))
            .build()
            .unwrap();
        let (failures, done) = (failures.clone(), done.clone());
        tokio::spawn(async move {
            let mut calls = 0usize;
            while !done.load(Ordering::Relaxed) && calls < 10_000 {
                calls += 1;
                let r = client
                    .create_session(sessiond_client::NewSession::for_user("steady"))
                    .await;
                if r.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            calls
        })
    };

    // A credential in use, then replaced by a new one and revoked.
    let old = issue_credential(&c, "svc-old");
    let leader = c.leader().await;
    let addr = c.nodes[leader].client_addr.clone();
    let call = |secret: String| {
        let (certs, addr) = (c.certs.clone(), addr.clone());
        async move {
            SessionsClient::new(anonymous_channel(&certs, &addr))
                .create_session(bearer(create("svc-user", rid()), &secret))
                .await
        }
    };
    wait_for(
        Duration::from_secs(10),
        "the old credential to work",
        || {
            let f = call(old.clone());
            async move { f.await.ok() }
        },
    )
    .await;
    let access_before = std::fs::read_to_string(c.certs.join("access.toml")).unwrap();
    // The new credential is handed out first, then the old one revoked.
    let new = issue_credential(&c, "svc-new");
    // Revoke the old one: its entry leaves the access file.
    let access = std::fs::read_to_string(c.certs.join("access.toml")).unwrap();
    let start = access.find("name = \"svc-old\"").unwrap();
    let block_start = access[..start].rfind("[[principal]]").unwrap();
    let block_end = access[start..]
        .find("[[principal]]")
        .map(|e| start + e)
        .unwrap_or(access.len());
    let revoked = format!("{}{}", &access[..block_start], &access[block_end..]);
    assert!(revoked.len() < access.len() && access.len() > access_before.len());
    std::fs::write(c.certs.join("access.toml"), revoked).unwrap();

    // A new certificate for the leader's node, signed by the same CA, swapped in place.
    let spare = tempfile::tempdir().unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(c.certs.join(f), spare.path().join(f)).unwrap();
    }
    let lid = c.nodes[leader].id.to_string();
    sessiond_certs(
        spare.path(),
        &[
            "node",
            "--node-id",
            &lid,
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ],
    );
    let old_cert = served_certificate(&c.certs, &addr).await;
    for ext in ["crt", "key"] {
        let name = format!("node-{lid}.{ext}");
        std::fs::copy(spare.path().join(&name), c.certs.join(&name)).unwrap();
    }
    for i in 0..3 {
        c.reload(i);
    }
    wait_for(
        Duration::from_secs(10),
        "the old credential to be refused",
        || {
            let f = call(old.clone());
            async move {
                match f.await {
                    Err(s) if code(&s) == ErrorCode::Unauthenticated => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    call(new.clone()).await.expect("the new credential works");
    let new_cert = served_certificate(&c.certs, &addr).await;
    assert_ne!(old_cert, new_cert, "the node serves its new certificate");
    assert_eq!(
        new_cert,
        std::fs::read(c.certs.join(format!("node-{lid}.crt")))
            .map(|pem| {
                let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
                der.to_vec()
            })
            .unwrap()
    );

    done.store(true, Ordering::Relaxed);
    let calls = steady.await.unwrap();
    assert!(calls > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "an unaffected client saw failures during the rotation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_credential_or_key_reaches_a_log_line() {
    let c = TestCluster::builder(3)
        .env("RUST_LOG", "trace")
        .start()
        .await;
    let secret = issue_credential(&c, "svc");
    let leader = c.leader().await;
    let follower = c.follower().await;
    let mut tokens = Vec::new();
    let mut admin = c.client(follower).await;
    for i in 0..5 {
        let created = admin
            .create_session(call(create(&format!("u{i}"), rid())))
            .await
            .unwrap()
            .into_inner();
        let rotated = admin
            .rotate_token(call(RotateTokenRequest {
                token: created.token.clone(),
                request_id: rid(),
            }))
            .await
            .unwrap()
            .into_inner();
        admin
            .get_session(call(GetSessionRequest {
                token: created.token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        tokens.push(created.token);
        tokens.push(rotated.token);
    }
    // A refused bad token and the bearer credential, through a follower and the leader.
    let _ = admin
        .get_session(call(GetSessionRequest {
            token: "sdt1_definitely-not-valid".into(),
            ..Default::default()
        }))
        .await;
    let addr = c.nodes[leader].client_addr.clone();
    wait_for(Duration::from_secs(10), "the credential to work", || {
        let (certs, addr, secret) = (c.certs.clone(), addr.clone(), secret.clone());
        async move {
            SessionsClient::new(anonymous_channel(&certs, &addr))
                .create_session(bearer(create("svc-user", rid()), &secret))
                .await
                .ok()
        }
    })
    .await;

    let mut secrets: Vec<(String, String)> = tokens
        .iter()
        .map(|t| ("token".to_owned(), t.clone()))
        .collect();
    secrets.push(("bearer secret".into(), secret));
    // Every base64 line of every private key, and the seal key.
    for entry in std::fs::read_dir(&c.certs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".key") {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 16)
            {
                secrets.push((name.clone(), line.to_owned()));
            }
        }
    }
    let logs: Vec<(u64, String)> = c
        .nodes
        .iter()
        .map(|n| (n.id, std::fs::read_to_string(n.log_path()).unwrap()))
        .collect();
    assert!(
        logs.iter().map(|(_, l)| l.len()).sum::<usize>() > 10_000,
        "trace logging is on"
    );
    for (what, s) in &secrets {
        // Tokens also as their unprefixed body, in case a layer strips the prefix.
        let body = s.strip_prefix("sdt1_").unwrap_or(s);
        for (id, log) in &logs {
            assert!(
                !log.contains(s.as_str()) && !log.contains(body),
                "node {id}'s log holds a {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_port_serves_tls_when_asked() {
    let c = TestCluster::builder(3)
        .flags(&["--metrics-tls"])
        .start()
        .await;
    let leader = c.leader().await;
    let addr = c.nodes[leader].http_addr.clone();
    // A plaintext request gets no HTTP answer.
    let plain = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        Some(buf)
    }
    .await
    .unwrap_or_default();
    assert!(!plain.starts_with(b"HTTP/"), "plaintext HTTP was answered");
    // HTTP/1.1 over TLS, trusting the cluster CA, without a client certificate.
    let mut config =
        (*sessiond_security::tls::client_config(&c.certs.join("ca.crt"), None).unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut body)).await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("sessiond_insecure 0"), "{body}");
}

/// A call a follower forwarded that reaches the leader after its caller's deadline (held up
/// by a partition until it healed, say) does nothing: its client gave up and retried long
/// ago, and a read acting now could judge a token by a later time than it was sent at.
#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_call_past_its_deadline_is_refused_and_does_nothing() {
    let c = TestCluster::start3().await;
    let leader = c.leader().await;
    let follower = c.follower().await;
    let (fid, lid) = (c.nodes[follower].id, c.nodes[leader].id);
    // The follower's own identity, as its forwarding channel presents it.
    let ch = Channel::from_shared(format!("https://{}", c.nodes[leader].client_addr))
        .unwrap()
        .tls_config(node_tls(&c.certs, fid, lid))
        .unwrap()
        .connect_lazy();
    fn forwarded<T>(msg: T, deadline_ms: u64) -> tonic::Request<T> {
        let mut r = call(msg);
        let m = r.metadata_mut();
        m.insert("sessiond-forwarded-for", APP.parse().unwrap());
        m.insert(
            "sessiond-deadline-ms",
            deadline_ms.to_string().parse().unwrap(),
        );
        r
    }
    // Deadlines are dated by the voters' median clock: here, the host's.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The leader judges deadlines once it has sampled a majority of the voters' clocks (a
    // few heartbeats after its election): a read that writes nothing tells when.
    wait_for(
        Duration::from_secs(10),
        "the leader to reckon the voters' median clock",
        || {
            let ch = ch.clone();
            async move {
                let list = ListUserSessionsRequest {
                    user_id: "late".into(),
                    ..Default::default()
                };
                let r = SessionsClient::new(ch)
                    .list_user_sessions(forwarded(list, now_ms - 60_000))
                    .await;
                r.err()
                    .filter(|s| s.code() == tonic::Code::DeadlineExceeded)
            }
        },
    )
    .await;
    let before = c.status(leader).await.unwrap().last_log_index;
    let r = SessionsClient::new(ch.clone())
        .create_session(forwarded(create("late", rid()), now_ms - 60_000))
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    assert_eq!(sessions_of(&c, "late").await, 0);
    assert_eq!(
        c.status(leader).await.unwrap().last_log_index,
        before,
        "nothing was written"
    );
    // The same call inside its deadline is served.
    SessionsClient::new(ch)
        .create_session(forwarded(create("late", rid()), now_ms + 60_000))
        .await
        .expect("a forwarded call inside its deadline");
    assert_eq!(sessions_of(&c, "late").await, 1);
}
