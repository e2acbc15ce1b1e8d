//! Backups of the applied state, and the restore that seeds a new cluster from one.
//!
//! File layout (integers little-endian): `SDBACKUP`, the stored format (u32), the applied
//! index and its term (u64 each), the length of the stream (u64), the snapshot stream of every
//! state table ([`super::snapshot`]), then the SHA-256 of everything before it. A file that is
//! truncated, damaged anywhere, of a newer format or holds a malformed stream is refused as a
//! whole before anything is written.
//!
//! A restore writes, into an empty data directory, the backup's state as the state machine's,
//! applied at the backup's index, the log purged up to it, a snapshot file of it, and a new
//! membership of the given members. Every member of the new cluster is restored from the same
//! file, so they start equal; members added later receive a snapshot (the log before the
//! backup does not exist), never a replay onto an empty state.

use super::machine::{dump, Membership};
use super::{format, snapshot, Store, StoreFault};
use crate::raft_types::{NodeId, NodeInfo};
use anyhow::Context;
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const MAGIC: &[u8; 8] = b"SDBACKUP";
const HEADER: usize = 8 + 4 + 8 + 8 + 8;
const DIGEST: usize = 32;

/// A checked backup.
#[derive(Debug)]
pub struct Backup<'a> {
    pub format: u32,
    pub applied_index: u64,
    pub applied_term: u64,
    pub stream: &'a [u8],
}

/// Why a backup file is refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a sessiond backup")]
    NotABackup,
    #[error("the backup is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("the backup's checksum does not match: the file is damaged")]
    Checksum,
    #[error("a backup of stored format {0}; this build reads formats {OLDEST} to {CURRENT}", OLDEST = format::OLDEST, CURRENT = format::CURRENT)]
    Format(u32),
    #[error("the backup's content is malformed: {0}")]
    Content(String),
}

/// The backup file of a state dump.
fn encode(applied: Option<LogId<NodeId>>, stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + stream.len() + DIGEST);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format::CURRENT.to_le_bytes());
    out.extend_from_slice(&applied.map(|l| l.index).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&applied.map(|l| l.leader_id.term).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&(stream.len() as u64).to_le_bytes());
    out.extend_from_slice(stream);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Check a backup file whole: magic, lengths, checksum, format, and every record.
pub fn decode(bytes: &[u8]) -> Result<Backup<'_>, BackupError> {
    if !bytes.starts_with(MAGIC) {
        return Err(if MAGIC.starts_with(bytes) {
            BackupError::Truncated(bytes.len())
        } else {
            BackupError::NotABackup
        });
    }
    if bytes.len() < HEADER + DIGEST {
        return Err(BackupError::Truncated(bytes.len()));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut f = [0u8; 4];
    f.copy_from_slice(&bytes[8..12]);
    let format = u32::from_le_bytes(f);
    let stream_len =
        usize::try_from(u64_at(28)).map_err(|_| BackupError::Truncated(bytes.len()))?;
    let Some(total) = stream_len
        .checked_add(HEADER + DIGEST)
        .filter(|t| *t == bytes.len())
    else {
        return Err(if stream_len > bytes.len() {
            BackupError::Truncated(bytes.len())
        } else {
            BackupError::Content(format!(
                "{} bytes where the header announces {}",
                bytes.len(),
                stream_len.saturating_add(HEADER + DIGEST)
            ))
        });
    };
    let (body, digest) = bytes.split_at(total - DIGEST);
    if Sha256::digest(body).as_slice() != digest {
        return Err(BackupError::Checksum);
    }
    if !(format::OLDEST..=format::CURRENT).contains(&format) {
        return Err(BackupError::Format(format));
    }
    let stream = &body[HEADER..];
    snapshot::decode(stream).map_err(|e| BackupError::Content(e.to_string()))?;
    Ok(Backup {
        format,
        applied_index: u64_at(12),
        applied_term: u64_at(20),
        stream,
    })
}

/// A backup of a node's applied state (a consistent RocksDB view): its applied index and the
/// file's bytes.
pub fn of_state(reader: &super::StateReader) -> Result<(u64, Vec<u8>), StoreFault> {
    let (applied, _, stream) = dump(&reader.db)?;
    Ok((
        applied.map(|l| l.index).unwrap_or(0),
        encode(applied, &stream),
    ))
}

/// What an offline backup of a stopped node's data directory found.
pub struct Offline {
    pub applied_index: u64,
    /// The last entry of its log: entries after the applied index are not in the backup.
    pub last_log_index: u64,
    pub bytes: Vec<u8>,
}

/// A backup of the data directory of a stopped node (its applied state).
pub async fn of_data_dir(dir: &Path) -> anyhow::Result<Offline> {
    let (mut log, _machine, reader) = Store::open(dir)?;
    let last = log
        .get_log_state()
        .await
        .context("reading the log")?
        .last_log_id
        .map(|l| l.index)
        .unwrap_or(0);
    let (applied_index, bytes) = of_state(&reader)?;
    Ok(Offline {
        applied_index,
        last_log_index: last,
        bytes,
    })
}

/// Seed the empty data directory `dir` with a backup, as a member of a new cluster of
/// `members`; the index the restored state is applied at.
pub async fn restore(
    bytes: &[u8],
    dir: &Path,
    members: BTreeMap<NodeId, NodeInfo>,
) -> anyhow::Result<u64> {
    let backup = decode(bytes)?;
    let db_dir = dir.join("db");
    if db_dir.exists() && db_dir.read_dir()?.next().is_some() {
        anyhow::bail!(
            "{} already holds a data directory: restore into an empty one",
            dir.display()
        );
    }
    if members.is_empty() {
        anyhow::bail!("a restored cluster needs at least one member");
    }
    let (mut log, mut machine, _) = Store::open(dir)?;
    // Term 0: no leader of the new cluster made it; the first election starts at term 1.
    let at = LogId::new(CommittedLeaderId::new(0, 0), backup.applied_index);
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let membership: Membership =
        StoredMembership::new(Some(at), openraft::Membership::new(vec![voters], members));
    let meta = SnapshotMeta {
        last_log_id: Some(at),
        last_membership: membership,
        snapshot_id: format!("restore-{}", backup.applied_index),
    };
    machine.install(&meta, backup.stream)?;
    log.purge(at).await.context("purging the restored log")?;
    Ok(backup.applied_index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_state::kv::Cf;

    fn sample() -> Vec<u8> {
        let mut e = snapshot::Encoder::default();
        e.push(Cf::Sessions, b"k1", b"v1");
        e.push(Cf::Meta, b"clock", &[7u8; 8]);
        let at = LogId::new(CommittedLeaderId::new(3, 1), 42);
        encode(Some(at), &e.finish())
    }

    #[test]
    fn a_backup_round_trips_and_any_damage_is_refused() {
        let b = sample();
        let got = decode(&b).expect("decodes");
        assert_eq!((got.applied_index, got.applied_term), (42, 3));
        assert_eq!(got.format, format::CURRENT);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "truncated at {cut} accepted");
        }
        for at in 0..b.len() {
            let mut bad = b.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "a flipped byte at {at} accepted");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(matches!(decode(b"hello"), Err(BackupError::NotABackup)));
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let mut b = sample();
        b[8..12].copy_from_slice(&(format::CURRENT + 1).to_le_bytes());
        let body = b.len() - DIGEST;
        let digest = Sha256::digest(&b[..body]);
        b[body..].copy_from_slice(&digest);
        let e = decode(&b).expect_err("newer format");
        assert!(matches!(e, BackupError::Format(_)), "{e}");
    }
}
