//! The node's HTTP surface for operators and orchestrators: `/healthz` (the process serves)
//! and `/readyz` (it belongs to a cluster with a known leader and has applied what it knows
//! to be committed), and `/metrics` (Prometheus).

use crate::metrics::Metrics;
use crate::raft_types::{NodeId, Raft};
use crate::store::StateReader;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use openraft::ServerState;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the HTTP surface reads.
#[derive(Clone)]
pub struct Http {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateReader,
    pub clocks: crate::clock::Clocks,
    pub metrics: Arc<Metrics>,
}

/// Whether this node can serve: a known leader, a voting or learning member, and no backlog
/// of fetched-but-unapplied log entries beyond `max_lag`.
pub fn readiness(id: NodeId, raft: &Raft, max_lag: u64) -> Result<(), String> {
    let m = raft.metrics().borrow().clone();
    if m.running_state.is_err() {
        return Err("raft has stopped".into());
    }
    let leader = m.current_leader.ok_or("no known leader")?;
    if !m
        .membership_config
        .membership()
        .nodes()
        .any(|(n, _)| *n == id)
    {
        return Err("not a member of the cluster".into());
    }
    if matches!(m.state, ServerState::Candidate | ServerState::Shutdown) {
        return Err(format!("state {:?}", m.state));
    }
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let last = m.last_log_index.unwrap_or(0);
    if last.saturating_sub(applied) > max_lag {
        return Err(format!(
            "applied index {applied} is behind log index {last}"
        ));
    }
    let _ = leader;
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Http>) -> (StatusCode, String) {
    match readiness(h.id, &h.raft, 1_000) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(h): State<Http>) -> String {
    h.metrics.render(&h.raft, &h.state, &h.clocks)
}

/// Serve the HTTP surface on `addr` until the process ends: over TLS with `tls` (the node's
/// certificate; no client certificate asked for), else plaintext.
pub async fn serve(
    addr: SocketAddr,
    http: Http,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(http);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    match tls {
        None => axum::serve(listener, app).await?,
        Some(config) => {
            let local = listener.local_addr()?;
            let incoming = crate::tls::incoming(listener, config, "http");
            axum::serve(TlsListener { incoming, local }, app).await?
        }
    }
    Ok(())
}

/// Handshaken TLS connections as an axum listener.
struct TlsListener {
    incoming: tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    >,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let Ok(peer) = stream.get_ref().0.peer_addr() else {
                        continue;
                    };
                    return (stream, peer);
                }
                Some(Err(_)) => continue,
                // The accept loop ended with the runtime: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
