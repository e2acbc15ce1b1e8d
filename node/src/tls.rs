//! Serving over TLS: accepted TCP connections are handshaken concurrently (a slow or silent
//! client delays only itself) and handed to tonic as `tokio_rustls` streams, whose connect
//! info carries the verified client certificate to the authentication layer and the peer
//! service. The rustls configuration comes from `sessiond_security` and resolves the current
//! certificate on every handshake, so a reload takes effect without restarting the server.

use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// How long a connection may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes waiting for tonic to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// The TLS connections accepted on `listener`, for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(port = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // Nagle's algorithm would hold small replies back until the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // What a failed handshake presented is never logged, only that it failed.
                    Ok(Err(e)) => {
                        tracing::debug!(port = what, %remote, error = %e, "TLS handshake refused")
                    }
                    Err(_) => tracing::debug!(port = what, %remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
