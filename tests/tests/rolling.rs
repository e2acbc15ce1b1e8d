//! A rolling restart under load: every node of a 3-node cluster is stopped (SIGTERM, as a
//! supervisor or Kubernetes does) and started again, one at a time, followers first and the
//! leader last, while applications validate, rotate and update through the client crate. The
//! client's retries must hide every restart: no error reaches the application. The latency
//! seen during each restart (from the stop until half a second after the node caught up) is printed (not asserted: machines are shared and noisy).

use sessiond_client::{Client, Consistency, NewSession, SessionRef};
use sessiond_tests::{wait_for, TestCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One finished call: when it started (since the load began) and how long it took.
type Sample = (Duration, Duration);

#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    errors: Vec<String>,
    ops: u64,
}

/// One application worker: its own session, validated, rotated and updated in turn.
async fn worker(client: Client, user: String, began: Instant, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let created = match client.create_session(NewSession::for_user(&user)).await {
        Ok(c) => c,
        Err(e) => {
            seen.errors.push(format!("create: {e}"));
            return seen;
        }
    };
    let mut token = created.token;
    let mut version = created.session.version;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let t0 = Instant::now();
        let r = match i % 4 {
            0 => client.rotate_token(&token).await.map(|r| {
                token = r.token;
                version = r.session.version;
            }),
            1 => client
                .update_session(
                    SessionRef::Token(token.clone()),
                    version,
                    Some(format!("step {i}").into_bytes()),
                    None,
                )
                .await
                .map(|s| version = s.version),
            _ => client
                .get_session(&token, Consistency::Linearizable, false)
                .await
                .map(|v| version = v.session.version),
        };
        seen.ops += 1;
        seen.samples.push((t0 - began, t0.elapsed()));
        if let Err(e) = r {
            seen.errors.push(format!("op {i} ({}): {e}", i % 4));
        }
    }
    seen
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_under_load_surfaces_no_error() {
    let mut c = TestCluster::start3().await;
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    let client = c.client_builder(endpoints).build().expect("client builds");
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(worker(
                client.clone(),
                format!("user-{w}"),
                began,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Followers first, the leader last.
    let leader = c.leader().await;
    let mut order: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != leader).collect();
    order.push(leader);
    let mut windows = Vec::new();
    for i in order {
        let from = began.elapsed();
        c.stop(i);
        c.start(i);
        let target = wait_for(Duration::from_secs(30), "a leader's status", || {
            let c = &c;
            async move { c.status(c.leader().await).await.map(|s| s.applied_index) }
        })
        .await;
        wait_for(
            Duration::from_secs(30),
            "the restarted node to catch up",
            || {
                let c = &c;
                async move { c.status(i).await.filter(|s| s.applied_index >= target) }
            },
        )
        .await;
        // The load runs a while on the whole cluster before the next restart; the calls of
        // that while count to this restart (their tail may still be retrying).
        tokio::time::sleep(Duration::from_millis(500)).await;
        windows.push((c.nodes[i].id, i == leader, from, began.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    for w in workers {
        let s = w.await.expect("worker");
        all.ops += s.ops;
        all.samples.extend(s.samples);
        all.errors.extend(s.errors);
    }
    for (id, was_leader, from, to) in &windows {
        let during: Vec<Duration> = all
            .samples
            .iter()
            .filter(|(at, _)| at >= from && at <= to)
            .map(|(_, d)| *d)
            .collect();
        eprintln!(
            "restart of node {id}{}: {:.1} s, {} calls, p99 {:?}, max {:?}",
            if *was_leader { " (leader)" } else { "" },
            (*to - *from).as_secs_f64(),
            during.len(),
            percentile(during.clone(), 0.99),
            percentile(during, 1.0),
        );
    }
    eprintln!("{} calls in all", all.ops);
    assert!(all.ops > 100, "the load ran: {} calls", all.ops);
    assert!(
        all.errors.is_empty(),
        "{} errors reached the application: {:?}",
        all.errors.len(),
        &all.errors[..all.errors.len().min(10)]
    );
}
