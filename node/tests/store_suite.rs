//! The RocksDB stores against openraft's storage conformance suite, plus restart and
//! snapshot behaviour specific to sessiond.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, Vote};
use sessiond::raft_types::{StorageError, TypeConfig};
use sessiond::store::{LogStore, StateMachineStore, Store};
use sessiond_state::command::{Batch, Command};
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::record::Policy;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm, _) = Store::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite");
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
}

fn normal(term: u64, index: u64, stamp_ms: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Batch { stamp_ms, commands }),
    }
}

async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.blocking_append(entries).await.expect("append");
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _, _) = Store::open(dir.path()).unwrap();
        append(
            &mut log,
            (1..=5).map(|i| normal(1, i, 1_000, vec![])).collect(),
        )
        .await;
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.save_committed(Some(log_id(1, 4))).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
    }
    let (mut log, _, _) = Store::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 4)));
    let got = log.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    // Purging everything leaves the purge point as the last log id.
    log.purge(log_id(1, 5)).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
}

/// Every state-machine pair, without the membership bookkeeping (an install records the
/// snapshot's membership even where the source never had one).
fn dump(reader: &sessiond::store::StateReader) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    let view = reader.view();
    let mut out = Vec::new();
    for cf in Cf::ALL {
        for (k, v) in view.scan(cf, &[], None, usize::MAX).unwrap() {
            if cf == Cf::Meta && k == b"last_membership" {
                continue;
            }
            out.push((cf, k, v));
        }
    }
    out
}

#[tokio::test]
async fn snapshot_installs_byte_for_byte_and_refuses_damage() {
    let src_dir = tempfile::tempdir().unwrap();
    let (_, mut sm, reader) = Store::open(src_dir.path()).unwrap();
    let policy = Policy {
        grace_window_ms: 5_000,
        ..Policy::default()
    };
    let responses = sm
        .apply(vec![
            normal(1, 1, 1_000, vec![Command::Configure { policy }]),
            normal(1, 2, 2_000, vec![Command::Expire { limit: 10 }]),
        ])
        .await
        .unwrap();
    assert_eq!(responses.len(), 2);
    assert_eq!(reader.applied_index(), 2);
    let before = dump(&reader);
    assert!(!before.is_empty());

    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));
    let stream = snap.snapshot.into_inner();

    // A damaged stream is refused and leaves the target as it was.
    let dst_dir = tempfile::tempdir().unwrap();
    let (_, mut dst, dst_reader) = Store::open(dst_dir.path()).unwrap();
    let empty = dump(&dst_reader);
    let truncated = stream[..stream.len() - 3].to_vec();
    assert!(dst
        .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(truncated)))
        .await
        .is_err());
    assert_eq!(dump(&dst_reader), empty);

    dst.install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(stream)))
        .await
        .unwrap();
    assert_eq!(dump(&dst_reader), before);
    assert_eq!(dst_reader.applied_index(), 2);
    let (applied, _) = dst.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 2)));

    // The installed snapshot is the current one, also after reopening.
    drop(dst);
    drop(dst_reader);
    let (_, mut dst, _) = Store::open(dst_dir.path()).unwrap();
    let current = dst
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 2)));
}
