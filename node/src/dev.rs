//! `sessiond dev`: a local N-node cluster of child processes on 127.0.0.1, for trying the
//! store out and for developing against it. Each node is a real `sessiond serve` process
//! with its own data directory; stopping with Ctrl-C stops them all, and running the command
//! again restarts the same cluster from its data. It is secure like any cluster: it makes a
//! throwaway CA, node certificates and a client certificate with every role in
//! `<data-dir>/certs` (kept across runs) and prints the line that points `sessionctl` and
//! `Client::from_env()` at them.

use crate::config::DevArgs;
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

struct DevNode {
    id: u64,
    client: String,
    peer: String,
    http: String,
}

fn ports(args: &DevArgs, id: u64) -> anyhow::Result<DevNode> {
    let base = u64::from(args.base_port);
    let port = |offset: u64| -> anyhow::Result<u16> {
        u16::try_from(base + offset + id).context("--base-port leaves no room for the ports")
    };
    Ok(DevNode {
        id,
        client: format!("127.0.0.1:{}", port(0)?),
        peer: format!("127.0.0.1:{}", port(100)?),
        http: format!("127.0.0.1:{}", port(200)?),
    })
}

/// The client principal `sessiond dev` makes, with every role.
pub const DEV_CLIENT: &str = "dev";

fn spawn(
    exe: &Path,
    node: &DevNode,
    initial: &str,
    dir: &Path,
    certs: &Path,
) -> anyhow::Result<Child> {
    let data = dir.join(format!("node{}", node.id));
    std::fs::create_dir_all(&data)?;
    let log = std::fs::File::create(dir.join(format!("node{}.log", node.id)))?;
    let child = Command::new(exe)
        .arg("serve")
        .args(["--node-id", &node.id.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .args(["--client-addr", &node.client])
        .args(["--peer-addr", &node.peer])
        .args(["--metrics-addr", &node.http])
        .args(["--initial-cluster", initial])
        .arg("--certs-dir")
        .arg(certs)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {}", node.id))?;
    Ok(child)
}

/// Run the local cluster until Ctrl-C or SIGTERM, then stop its nodes.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    let exe = std::env::current_exe().context("locating the sessiond binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let nodes = (1..=args.nodes)
        .map(|id| ports(&args, id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let initial = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer))
        .collect::<Vec<_>>()
        .join(",");
    let certs = std::path::absolute(args.data_dir.join("certs"))
        .context("locating the certificates directory")?;
    crate::certs::ensure_local(
        &certs,
        args.nodes,
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
        &[(DEV_CLIENT.to_owned(), sessiond_security::Role::ALL.to_vec())],
    )?;
    let mut children = Vec::new();
    for n in &nodes {
        children.push(spawn(&exe, n, &initial, &args.data_dir, &certs)?);
    }
    println!(
        "sessiond dev cluster: {} nodes, data and logs in {}",
        nodes.len(),
        args.data_dir.display()
    );
    for n in &nodes {
        println!(
            "  node {}: client {}  peer {}  http http://{}/readyz",
            n.id, n.client, n.peer, n.http
        );
    }
    let endpoints = nodes
        .iter()
        .map(|n| n.client.as_str())
        .collect::<Vec<_>>()
        .join(",");
    println!("endpoints: {endpoints}");
    println!("TLS and authentication are on; for sessionctl and Client::from_env():");
    println!(
        "  export SESSIOND_ENDPOINTS={endpoints} SESSIOND_CA={} SESSIOND_CERT={} SESSIOND_KEY={}",
        certs.join(sessiond_security::certs::CA_CERT).display(),
        certs
            .join(sessiond_security::certs::client_cert_file(DEV_CLIENT))
            .display(),
        certs
            .join(sessiond_security::certs::client_key_file(DEV_CLIENT))
            .display(),
    );
    println!("press Ctrl-C to stop");

    let mut exited = vec![false; children.len()];
    // Listening from now on: a signal is never missed between two turns of the loop.
    let stop = crate::signal::shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, child) in children.iter_mut().enumerate() {
                    if !exited[i] {
                        if let Ok(Some(status)) = child.try_wait() {
                            exited[i] = true;
                            eprintln!(
                                "node {} exited ({status}); see {}",
                                nodes[i].id,
                                args.data_dir.join(format!("node{}.log", nodes[i].id)).display()
                            );
                        }
                    }
                }
                if exited.iter().all(|e| *e) {
                    bail!("every node exited");
                }
            }
        }
    }
    println!("stopping");
    for child in &mut children {
        let _ = child.start_kill();
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    Ok(())
}
