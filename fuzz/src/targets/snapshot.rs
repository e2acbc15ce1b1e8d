//! Target 4: snapshots (`node/src/store/snapshot.rs`, `machine.rs`): the stream decoder, the
//! snapshot file a node keeps and loads, installing a received snapshot into RocksDB (and
//! then reading, applying and building a snapshot on top of what was installed), and opening
//! a node's store whose snapshot file holds the bytes.
//!
//! Input: the first byte chooses the stage (bits 1..) and whether the rest is the bytes as
//! they are or a recipe — a stream of real state rows, or a snapshot file around one, then
//! damaged a little (bit 0). Raw bytes are a stream for the decoder, and laid out as a
//! snapshot file (`[meta length: u32 LE][meta][stream]`) for the other stages.
//!
//! Asserted: no panic; decoding a stream takes memory proportional to it, and a stream that
//! decodes is exactly the encoding of its pairs; a snapshot file either loads or is set aside,
//! and a valid snapshot can be saved after it either way; whatever an install accepts can be
//! read, applied to and snapshotted again without a panic (errors are fine).

use crate::alloc;
use crate::arbitrary::{self, Known};
use crate::input::{mutate, Source};
use crate::targets::peer::{log_id, membership};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{Entry, EntryPayload, SnapshotMeta, StoredMembership};
use sessiond::raft_types::{NodeId, NodeInfo, TypeConfig};
use sessiond::store::snapshot::{self, Encoder, SnapshotDir};
use sessiond::store::{StateMachineStore, StateReader, Store};
use sessiond_state::kv::Cf;
use sessiond_state::query;
use sessiond_state::token::TokenHash;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The stages, as the first input byte chooses them (`selector >> 1`, modulo 8).
pub const STAGES: [&str; 8] = [
    "stream", "stream", "stream", "file", "file", "install", "install", "reopen",
];

/// The first byte of an input that feeds its rest as it is to `stage`.
pub fn raw_selector(stage: usize) -> u8 {
    (stage as u8) << 1
}

pub fn run(input: &[u8]) {
    let mut src = Source::new(input);
    let selector = src.u8();
    let stage = usize::from(selector >> 1) % STAGES.len();
    let recipe = selector & 1 == 1;
    match STAGES[stage] {
        "stream" => {
            let bytes = if recipe {
                let mut s = stream_recipe(&mut src);
                mutate(&mut s, &mut src);
                s
            } else {
                src.rest().to_vec()
            };
            stream(&bytes);
        }
        "file" => {
            let bytes = if recipe {
                file_recipe(&mut src)
            } else {
                src.rest().to_vec()
            };
            file(&bytes);
        }
        "install" => {
            // What a leader sends: the metadata and the stream, laid out as in a file.
            let (meta, bytes) = if recipe {
                let meta = meta(&mut src);
                let mut s = stream_recipe(&mut src);
                if src.bool() {
                    mutate(&mut s, &mut src);
                }
                (meta, s)
            } else {
                split_file(src.rest())
            };
            install(&meta, bytes, &mut src);
        }
        _ => {
            let bytes = if recipe {
                file_recipe(&mut src)
            } else {
                src.rest().to_vec()
            };
            reopen(&bytes);
        }
    }
}

/// The stream decoder alone.
pub fn stream(bytes: &[u8]) {
    let (decoded, peak) = alloc::peak_during(|| snapshot::decode(bytes).is_ok());
    assert!(
        peak <= alloc::decode_budget(bytes.len()),
        "decoding a {}-byte snapshot stream took {peak} bytes",
        bytes.len()
    );
    if decoded {
        let pairs = snapshot::decode(bytes).expect("decoded once");
        let mut e = Encoder::default();
        for (cf, k, v) in &pairs {
            e.push(*cf, k, v);
        }
        assert!(
            e.finish() == bytes,
            "a snapshot stream that decodes is not the encoding of its pairs"
        );
    }
}

/// A snapshot file with these bytes: loaded or set aside, and replaceable either way.
pub fn file(bytes: &[u8]) {
    let tmp = TempDir::new("file");
    let dir = SnapshotDir::new(tmp.path().join("snapshot"));
    std::fs::create_dir_all(tmp.path().join("snapshot")).expect("snapshot dir");
    std::fs::write(dir.file(), bytes).expect("write snapshot file");
    let loaded = dir
        .load()
        .expect("loading a snapshot file fails only on I/O");
    match &loaded {
        Some((_, stream)) => {
            snapshot::decode(stream).expect("a loaded snapshot's stream decodes");
        }
        None => assert!(
            !dir.file().exists(),
            "an unreadable snapshot file was neither loaded nor set aside"
        ),
    }
    let mut e = Encoder::default();
    e.push(Cf::Meta, b"marker", b"1");
    let fresh = e.finish();
    let fresh_meta = SnapshotMeta {
        last_log_id: Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            u64::MAX,
        )),
        last_membership: StoredMembership::default(),
        snapshot_id: "fresh".into(),
    };
    let saved = dir
        .save(&fresh_meta, &fresh)
        .expect("saving after a loaded or set-aside file");
    let (meta, stream) = dir.load().expect("load").expect("a snapshot is kept");
    if saved {
        assert_eq!(meta.snapshot_id, "fresh");
        assert_eq!(stream, fresh);
    }
}

/// One RocksDB store per test process, installed into again and again.
struct Installed {
    _dir: TempDir,
    machine: StateMachineStore,
    reader: StateReader,
    runtime: tokio::runtime::Runtime,
    index: u64,
}

