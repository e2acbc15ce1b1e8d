//! The signals that stop a process of this binary: Ctrl-C (SIGINT) and SIGTERM, which
//! process managers (systemd, Docker, Kubernetes, `kill`) send. `sessiond serve` then stops its
//! node in order; `sessiond dev` stops its child nodes, so none is left holding its ports.

/// Resolves at the first SIGINT or SIGTERM.
pub async fn shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
