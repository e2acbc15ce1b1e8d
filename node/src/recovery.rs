//! `sessiond backup` (offline, from a stopped node's data directory) and `sessiond restore`
//! (seed the data directory of each member of a new cluster from a backup file). Together
//! they are also the way back from losing a quorum for good: back up a surviving node's data
//! directory, restore it into a new cluster, start it.

use crate::config::parse_initial_cluster;
use crate::raft_types::NodeInfo;
use crate::store::backup;
use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Flags of `sessiond backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Data directory of a stopped node (the node must not run: its database is locked).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where to write the backup file (replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `sessiond restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file (`sessionctl backup` or `sessiond backup`).
    #[arg(long)]
    pub backup: PathBuf,
    /// The empty data directory of one member of the new cluster.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This member's node id (must be one of the new cluster's members).
    #[arg(long)]
    pub node_id: u64,
    /// The new cluster's members and peer addresses: `1=host:7101,2=host:7101,...` (the same
    /// for every member).
    #[arg(long)]
    pub initial_cluster: String,
    /// The members' client addresses, `1=host:7001,...` (what clients and forwarding use).
    #[arg(long)]
    pub client_addrs: String,
}

/// Write `bytes` to `path` through a synced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// `sessiond backup`: the applied state of a stopped node, to a file.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let taken = backup::of_data_dir(&args.data_dir).await?;
    write_atomically(&args.out, &taken.bytes)?;
    println!(
        "backup of {} written to {}: applied index {}, {} bytes",
        args.data_dir.display(),
        args.out.display(),
        taken.applied_index,
        taken.bytes.len()
    );
    if taken.last_log_index > taken.applied_index {
        println!(
            "NOT in the backup: log entries {}..={} that this node had not applied (whatever \
             other nodes committed there is lost if this backup is restored)",
            taken.applied_index + 1,
            taken.last_log_index
        );
    }
    Ok(())
}

/// The members of the new cluster, from the two address lists (same ids in both).
fn members(args: &RestoreArgs) -> anyhow::Result<BTreeMap<u64, NodeInfo>> {
    let peers = parse_initial_cluster(&args.initial_cluster)?;
    let clients = parse_initial_cluster(&args.client_addrs).context("--client-addrs")?;
    if peers.keys().ne(clients.keys()) {
        anyhow::bail!(
            "--initial-cluster names nodes {:?} but --client-addrs names {:?}",
            peers.keys().collect::<Vec<_>>(),
            clients.keys().collect::<Vec<_>>()
        );
    }
    if !peers.contains_key(&args.node_id) {
        anyhow::bail!(
            "--node-id {} is not a member of --initial-cluster",
            args.node_id
        );
    }
    Ok(peers
        .into_iter()
        .map(|(id, peer_addr)| {
            let client_addr = clients.get(&id).cloned().unwrap_or_default();
            (
                id,
                NodeInfo {
                    client_addr,
                    peer_addr,
                },
            )
        })
        .collect())
}

/// `sessiond restore`: seed one member's data directory.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let members = members(&args)?;
    let bytes = std::fs::read(&args.backup)
        .with_context(|| format!("reading {}", args.backup.display()))?;
    let at = backup::restore(&bytes, &args.data_dir, members.clone()).await?;
    println!(
        "node {} restored into {} at index {at}; members {:?}. Restore every member from the \
         same file, then start each with `sessiond serve` (the membership is in the data \
         directory: --initial-cluster is not needed).",
        args.node_id,
        args.data_dir.display(),
        members.keys().collect::<Vec<_>>()
    );
    Ok(())
}
