//! The RocksDB stores against openraft's storage conformance suite, plus restart and
//! snapshot behaviour specific to sessiond.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, Vote};
use sessiond::raft_types::{StorageError, TypeConfig};
use sessiond::store::{LogStore, StateMachineStore, Store};
use sessiond_state::command::{Batch, Command, Target};
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::record::Policy;
use sessiond_state::token::{RequestKey, SealedToken, SessionId, TokenHash, TOKEN_BYTES};
use std::collections::BTreeMap;
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

fn create(n: u8, user: &str) -> Command {
    Command::Create {
        request_id: RequestKey([n; 16]),
        id: SessionId([n; 16]),
        token_hash: TokenHash([n; 32]),
        sealed_token: SealedToken([n; TOKEN_BYTES]),
        user_id: user.into(),
        data: vec![n; 40],
        attributes: BTreeMap::from([("device".to_string(), format!("d{n}"))]),
        idle_timeout_ms: None,
        absolute_timeout_ms: None,
    }
}

fn revoke(n: u8, request: u8) -> Command {
    Command::Revoke {
        request_id: RequestKey([request; 16]),
        target: Target::Id(SessionId([n; 16])),
        reason: "logout".into(),
    }
}

#[tokio::test]
async fn install_replaces_every_family_of_a_populated_store() {
    // Source: sessions, tokens, users, expiry, a tombstone, revocations and dedup rows.
    let src_dir = tempfile::tempdir().unwrap();
    let (_, mut src, src_reader) = Store::open(src_dir.path()).unwrap();
    src.apply(vec![
        normal(1, 1, 1_000, vec![create(1, "alice"), create(2, "alice")]),
        normal(1, 2, 2_000, vec![create(3, "bob"), revoke(1, 100)]),
    ])
    .await
    .unwrap();
    let before = dump(&src_reader);
    for cf in Cf::ALL {
        assert!(before.iter().any(|(c, _, _)| *c == cf), "{cf:?} is empty");
    }
    let snap = src
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    // Target: a different history, with rows the snapshot does not have.
    let dst_dir = tempfile::tempdir().unwrap();
    let (_, mut dst, dst_reader) = Store::open(dst_dir.path()).unwrap();
    dst.apply(vec![normal(
        1,
        1,
        500,
        vec![create(7, "carol"), create(8, "dave"), revoke(8, 101)],
    )])
    .await
    .unwrap();
    let own = dump(&dst_reader);
    assert_ne!(own, before);

    // A damaged stream changes nothing, whatever the damage.
    let stream = snap.snapshot.into_inner();
    let mut unknown_cf = stream.clone();
    unknown_cf[8] = 0x42;
    for bad in [
        stream[..stream.len() / 2].to_vec(),
        stream[..8].to_vec(),
        unknown_cf,
        Vec::new(),
    ] {
        assert!(dst
            .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(bad)))
            .await
            .is_err());
        assert_eq!(dump(&dst_reader), own);
        assert_eq!(dst_reader.applied_index(), 1);
    }

    let mut applied = dst_reader.subscribe_applied();
    dst.install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(stream)))
        .await
        .unwrap();
    assert_eq!(dump(&dst_reader), before);
    assert!(applied.has_changed().unwrap());
    assert_eq!(*applied.borrow_and_update(), 2);
    let (last, membership) = dst.applied_state().await.unwrap();
    assert_eq!(last, Some(log_id(1, 2)));
    assert_eq!(membership, snap.meta.last_membership);
}

