//! The operator surface end to end: sessionctl (text and --json), membership changes, and the
//! HTTP endpoints /metrics and /readyz.

use serde_json::Value;
use sessiond_tests::{wait_for, TestCluster};
use std::process::Command;
use std::time::Duration;

fn sessionctl_path() -> std::path::PathBuf {
    sessiond_tests::binary().with_file_name("sessionctl")
}

/// Run sessionctl as the harness's admin principal (the environment `sessiond dev` prints);
/// (exit code, stdout).
fn ctl(c: &TestCluster, endpoints: &str, args: &[&str]) -> (i32, String) {
    let certs = &c.certs;
    let out = Command::new(sessionctl_path())
        .arg("--endpoints")
        .arg(endpoints)
        .env("SESSIOND_CA", certs.join("ca.crt"))
        .env("SESSIOND_CERT", certs.join("client-admin.crt"))
        .env("SESSIOND_KEY", certs.join("client-admin.key"))
        .args(args)
        .output()
        .expect("run sessionctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn sessionctl_sessions_and_membership() {
    let mut c = TestCluster::start3().await;
    let eps = c
        .nodes
        .iter()
        .map(|n| n.client_addr.clone())
        .collect::<Vec<_>>()
        .join(",");

    let (code, out) = ctl(
        &c,
        &eps,
        &[
            "--json",
            "session",
            "create",
            "--user",
            "dan",
            "--data",
            "hi",
            "--attr",
            "device=phone",
            "--idle",
            "10m",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let created = &json_lines(&out)[0];
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["session"]["attributes"]["device"], "phone");
    assert_eq!(created["session"]["idle_timeout_ms"], 600_000);

    let rid = "000102030405060708090a0b0c0d0e0f";
    let (_, out) = ctl(
        &c,
        &eps,
        &["--json", "session", "rotate", &token, "--request-id", rid],
    );
    let rotated = json_lines(&out)[0].clone();
    let (_, out) = ctl(
        &c,
        &eps,
        &["--json", "session", "rotate", &token, "--request-id", rid],
    );
    let again = json_lines(&out)[0].clone();
    assert_eq!(
        rotated["token"], again["token"],
        "a retried rotation returns the same token"
    );
    assert_eq!(again["replayed"], true);

    let (code, out) = ctl(&c, &eps, &["--json", "session", "list", "--user", "dan"]);
    assert_eq!((code, json_lines(&out).len()), (0, 1));
    let new_token = rotated["token"].as_str().unwrap().to_string();
    let (code, _) = ctl(
        &c,
        &eps,
        &["session", "revoke", &new_token, "--reason", "bye"],
    );
    assert_eq!(code, 0);
    let (code, _) = ctl(&c, &eps, &["session", "get", &new_token]);
    assert_eq!(code, 4, "revoked exits 4");
    let (code, _) = ctl(&c, &eps, &["session", "get", "sdt1_nope"]);
    assert_eq!(code, 6, "invalid input exits 6");
    let (code, _) = ctl(
        &c,
        "127.0.0.1:9",
        &["--timeout", "1s", "session", "get", &new_token],
    );
    assert_eq!(code, 7, "an unreachable cluster exits 7");

    // Membership: add a 4th node as learner, promote it, remove node 1; status shows each step.
    let new = c.add_node();
    wait_for(Duration::from_secs(10), "the new node to serve", || {
        let c = &c;
        async move { c.status(new).await }
    })
    .await;
    let (id, ca, pa) = (
        c.nodes[new].id.to_string(),
        c.nodes[new].client_addr.clone(),
        c.nodes[new].peer_addr.clone(),
    );
    let (code, out) = ctl(
        &c,
        &eps,
        &["--json", "member", "add-learner", &id, &ca, &pa],
    );
    assert_eq!(code, 0, "{out}");
    let status = |eps: &str| {
        let (_, out) = ctl(&c, eps, &["--json", "status"]);
        json_lines(&out)
    };
    let rows = status(&eps);
    let members = rows[0]["members"].as_array().unwrap().clone();
    assert!(members.iter().any(|m| m["id"] == 4 && m["voter"] == false));
    let (code, _) = ctl(&c, &eps, &["member", "promote", &id]);
    assert_eq!(code, 0);
    let rows = status(&eps);
    assert!(rows[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == 4 && m["voter"] == true));
    // Removing a node that is no voter is refused, and changes nothing.
    let (code, out) = ctl(&c, &eps, &["member", "remove", "9"]);
    assert_ne!(code, 0, "{out}");
    let (code, _) = ctl(&c, &eps, &["member", "remove", "1"]);
    assert_eq!(code, 0);
    let eps4 = format!("{eps},{ca}");
    let rows = wait_for(
        Duration::from_secs(10),
        "node 1 to leave the membership",
        || {
            let eps4 = eps4.clone();
            async move {
                let rows = status(&eps4);
                let voters: Vec<i64> = rows.iter().find(|r| r["role"] == "leader")?["members"]
                    .as_array()?
                    .iter()
                    .filter(|m| m["voter"] == true)
                    .filter_map(|m| m["id"].as_i64())
                    .collect();
                (voters == vec![2, 3, 4]).then_some(rows)
            }
        },
    )
    .await;
    assert!(rows
        .iter()
        .all(|r| r.get("error").is_none() || r["client_addr"] != ca.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_readiness() {
    let mut c = TestCluster::start3().await;
    let leader = c.leader().await;
    let eps = c.nodes[leader].client_addr.clone();
    let (code, _) = ctl(&c, &eps, &["session", "create", "--user", "eve"]);
    assert_eq!(code, 0);
    let http = c.nodes[leader].http_addr.clone();
    let (status, body) = http_get(&http, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(value("sessiond_commands_total{op=\"create\",outcome=\"ok\"}") >= 1.0);
    assert_eq!(value("sessiond_is_leader"), 1.0);
    assert!(value("sessiond_raft{field=\"applied_index\"}") >= 1.0);
    assert!(value("sessiond_rpc_duration_seconds_count{method=\"CreateSession\"}") >= 1.0);
    assert_eq!(value("sessiond_raft{field=\"voters\"}"), 3.0);
    // A healthy leader hears from a majority every heartbeat (100 ms); a follower has no age.
    assert!(value("sessiond_raft{field=\"quorum_ack_age_ms\"}") < 2000.0);
    let follower = (leader + 1) % 3;
    let (_, theirs) = http_get(&c.nodes[follower].http_addr, "/metrics")
        .await
        .expect("metrics answer");
    assert!(
        !theirs.contains("sessiond_raft{field=\"quorum_ack_age_ms\"}"),
        "leaders only"
    );
    assert!(theirs.contains("sessiond_raft{field=\"voters\"} 3"));

    // Every node is ready; a node cut off from the others stops being ready.
    for n in &c.nodes {
        let (code, _) = http_get(&n.http_addr, "/readyz").await.unwrap();
        assert_eq!(code, 200);
    }
    let lone = (leader + 1) % 3;
    for i in 0..3 {
        if i != lone {
            c.kill(i);
        }
    }
    let addr = c.nodes[lone].http_addr.clone();
    wait_for(Duration::from_secs(15), "/readyz to turn unready", || {
        let addr = addr.clone();
        async move { (http_get(&addr, "/readyz").await?.0 == 503).then_some(()) }
    })
    .await;
    let (code, _) = http_get(&addr, "/healthz").await.unwrap();
    assert_eq!(code, 200, "the process is still healthy");
}
