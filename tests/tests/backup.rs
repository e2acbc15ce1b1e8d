//! Backup and restore: `sessionctl backup` under load, the cluster destroyed, `sessiond restore`
//! into three fresh nodes; and the way back from losing a quorum for good (`sessiond backup` of
//! a survivor's data directory, restored as a new cluster). Damaged backups are refused.

use serde_json::Value;
use sessiond_client::{Consistency, NewSession};
use sessiond_proto::v1::*;
use sessiond_tests::{
    expect_err, expect_revoked, req, rid, until_stale_reads_find, wait_for, TestCluster,
};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sessionctl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    let out = Command::new(sessiond_tests::binary().with_file_name("sessionctl"))
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .env("SESSIOND_CA", c.certs.join("ca.crt"))
        .env("SESSIOND_CERT", c.certs.join("client-admin.crt"))
        .env("SESSIOND_KEY", c.certs.join("client-admin.key"))
        .args(args)
        .output()
        .expect("run sessionctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sessiond(args: &[&str]) -> (bool, String) {
    let out = Command::new(sessiond_tests::binary())
        .args(args)
        .output()
        .expect("run sessiond");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A restore of `file` into `dir` (one node of a cluster at made-up addresses).
fn restore_into(file: &Path, dir: &Path) -> (bool, String) {
    sessiond(&[
        "restore",
        "--backup",
        &file.display().to_string(),
        "--data-dir",
        &dir.display().to_string(),
        "--node-id",
        "1",
        "--initial-cluster",
        "1=127.0.0.1:1",
        "--client-addrs",
        "1=127.0.0.1:2",
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_load_restores_into_a_new_cluster() {
    let c = TestCluster::start3().await;
    let mut s = c.leader_client().await;
    let mut live = Vec::new();
    for i in 0..40u32 {
        let mut r = req::create(&format!("user-{}", i % 5), format!("data-{i}").as_bytes());
        r.attributes.insert("n".into(), i.to_string());
        live.push(
            s.create_session(r)
                .await
                .expect("create")
                .into_inner()
                .token,
        );
    }
    // Rotated (their retry must answer the same successor after the restore) and revoked.
    let mut rotations = Vec::new();
    for t in live.iter_mut().take(10) {
        let r = RotateTokenRequest {
            token: t.clone(),
            request_id: rid(),
        };
        let got = s
            .rotate_token(r.clone())
            .await
            .expect("rotate")
            .into_inner();
        rotations.push((r, got.token.clone()));
        *t = got.token;
    }
    let mut revoked = Vec::new();
    for t in live.drain(30..) {
        s.revoke_session(RevokeSessionRequest {
            session: req::by_token(&t),
            reason: "logout".into(),
            request_id: rid(),
        })
        .await
        .expect("revoke");
        revoked.push(t);
    }
    // A session that expires a few seconds after the restore.
    let short = s
        .create_session(CreateSessionRequest {
            absolute_timeout_ms: 6_000,
            ..req::create("short", b"")
        })
        .await
        .expect("create short")
        .into_inner()
        .token;

    // The backup, with writes going on.
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    let client = c.client_builder(endpoints).build().expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 2_000 {
                let _ = client
                    .create_session(NewSession::for_user(format!("load-{}", n % 7)))
                    .await;
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster.backup");
    let f = file.display().to_string();
    let (code, out, err) = sessionctl(&c, &["--json", "backup", &f]);
    assert_eq!(code, 0, "{out}{err}");
    let info: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert!(info["applied_index"].as_u64().unwrap_or(0) > 50, "{info}");
    stop.store(true, Ordering::Relaxed);
    let loaded = load.await.expect("load");
    assert!(loaded > 0);
    let seal = dir.path().join("seal.key");
    std::fs::copy(c.certs.join("seal.key"), &seal).expect("seal key");
    drop(s);
    drop(c);

    // A damaged, a truncated and an unknown file are refused, and nothing is written.
    let bytes = std::fs::read(&file).expect("backup");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    let cases = [
        (flipped, "checksum"),
        (bytes[..bytes.len() - 100].to_vec(), "truncated"),
        (b"not a backup at all".to_vec(), "not a sessiond backup"),
    ];
    for (i, (content, why)) in cases.iter().enumerate() {
        let bad = dir.path().join(format!("bad-{i}"));
        std::fs::write(&bad, content).expect("write");
        let target = dir.path().join(format!("target-{i}"));
        let (ok, text) = restore_into(&bad, &target);
        assert!(!ok, "a bad backup ({why}) was restored");
        assert!(text.contains(why), "{why}: {text}");
        assert!(
            !target.join("db").exists(),
            "nothing written for a bad backup"
        );
    }
    // Nor into a directory that holds data already.
    let used = dir.path().join("used");
    assert!(restore_into(&file, &used).0);
    let (ok, text) = restore_into(&file, &used);
    assert!(!ok && text.contains("already holds"), "{text}");

    // Three fresh nodes from the backup.
    let started = Instant::now();
    let mut r = TestCluster::builder(3)
        .restore_from(&file, &seal)
        .start()
        .await;
    eprintln!(
        "restored cluster serving {:?} after its start",
        started.elapsed()
    );
    let mut s = r.leader_client().await;
    for t in &live {
        s.get_session(req::get(t))
            .await
            .unwrap_or_else(|e| panic!("live token after restore: {e:?}"));
    }
    for t in &revoked {
        expect_revoked(s.get_session(req::get(t)).await, "logout");
        let back = s.update_session(req::update(t, 0, b"back")).await;
        expect_err(back, ErrorCode::Revoked);
    }
    for (r, successor) in &rotations {
        let again = s
            .rotate_token(r.clone())
            .await
            .expect("replay")
            .into_inner();
        assert!(again.replayed);
        assert_eq!(&again.token, successor);
    }
    let listed = s
        .list_user_sessions(ListUserSessionsRequest {
            user_id: "user-1".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sessions.len(), 6, "the user index came along");
    // Time goes on: the short session expires.
    wait_for(
        Duration::from_secs(15),
        "the short session to expire",
        || {
            let mut s = s.clone();
            let short = short.clone();
            async move {
                match s.get_session(req::get(&short)).await {
                    Err(e) if sessiond_tests::code(&e) == ErrorCode::Expired => Some(()),
                    Err(e) if sessiond_tests::code(&e) == ErrorCode::NotFound => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    // Writes, and a member added later gets the state by snapshot (there is no older log).
    let fresh = s
        .create_session(req::create("after", b"x"))
        .await
        .expect("create on the restored cluster")
        .into_inner()
        .token;
    let new = r.add_learner().await;
    let learner = r.client(new).await;
    until_stale_reads_find(&learner, &[&fresh, &live[0], &live[29]], "the learner").await;
    expect_revoked(
        learner
            .clone()
            .get_session(req::get_stale(&revoked[0]))
            .await,
        "logout",
    );
    r.kill(new);
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_a_quorum_for_good_recovers_from_a_survivor() {
    let mut c = TestCluster::start3().await;
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    let client = c.client_builder(endpoints).build().expect("client");
    let mut tokens = Vec::new();
    for i in 0..20 {
        let created = client
            .create_session(NewSession::for_user(format!("u{i}")))
            .await
            .expect("create");
        tokens.push(created.token);
    }
    // Every node has applied them (linearizable reads through the survivor-to-be).
    let survivor = c.follower().await;
    let target = c
        .status(c.leader().await)
        .await
        .expect("status")
        .applied_index;
    wait_for(Duration::from_secs(10), "the survivor to apply", || {
        let c = &c;
        async move {
            c.status(survivor)
                .await
                .filter(|s| s.applied_index >= target)
        }
    })
    .await;
    // Two nodes are gone for good; the survivor alone cannot serve.
    for i in 0..c.nodes.len() {
        if i != survivor {
            c.kill(i);
        }
    }
    c.stop(survivor);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("survivor.backup");
    let data = c.nodes[survivor].dir.join("data");
    let (ok, text) = sessiond(&[
        "backup",
        "--data-dir",
        &data.display().to_string(),
        "--out",
        &file.display().to_string(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("applied index"), "{text}");
    let seal = dir.path().join("seal.key");
    std::fs::copy(c.certs.join("seal.key"), &seal).expect("seal key");
    drop(c);

    // A new one-node cluster from the survivor's state; then it grows again.
    let mut r = TestCluster::builder(1)
        .restore_from(&file, &seal)
        .start()
        .await;
    let endpoints: Vec<String> = r.nodes.iter().map(|n| n.client_addr.clone()).collect();
    let client = r.client_builder(endpoints).build().expect("client");
    for t in &tokens {
        client
            .get_session(t, Consistency::Linearizable, false)
            .await
            .unwrap_or_else(|e| panic!("a session the survivor held: {e}"));
    }
    client
        .create_session(NewSession::for_user("after"))
        .await
        .expect("writes after recovery");
    let new = r.add_learner().await;
    let n = &r.nodes[new];
    let mut admin = r.cluster_client(0).await;
    let changed = admin
        .change_membership(ChangeMembershipRequest {
            add_voters: vec![n.id],
            ..Default::default()
        })
        .await
        .expect("promote")
        .into_inner();
    assert_eq!(changed.members.iter().filter(|m| m.voter).count(), 2);
}

/// Not run by default: the time to back up, restore and start a cluster holding many sessions
/// (`cargo nextest run --release -p sessiond-tests --test backup --run-ignored only
/// --no-capture`; SESSIONS sets how many, default 100 000).
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_backup_and_restore() {
    let n: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let c = TestCluster::start3().await;
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    let client = c.client_builder(endpoints).build().expect("client");
    let t = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut last = String::new();
                for i in (w..n).step_by(64) {
                    let mut s = NewSession::for_user(format!("user-{}", i % 10_000));
                    s.data = vec![7u8; 256];
                    last = client.create_session(s).await.expect("create").token;
                }
                last
            })
        })
        .collect();
    let mut some = Vec::new();
    for w in workers {
        some.push(w.await.expect("worker"));
    }
    eprintln!("{n} sessions created in {:?}", t.elapsed());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("big.backup");
    let t = Instant::now();
    let (code, out, err) = sessionctl(&c, &["--json", "backup", &file.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("sessionctl backup: {:?}: {}", t.elapsed(), out.trim());
    let seal = dir.path().join("seal.key");
    std::fs::copy(c.certs.join("seal.key"), &seal).expect("seal key");
    drop(c);
    let t = Instant::now();
    let r = TestCluster::builder(3)
        .restore_from(&file, &seal)
        .start()
        .await;
    eprintln!(
        "restore of 3 members and start until a leader: {:?}",
        t.elapsed()
    );
    let mut s = r.leader_client().await;
    for t in &some {
        s.get_session(req::get(t)).await.expect("restored session");
    }
}
