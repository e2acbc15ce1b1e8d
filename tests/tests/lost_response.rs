//! A mutation whose response is lost on the wire, retried by the client, returns the first
//! result: the request reaches the server and is applied, the answer never comes back, the
//! attempt times out, and the retry (same request id) is answered from the first application.
//!
//! A small TCP proxy in front of one node forwards client→server bytes always; once armed it
//! swallows the server→client bytes of the connection it sees next, holds the connection
//! open longer than the client's request timeout, then closes it and is transparent again.

use sessiond_client::{Consistency, NewSession, SessionRef};
use sessiond_tests::TestCluster;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Timeout of one client attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a dropping connection swallows answers before the proxy closes it: longer than
/// the request timeout, so at least one attempt times out with its answer lost.
const HOLD: Duration = Duration::from_millis(1500);
/// Bound on any one logical call of the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct ProxyState {
    /// The next server→client bytes are swallowed (and their connection dropped).
    armed: AtomicBool,
    /// Connections whose answers were swallowed.
    dropped_connections: AtomicUsize,
    /// Server→client reads swallowed, and their bytes.
    swallowed_chunks: AtomicUsize,
    swallowed_bytes: AtomicUsize,
}

struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay(client, target.clone(), st.clone()));
            }
        });
        Proxy { addr, state, task }
    }

    fn arm(&self) {
        self.state.armed.store(true, Ordering::SeqCst);
    }

    fn armed(&self) -> bool {
        self.state.armed.load(Ordering::SeqCst)
    }

    fn dropped_connections(&self) -> usize {
        self.state.dropped_connections.load(Ordering::SeqCst)
    }

    fn swallowed_chunks(&self) -> usize {
        self.state.swallowed_chunks.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relay one connection. Client→server bytes always pass; server→client bytes pass until the
/// proxy is armed, then this connection swallows everything for `HOLD` and is closed.
async fn relay(client: TcpStream, target: String, state: Arc<ProxyState>) {
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rd, &mut server_wr).await;
        let _ = server_wr.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut dropping_until: Option<Instant> = None;
    loop {
        let read = match dropping_until {
            None => server_rd.read(&mut buf).await,
            Some(until) => match tokio::time::timeout_at(until, server_rd.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break, // held long enough: close the connection
            },
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dropping_until.is_none() && state.armed.swap(false, Ordering::SeqCst) {
            dropping_until = Some(Instant::now() + HOLD);
            state.dropped_connections.fetch_add(1, Ordering::SeqCst);
        }
        if dropping_until.is_some() {
            state.swallowed_chunks.fetch_add(1, Ordering::SeqCst);
            state.swallowed_bytes.fetch_add(n, Ordering::SeqCst);
            continue;
        }
        if client_wr.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
    let _ = upstream.await;
    // Dropping every half closes both connections.
}

/// Run `f` bounded in time.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CALL_TIMEOUT:?}"))
}

/// Arm the proxy, run the mutation through it, and check an answer was really swallowed and
/// the call took at least one timed-out attempt.
async fn through_dropped_answer<T>(
    proxy: &Proxy,
    what: &str,
    f: impl std::future::Future<Output = T>,
) -> T {
    let drops = proxy.dropped_connections();
    let chunks = proxy.swallowed_chunks();
    // Let any trailing bytes of earlier calls (acks, window updates) pass first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.arm();
    let started = Instant::now();
    let out = bounded(what, f).await;
    let took = started.elapsed();
    assert!(
        !proxy.armed(),
        "{what}: the proxy never saw an answer to drop"
    );
    assert_eq!(
        proxy.dropped_connections(),
        drops + 1,
        "{what}: exactly one connection had its answers dropped"
    );
    assert!(
        proxy.swallowed_chunks() > chunks,
        "{what}: no server→client bytes were swallowed"
    );
    assert!(
        took >= REQUEST_TIMEOUT,
        "{what}: answered after {took:?}, before any attempt could time out: the answer was not lost"
    );
    eprintln!(
        "{what}: answered after {took:?}; swallowed {} chunks / {} bytes so far",
        proxy.swallowed_chunks(),
        proxy.state.swallowed_bytes.load(Ordering::SeqCst)
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mutation_whose_answer_is_lost_returns_the_first_result_when_retried() {
    let c = TestCluster::start3().await;
    let leader = c.leader().await;
    let proxy = Proxy::start(c.nodes[leader].client_addr.clone()).await;

    // Every call of this client goes through the proxy (one endpoint only).
    let client = c
        .client_builder([proxy.addr.to_string()])
        .request_timeout(REQUEST_TIMEOUT)
        .deadline(Duration::from_secs(15))
        .build()
        .unwrap();
    // An independent client, straight to the nodes, to check what the cluster holds.
    let direct = c
        .client_builder(c.nodes.iter().map(|n| n.client_addr.clone()))
        .request_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(15))
        .build()
        .unwrap();

    // Warm-up through the transparent proxy: the HTTP/2 connection is set up.
    let warm = bounded(
        "warm-up create",
        client.create_session(NewSession::for_user("warm")),
    )
    .await
    .unwrap();
    assert!(!warm.replayed);
    assert_eq!(proxy.dropped_connections(), 0);
    assert_eq!(proxy.swallowed_chunks(), 0);

    // 1. Rotation: the answer of the applied rotation is lost; the retry hands back the same
    //    successor, and the session rotated exactly once.
    let rotated = through_dropped_answer(&proxy, "rotate", client.rotate_token(&warm.token))
        .await
        .expect("rotate through a lost answer");
    assert!(rotated.rotated, "a new generation exists");
    assert!(
        rotated.replayed,
        "the answer came from the first (lost) application, not a new one"
    );
    assert_ne!(rotated.token, warm.token);
    assert_eq!(rotated.session.generation, 1, "rotated exactly once");
    let now = bounded(
        "get successor",
        direct.get_session(&rotated.token, Consistency::Linearizable, false),
    )
    .await
    .expect("the returned successor is the token the server produced");
    assert_eq!(now.session.generation, 1, "rotated exactly once");
    assert!(!now.superseded, "the successor is the current token");
    assert_eq!(now.session.id, warm.session.id);
    let again = bounded(
        "second rotate_or_current",
        direct.rotate_or_current(&warm.token),
    )
    .await
    .expect("the old token is inside its grace window");
    assert_eq!(again, rotated.token, "one successor for the old token");
    let after = bounded(
        "get after rotations",
        direct.get_session(&rotated.token, Consistency::Linearizable, false),
    )
    .await
    .unwrap();
    assert_eq!(after.session.generation, 1, "still exactly one rotation");
    assert_eq!(after.session.version, now.session.version);

    // 2. Creation: the answer of the applied create is lost; the retry returns the same
    //    session and token, and the user has exactly one session.
    let created = through_dropped_answer(
        &proxy,
        "create",
        client.create_session(NewSession::for_user("lost-create")),
    )
    .await
    .expect("create through a lost answer");
    assert!(
        created.replayed,
        "the answer came from the first (lost) application, not a new one"
    );
    let listed = bounded(
        "list sessions",
        direct.list_user_sessions("lost-create", Consistency::Linearizable),
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1, "one session despite the retry: {listed:?}");
    assert_eq!(listed[0].id, created.session.id);
    let got = bounded(
        "get created",
        direct.get_session(&created.token, Consistency::Linearizable, false),
    )
    .await
    .expect("the returned token is the one the server produced");
    assert_eq!(got.session.id, created.session.id);
    assert_eq!(got.session.generation, 0);

    // 3. Compare-and-swap update at the current version: the answer of the applied update is
    //    lost; the retry is answered with the first result, not VERSION_CONFLICT, and the
    //    version advanced by exactly one.
    let v0 = got.session.version;
    let updated = through_dropped_answer(
        &proxy,
        "update",
        client.update_session(
            SessionRef::Id(created.session.id.clone()),
            v0,
            Some(b"after".to_vec()),
            None,
        ),
    )
    .await
    .expect("update through a lost answer: no VERSION_CONFLICT may surface");
    assert_eq!(updated.version, v0 + 1, "applied exactly once");
    assert_eq!(updated.data, b"after".to_vec());
    let got = bounded(
        "get updated",
        direct.get_session(&created.token, Consistency::Linearizable, false),
    )
    .await
    .unwrap();
    assert_eq!(got.session.version, v0 + 1, "applied exactly once");
    assert_eq!(got.session.data, b"after".to_vec());

    // Through the (transparent again) proxy, the client still works normally.
    let plain = bounded(
        "plain create",
        client.create_session(NewSession::for_user("plain")),
    )
    .await
    .unwrap();
    assert!(!plain.replayed);
    assert_eq!(proxy.dropped_connections(), 3);
}