fn store() -> &'static Mutex<Installed> {
    static STORE: OnceLock<Mutex<Installed>> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = TempDir::new("install");
        let (_, machine, reader) = Store::open(dir.path()).expect("open a store");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Mutex::new(Installed {
            _dir: dir,
            machine,
            reader,
            runtime,
            index: 1_000_000,
        })
    })
}

/// Install a received snapshot, then use what was installed.
pub fn install(meta: &SnapshotMeta<NodeId, NodeInfo>, stream: Vec<u8>, src: &mut Source<'_>) {
    let mut guard = store().lock().unwrap_or_else(|p| p.into_inner());
    let s = &mut *guard;
    let installed = s.runtime.block_on(
        s.machine
            .install_snapshot(meta, Box::new(Cursor::new(stream.clone()))),
    );
    if snapshot::decode(&stream).is_err() {
        assert!(
            installed.is_err(),
            "a damaged snapshot stream was installed"
        );
    }
    if installed.is_err() {
        return;
    }
    read_everything(&s.reader);
    s.index += 1;
    let entry = Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), s.index),
        payload: EntryPayload::Normal(arbitrary::batch(src, &Known::default())),
    };
    let _ = s.runtime.block_on(s.machine.apply(vec![entry]));
    read_everything(&s.reader);
    let built = s.runtime.block_on(async {
        let mut builder = s.machine.get_snapshot_builder().await;
        builder.build_snapshot().await
    });
    if let Ok(snap) = built {
        snapshot::decode(snap.snapshot.get_ref()).expect("a built snapshot decodes");
    }
}

/// Every read the request path makes, on whatever the state holds; errors are fine.
fn read_everything(reader: &StateReader) {
    let view = reader.view();
    let now = query::clock(&view).unwrap_or(0);
    let _ = query::policy(&view);
    let _ = query::by_token(&view, &TokenHash([0; 32]), now);
    for user in ["ann", "bob", ""] {
        let _ = query::list_user_page(&view, user, now, None, 100, 3 << 20);
    }
    let _ = query::expiry_due(&view, now);
    let _ = query::revocations_page(&view, query::FeedCursor::at(0), 64);
    for cf in Cf::ALL {
        let _ = reader.estimate_keys(cf);
    }
}

/// Open a node's store whose snapshot file holds `bytes`.
pub fn reopen(bytes: &[u8]) {
    let tmp = TempDir::new("reopen");
    std::fs::create_dir_all(tmp.path().join("snapshot")).expect("snapshot dir");
    std::fs::write(tmp.path().join("snapshot").join("current.snap"), bytes).expect("write");
    if let Ok((_, _, reader)) = Store::open(tmp.path()) {
        read_everything(&reader);
    }
}

/// Real rows: the log target's base state, a few of them dropped, changed or added.
pub fn stream_recipe(src: &mut Source<'_>) -> Vec<u8> {
    let (base, _) = crate::targets::log::base();
    let mut e = Encoder::default();
    for (cf, k, v) in base.dump() {
        // Zero (and the end of the input) keeps the row as it is.
        match src.u8() % 16 {
            1 => {}
            2 => e.push(cf, &k, &src.bytes(16)),
            3 => e.push(Cf::ALL[src.below(Cf::ALL.len())], &k, &v),
            _ => e.push(cf, &k, &v),
        }
    }
    for _ in 0..src.below(3) {
        let key = src.bytes(12);
        let value = src.bytes(24);
        e.push(Cf::ALL[src.below(Cf::ALL.len())], &key, &value);
    }
    e.finish()
}

/// Snapshot metadata as a leader sends it.
pub fn meta(src: &mut Source<'_>) -> SnapshotMeta<NodeId, NodeInfo> {
    SnapshotMeta {
        last_log_id: src.bool().then(|| log_id(src)),
        last_membership: StoredMembership::new(src.bool().then(|| log_id(src)), membership(src)),
        snapshot_id: src.string(24),
    }
}

/// The metadata and stream of bytes laid out as a snapshot file; when no metadata can be
/// read there, default metadata and all of the bytes as the stream.
pub fn split_file(bytes: &[u8]) -> (SnapshotMeta<NodeId, NodeInfo>, Vec<u8>) {
    let parsed = bytes.get(..4).and_then(|h| {
        let n = u32::from_le_bytes(h.try_into().ok()?) as usize;
        let meta_bytes = bytes.get(4..4usize.checked_add(n)?)?;
        let meta = postcard::from_bytes(meta_bytes).ok()?;
        Some((meta, bytes[4 + n..].to_vec()))
    });
    parsed.unwrap_or_else(|| {
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "raw".into(),
        };
        (meta, bytes.to_vec())
    })
}

/// The bytes of a snapshot file holding `meta` and `stream`.
pub fn file_bytes(meta: &SnapshotMeta<NodeId, NodeInfo>, stream: &[u8]) -> Vec<u8> {
    let meta = postcard::to_allocvec(meta).expect("meta encodes");
    let mut file = (meta.len() as u32).to_le_bytes().to_vec();
    file.extend_from_slice(&meta);
    file.extend_from_slice(stream);
    file
}

/// A snapshot file: `[meta length: u32 LE][meta][stream]`, damaged a little.
pub fn file_recipe(src: &mut Source<'_>) -> Vec<u8> {
    let meta = meta(src);
    let mut stream = stream_recipe(src);
    if src.one_in(3) {
        mutate(&mut stream, src);
    }
    let mut file = file_bytes(&meta, &stream);
    if src.bool() {
        mutate(&mut file, src);
    }
    file
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sessiond-fuzz-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
