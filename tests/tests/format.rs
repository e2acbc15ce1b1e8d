//! Stored formats stay readable: `tests/fixtures/format-1/` holds the data directory of a
//! one-node cluster (RocksDB: Raft log, Raft metadata, every state table) and its snapshot file,
//! written by a build of stored format 1 after sessions were created, updated, rotated and
//! revoked. Every later build must open it and serve it, and hand its snapshot to a new member.
//!
//! The node runs with its wall clock set back to when the fixture was written (libfaketime,
//! monotonic clocks untouched), so that expiry judges the sessions as on that day.
//! Regenerate the fixture only when a format is deliberately replaced (keep the old one too):
//! `cargo nextest run --release -p sessiond-tests --test format --run-ignored only`.

use serde_json::{json, Value};
use sessiond_proto::v1::*;
use sessiond_tests::{expect_revoked, req, until_stale_reads_find, wait_for, TestCluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format-1")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_and_snapshot_of_format_1_open_and_serve() {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: install Debian's libfaketime (scripts/setup.sh all)"
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    // Back to a few seconds after the fixture was written.
    let written = manifest["written_at_ms"].as_u64().expect("written_at_ms");
    let offset_s = (written as i64 - now_ms() as i64) / 1000 + 5;
    let mut c = TestCluster::builder(1)
        .data_from(&fixture())
        .env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME", &format!("{offset_s:+}"))
        .env("DONT_FAKE_MONOTONIC", "1")
        .start()
        .await;
    let status = c.status(0).await.expect("status");
    let applied = manifest["applied_index"].as_u64().expect("applied_index");
    assert!(status.applied_index >= applied, "{status:?}");
    assert!(
        status.purged_index > 0,
        "the fixture's log was purged: {status:?}"
    );
    let mut s = c.client(0).await;

    for v in manifest["live"].as_array().expect("live") {
        let got = s
            .get_session(req::get(&text(v, "token")))
            .await
            .unwrap_or_else(|e| panic!("{v}: {e:?}"))
            .into_inner()
            .session
            .expect("session");
        assert_eq!(got.id, text(v, "id"));
        assert_eq!(got.user_id, text(v, "user"));
        assert_eq!(got.data, text(v, "data").into_bytes());
        assert_eq!(got.version, v["version"].as_u64().expect("version"));
    }
    for v in manifest["revoked"].as_array().expect("revoked") {
        let r = s.get_session(req::get(&text(v, "token"))).await;
        expect_revoked(r, "logout");
    }
    // A rotation retried with its request id answers what it answered then (the sealed
    // successor, the remembered reply), and a write racing a revoke stays refused.
    for v in manifest["rotated"].as_array().expect("rotated") {
        let again = s
            .rotate_token(RotateTokenRequest {
                token: text(v, "old"),
                request_id: unhex(&text(v, "request_id")),
            })
            .await
            .unwrap_or_else(|e| panic!("{v}: {e:?}"))
            .into_inner();
        assert!(again.replayed, "{v}");
        assert_eq!(again.token, text(v, "new"));
    }
    let gone = &manifest["revoked"][0];
    let r = s
        .update_session(req::update(&text(gone, "token"), 0, b"back"))
        .await;
    assert!(r.is_err(), "a revoked session came back: {r:?}");
    let per_user = s
        .list_user_sessions(ListUserSessionsRequest {
            user_id: "user-0".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        per_user.sessions.len() as u64,
        manifest["user_0_sessions"].as_u64().expect("count")
    );

    // It accepts writes, and a new member catches up from the fixture's snapshot.
    let created = s
        .create_session(req::create("after", b"new"))
        .await
        .expect("create after opening")
        .into_inner();
    let new = c.add_learner().await;
    let target = c.status(0).await.expect("status").applied_index;
    let caught = wait_for(Duration::from_secs(20), "the learner to catch up", || {
        let c = &c;
        async move { c.status(new).await.filter(|s| s.applied_index >= target) }
    })
    .await;
    assert!(caught.snapshot_index > 0, "given a snapshot: {caught:?}");
    let learner = c.client(new).await;
    let mut check = vec![created.token];
    check.extend(
        manifest["live"]
            .as_array()
            .expect("live")
            .iter()
            .map(|v| text(v, "token")),
    );
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    until_stale_reads_find(&learner, &check, "the learner").await;
    let r = learner
        .clone()
        .get_session(req::get_stale(&text(gone, "token")))
        .await;
    expect_revoked(r, "logout");
    c.kill(new);
}

/// Writes `tests/fixtures/format-1/` (see the module comment). Not run by default.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn write_format_fixture() {
    let mut c = TestCluster::builder(1)
        .flags(&["--snapshot-logs", "1000000", "--keep-logs", "2"])
        .start()
        .await;
    let mut s = c.client(0).await;
    let hour = 3_600_000;
    let mut live: Vec<Value> = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..24u32 {
        let mut r = req::create_idle(&format!("user-{}", i % 4), hour);
        r.data = format!("data-{i}").into_bytes();
        r.attributes.insert("ip".into(), format!("10.0.0.{i}"));
        let got = s.create_session(r).await.expect("create").into_inner();
        tokens.push(got.token);
    }
    for (i, t) in tokens.iter().enumerate().take(6) {
        s.update_session(req::update(t, 1, format!("updated-{i}").as_bytes()))
            .await
            .expect("update");
    }
    let mut rotated = Vec::new();
    for t in tokens.iter_mut().skip(6).take(6) {
        let request_id = sessiond_tests::rid();
        let r = s
            .rotate_token(RotateTokenRequest {
                token: t.clone(),
                request_id: request_id.clone(),
            })
            .await
            .expect("rotate")
            .into_inner();
        rotated.push(json!({ "old": t, "new": r.token, "request_id": hex(&request_id) }));
        *t = r.token;
    }
    let mut revoked = Vec::new();
    for t in tokens.drain(18..) {
        s.revoke_session(RevokeSessionRequest {
            session: req::by_token(&t),
            reason: "logout".into(),
            request_id: sessiond_tests::rid(),
        })
        .await
        .expect("revoke");
        revoked.push(json!({ "token": t }));
    }
    // A snapshot (the log purged up to it), then a few entries only the log holds.
    let mut admin = c.cluster_client(0).await;
    admin
        .trigger_snapshot(TriggerSnapshotRequest {})
        .await
        .expect("snapshot");
    for t in tokens.iter().skip(12).take(3) {
        s.get_session(GetSessionRequest {
            token: t.clone(),
            touch: true,
            ..Default::default()
        })
        .await
        .expect("touch");
        s.update_session(req::update(t, 0, b"after the snapshot"))
            .await
            .expect("update after the snapshot");
    }
    for t in &tokens {
        let got = s
            .get_session(req::get(t))
            .await
            .expect("get")
            .into_inner()
            .session
            .expect("session");
        live.push(json!({
            "token": t, "id": got.id, "user": got.user_id,
            "data": String::from_utf8(got.data).expect("utf-8"), "version": got.version,
        }));
    }
    let user_0 = s
        .list_user_sessions(ListUserSessionsRequest {
            user_id: "user-0".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .sessions
        .len();
    let status = c.status(0).await.expect("status");
    let data = c.nodes[0].dir.join("data");
    let seal = c.certs.join("seal.key");
    c.kill(0);
    let out = fixture();
    let _ = std::fs::remove_dir_all(&out);
    sessiond_tests::copy_dir(&data, &out.join("node1"));
    // RocksDB's own diagnostics are no part of the format.
    for f in std::fs::read_dir(out.join("node1/db"))
        .expect("fixture")
        .flatten()
    {
        let name = f.file_name().to_string_lossy().to_string();
        if name.starts_with("LOG") {
            let _ = std::fs::remove_file(f.path());
        }
    }
    std::fs::copy(seal, out.join("seal.key")).expect("seal key");
    let manifest = json!({
        "format": 1,
        "written_at_ms": now_ms(),
        "applied_index": status.applied_index,
        "live": live,
        "revoked": revoked,
        "rotated": rotated,
        "user_0_sessions": user_0,
    });
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).expect("json"),
    )
    .expect("manifest");
}
