//! Scale numbers for a 3-node sessiond cluster: load N live sessions, then measure memory
//! and disk per node, how long a killed node takes to serve again after a restart, and how
//! long a fresh node takes to catch up (by snapshot: one is taken and the log purged first).

use crate::backend::sessiond::Sessiond;
use crate::servers::Servers;
use anyhow::Context;
use serde::Serialize;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::{
    AddLearnerRequest, Role, StatusRequest, StatusResponse, TriggerSnapshotRequest,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `scale` measured.
#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub sessions: u64,
    pub load_seconds: f64,
    pub load_ops_per_sec: f64,
    pub rss_mib_per_node: Vec<f64>,
    pub disk_mib_per_node: Vec<f64>,
    /// Node 1's data directory by kind of file, MiB.
    pub disk_mib_by_kind: std::collections::BTreeMap<String, f64>,
    /// Node 1's column families (live SST + memtables), MiB, from `sessiond_table_bytes`.
    pub table_mib: std::collections::BTreeMap<String, f64>,
    pub restart_seconds: f64,
    pub catch_up_seconds: f64,
    pub learner_snapshot_index: u64,
}

/// `sessiond_table_bytes{table="…"} N` lines of a metrics page.
fn table_bytes(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("sessiond_table_bytes{table=\"")?;
            let (table, rest) = rest.split_once("\"}")?;
            Some((table.to_string(), rest.trim().parse().ok()?))
        })
        .collect()
}

async fn status(servers: &Servers, endpoint: &str) -> anyhow::Result<StatusResponse> {
    let ch = servers
        .endpoint(endpoint)?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await?;
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(Duration::from_secs(2));
    Ok(ClusterClient::new(ch).status(req).await?.into_inner())
}

async fn leader(servers: &Servers) -> anyhow::Result<(usize, StatusResponse)> {
    for (i, e) in servers.endpoints.iter().enumerate() {
        if let Ok(s) = status(servers, e).await {
            if s.role == Role::Leader as i32 {
                return Ok((i, s));
            }
        }
    }
    anyhow::bail!("no leader")
}

/// Run the scale measurement; `deadline` bounds the whole run.
pub async fn run(
    bin: &Path,
    flags: &[String],
    sessions: u64,
    workers: usize,
    data_bytes: usize,
    deadline: Duration,
    plaintext: bool,
) -> anyhow::Result<ScaleReport> {
    let until = Instant::now() + deadline;
    let mut servers = Servers::sessiond(bin, 3, flags, plaintext)?;
    let backend = Sessiond::connect(&servers.endpoints, servers.client_tls()?)?;
    // Wait for a leader.
    loop {
        if leader(&servers).await.is_ok() {
            break;
        }
        anyhow::ensure!(Instant::now() < until, "no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Load.
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let mut b = backend.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(w as u64);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= sessions || Instant::now() > until {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let data = sessiond_workload::session_data(&mut rng, data_bytes);
                    let user = sessiond_workload::user_id("scale", n);
                    b.create(&user, &data).await.context("loading")?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(Instant::now() < until, "loading ran out of time");

    // Let every node apply everything, then measure memory and disk.
    let (li, ls) = leader(&servers).await?;
    for e in &servers.endpoints {
        loop {
            match status(&servers, e).await {
                Ok(s) if s.applied_index >= ls.commit_index => break,
                _ if Instant::now() > until => anyhow::bail!("a node never caught up"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rss_mib_per_node = (0..3).map(|i| mib(servers.rss_of(i))).collect();
    let disk_mib_per_node = (0..3).map(|i| mib(servers.disk_of(i))).collect();
    let disk_mib_by_kind = servers
        .disk_breakdown_of(0)
        .into_iter()
        .map(|(k, v)| (k.to_string(), mib(v)))
        .collect();
    let table_mib = servers
        .metrics_of(0)
        .await
        .map(|text| table_bytes(&text))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, mib(v)))
        .collect();

    // Restart a follower: SIGKILL, start, time until it has applied what was committed.
    let f = (li + 1) % 3;
    servers.kill(f).await?;
    let target = leader(&servers).await?.1.commit_index;
    let restarted = Instant::now();
    servers.restart(f)?;
    loop {
        match status(&servers, &servers.endpoints[f]).await {
            Ok(s) if s.applied_index >= target && s.leader_id != 0 => break,
            _ if Instant::now() > until => anyhow::bail!("the restarted node never caught up"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let restart_seconds = restarted.elapsed().as_secs_f64();

    // A fresh node: snapshot and purge first, so it can only catch up by snapshot.
    let (li, _) = leader(&servers).await?;
    let ch = servers.endpoint(&servers.endpoints[li])?.connect().await?;
    let mut admin = ClusterClient::new(ch);
    admin
        .trigger_snapshot(TriggerSnapshotRequest {})
        .await
        .context("snapshot")?;
    let (endpoint, client_addr, peer_addr) = servers.add_sessiond(bin)?;
    let caught = Instant::now();
    let id = servers.endpoints.len() as u64;
    let mut add = tonic::Request::new(AddLearnerRequest {
        node_id: id,
        client_addr,
        peer_addr,
        blocking: true,
    });
    add.set_timeout(until.saturating_duration_since(Instant::now()));
    // The new node may need a moment to open its port.
    loop {
        match admin
            .add_learner(tonic::Request::new(add.get_ref().clone()))
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() > until => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let catch_up_seconds = caught.elapsed().as_secs_f64();
    let learner_snapshot_index = status(&servers, &endpoint).await?.snapshot_index;
    servers.stop().await;
    Ok(ScaleReport {
        sessions,
        load_seconds,
        load_ops_per_sec: sessions as f64 / load_seconds,
        rss_mib_per_node,
        disk_mib_per_node,
        disk_mib_by_kind,
        table_mib,
        restart_seconds,
        catch_up_seconds,
        learner_snapshot_index,
    })
}

#[cfg(test)]
mod tests {
    use super::table_bytes;

    #[test]
    fn table_bytes_reads_only_the_table_gauges() {
        let text = "# HELP sessiond_table_bytes x\n\
                    sessiond_table_bytes{table=\"sessions\"} 1048576\n\
                    sessiond_table_bytes{table=\"raft_log\"} 12\n\
                    sessiond_rows_estimate{table=\"sessions\"} 5\n\
                    sessiond_table_bytes{table=\"broken\"} x\n";
        let t = table_bytes(text);
        assert_eq!(t.len(), 2);
        assert_eq!(t["sessions"], 1_048_576);
        assert_eq!(t["raft_log"], 12);
    }
}