#[tokio::test]
async fn a_view_is_one_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm, reader) = Store::open(dir.path()).unwrap();
    sm.apply(vec![normal(1, 1, 1_000, vec![create(1, "alice")])])
        .await
        .unwrap();
    let view = reader.view();
    let mut applied = reader.subscribe_applied();
    sm.apply(vec![
        normal(1, 2, 2_000, vec![create(2, "alice")]),
        Entry {
            log_id: log_id(1, 3),
            payload: EntryPayload::Blank,
        },
    ])
    .await
    .unwrap();
    assert_eq!(*applied.borrow_and_update(), 3);
    assert_eq!(reader.applied_index(), 3);
    // The older view still sees one session; a new view sees both.
    assert_eq!(
        view.scan(Cf::Sessions, &[], None, usize::MAX)
            .unwrap()
            .len(),
        1
    );
    assert!(view.get(Cf::Sessions, &[2; 16]).unwrap().is_none());
    let now = reader.view();
    assert_eq!(
        now.scan(Cf::Sessions, &[], None, usize::MAX).unwrap().len(),
        2
    );
    // Bounded, limited scans.
    assert_eq!(now.scan(Cf::Sessions, &[], None, 1).unwrap().len(), 1);
    let upper = [2u8; 16];
    let first = now.scan(Cf::Sessions, &[], Some(&upper), 10).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, vec![1u8; 16]);
    drop(view);
    drop(now);

    // Applied state and its index survive a reopen.
    drop(sm);
    drop(reader);
    let (_, mut sm, reader) = Store::open(dir.path()).unwrap();
    assert_eq!(reader.applied_index(), 3);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 3)));
}

/// A store with two applied entries, its snapshot (meta, stream) and its dump.
async fn built_snapshot() -> (
    TempDir,
    openraft::SnapshotMeta<u64, sessiond::raft_types::NodeInfo>,
    Vec<u8>,
    Vec<(Cf, Vec<u8>, Vec<u8>)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm, reader) = Store::open(dir.path()).unwrap();
    sm.apply(vec![
        normal(1, 1, 1_000, vec![create(1, "alice")]),
        normal(1, 2, 2_000, vec![create(2, "bob")]),
    ])
    .await
    .unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let before = dump(&reader);
    (dir, snap.meta, snap.snapshot.into_inner(), before)
}

/// An install writes the snapshot file before the state: a crash between the two is finished
/// when the store opens again, so the state never lags the kept snapshot (nor the log purged
/// behind it).
#[tokio::test]
async fn an_install_cut_short_after_the_snapshot_file_is_finished_on_open() {
    let (_src, meta, stream, before) = built_snapshot().await;
    let dst_dir = tempfile::tempdir().unwrap();
    drop(Store::open(dst_dir.path()).unwrap());
    // The crash: the snapshot file is saved, the state was never written.
    sessiond::store::snapshot::SnapshotDir::new(dst_dir.path().join("snapshot"))
        .save(&meta, &stream)
        .unwrap();
    let (_, mut dst, reader) = Store::open(dst_dir.path()).unwrap();
    let (applied, _) = dst.applied_state().await.unwrap();
    assert_eq!(applied, meta.last_log_id);
    assert_eq!(dump(&reader), before);
    assert_eq!(reader.applied_index(), 2);
}

/// A damaged snapshot file neither stops later snapshots from being kept nor every later load:
/// it is set aside and replaced.
#[tokio::test]
async fn a_damaged_snapshot_file_is_set_aside_and_replaced() {
    let (dir, meta, _, _) = built_snapshot().await;
    let file = dir.path().join("snapshot").join("current.snap");
    std::fs::write(&file, b"\xff\xff\xff\x7fgarbage").unwrap();
    {
        let (_, mut sm, _) = Store::open(dir.path()).unwrap();
        assert!(
            sm.get_current_snapshot().await.unwrap().is_none(),
            "a damaged snapshot is not served"
        );
        assert!(dir.path().join("snapshot/current.snap.damaged").exists());
    }
    std::fs::write(&file, b"\xff\xff\xff\x7fgarbage").unwrap();
    let (_, mut sm, _) = Store::open(dir.path()).unwrap_or_else(|e| panic!("open: {e:#}"));
    std::fs::write(&file, b"\x01\x00\x00\x00").unwrap();
    let rebuilt = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("a new snapshot replaces the damaged file");
    assert_eq!(rebuilt.meta.last_log_id, meta.last_log_id);
    let current = sm.get_current_snapshot().await.unwrap().expect("kept");
    assert_eq!(current.meta.last_log_id, meta.last_log_id);
}
