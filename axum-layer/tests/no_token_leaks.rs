//! No token in logs, response bodies or `Debug` output, whatever path a request takes.

mod common;

use axum::http::{Method, StatusCode};
use common::{config, start, Browser};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Every log line of the process, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_never_reach_logs_or_bodies() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "sessiond_axum=trace,sessiond_client=trace,info",
        ))
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    let app = start(
        &[
            "--grace-window-ms",
            "1000",
            "--rotation-min-interval-ms",
            "1000",
        ],
        config().rotate_after(Some(Duration::from_millis(500))),
    )
    .await;
    let b = Browser::new(app.addr);
    let mut replies = Vec::new();
    let login = b.send(Method::POST, "/login?user=lena").await;
    b.apply(&login);
    replies.push(login.clone());
    for (method, path) in [
        (Method::GET, "/whoami"),
        (Method::GET, "/debug"),
        (Method::POST, "/cart/set?items=2"),
        (Method::POST, "/rotate"),
    ] {
        replies.push(b.go(method, path).await);
    }
    // By schedule, late, superseded, then reused (after the grace window) and revoked.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    replies.push(b.get("/whoami").await);
    b.apply(&login);
    replies.push(b.get("/whoami").await);
    replies.push(b.get("/debug").await);
    replies.push(b.post("/login?user=lena").await);
    replies.push(b.post("/cart/add-raced?inject=2").await);
    replies.push(b.post("/logout").await);
    b.apply(&login);
    replies.push(b.get("/whoami").await);
    b.set_cookie("sdt1_0000000000000000000000000000000000000000000");
    replies.push(b.get("/whoami").await);

    let tokens: Vec<String> = replies
        .iter()
        .filter_map(|r| r.session_cookie())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(
        tokens.len() >= 4,
        "logins and rotations handed out tokens: {tokens:?}"
    );
    assert!(
        replies.iter().any(|r| r.status == StatusCode::CONFLICT),
        "the conflict path ran"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("logged in") && text.contains("session_id"),
        "the layer's logs were captured:\n{text}"
    );
    for t in &tokens {
        assert!(!text.contains(t.as_str()), "a token in the logs:\n{text}");
        // Not even a part of it.
        assert!(
            !text.contains(&t[5..25]),
            "part of a token in the logs:\n{text}"
        );
        for r in &replies {
            assert!(!r.body.contains(&t[5..25]), "a token in a body: {r:?}");
        }
    }
}
