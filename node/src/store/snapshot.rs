//! The snapshot stream and its durable copy.
//!
//! Stream format (all integers little-endian):
//! `MAGIC`, then records `[cf: u8][key_len: u32][key][value_len: u32][value]`, then an end
//! record `[0xFF][count: u64]` carrying the number of records. Decoding checks every length,
//! the family index and the count, so a truncated or corrupt stream is refused as a whole.
//!
//! The latest built or installed snapshot is kept as one file, `current.snap` =
//! `[meta_len: u32][meta (postcard)][stream]`, written to a temporary file, synced and renamed
//! (see [`SnapshotDir`]).

use super::StoreFault;
use crate::raft_types::{NodeId, NodeInfo};
use openraft::SnapshotMeta;
use sessiond_state::kv::Cf;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `SDSNAP`, the stored format of the records as one ASCII digit (see [`super::format`]), NUL.
const MAGIC: &[u8; 8] = b"SDSNAP1\0";
const _: () = assert!(MAGIC[6] == b'0' + super::format::CURRENT as u8);
const END: u8 = 0xFF;
const FILE: &str = "current.snap";

/// Builds a stream.
pub struct Encoder {
    buf: Vec<u8>,
    count: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            buf: MAGIC.to_vec(),
            count: 0,
        }
    }
}

fn cf_index(cf: Cf) -> u8 {
    Cf::ALL.iter().position(|c| *c == cf).unwrap_or(0) as u8
}

impl Encoder {
    /// Append one pair.
    pub fn push(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.buf.push(cf_index(cf));
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    /// The finished stream.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(END);
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// One decoded pair: family, key, value.
pub type Pair<'a> = (Cf, &'a [u8], &'a [u8]);

/// Meta and stream of a saved snapshot.
pub type Saved = (SnapshotMeta<NodeId, NodeInfo>, Vec<u8>);

/// Decode a whole stream into its pairs, or refuse it.
pub fn decode(stream: &[u8]) -> Result<Vec<Pair<'_>>, StoreFault> {
    let bad = |why: &str| StoreFault::Corrupt(format!("snapshot stream: {why}"));
    if let (Some(b"SDSNAP"), Some(&v)) = (stream.get(..6), stream.get(6)) {
        if v != MAGIC[6] {
            return Err(StoreFault::Format(format!(
                "snapshot stream of format {}; this build reads format {}",
                v.wrapping_sub(b'0'),
                super::format::CURRENT
            )));
        }
    }
    let mut rest = stream
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("bad magic"))?;
    let mut out = Vec::new();
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Some(a)
    }
    fn len(rest: &mut &[u8]) -> Option<usize> {
        let b = take(rest, 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    }
    loop {
        let tag = *take(&mut rest, 1)
            .ok_or_else(|| bad("truncated"))?
            .first()
            .unwrap_or(&END);
        if tag == END {
            let count = take(&mut rest, 8).ok_or_else(|| bad("truncated count"))?;
            let count = u64::from_le_bytes(count.try_into().map_err(|_| bad("count"))?);
            if count != out.len() as u64 {
                return Err(bad("record count does not match"));
            }
            if !rest.is_empty() {
                return Err(bad("trailing bytes"));
            }
            return Ok(out);
        }
        let cf = *Cf::ALL
            .get(usize::from(tag))
            .ok_or_else(|| bad("unknown column family"))?;
        let kl = len(&mut rest).ok_or_else(|| bad("truncated key length"))?;
        let k = take(&mut rest, kl).ok_or_else(|| bad("truncated key"))?;
        let vl = len(&mut rest).ok_or_else(|| bad("truncated value length"))?;
        let v = take(&mut rest, vl).ok_or_else(|| bad("truncated value"))?;
        out.push((cf, k, v));
    }
}

/// The directory that keeps the current snapshot.
///
/// openraft 0.9 builds snapshots in a task of their own, so a build can finish after a newer
/// snapshot was installed. Saves through one `SnapshotDir` (and its clones) are serialized, and
/// a save never replaces a snapshot that covers more of the log: the kept snapshot must always
/// reach at least as far as the purged log, or a lagging follower could never catch up.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl SnapshotDir {
    /// The snapshot directory at `path` (created on the first save).
    pub fn new(path: PathBuf) -> Self {
        SnapshotDir {
            path,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The file holding the current snapshot.
    pub fn file(&self) -> PathBuf {
        self.path.join(FILE)
    }

    /// Durably make this the current snapshot, unless the current one reaches further into
    /// the log. Returns whether it was saved.
    pub fn save(
        &self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        stream: &[u8],
    ) -> Result<bool, StoreFault> {
        // A poisoned lock only means another save panicked; the file is still whole (rename).
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match read_meta(&self.file()) {
            Ok(Some(current)) if current.last_log_id > meta.last_log_id => return Ok(false),
            Ok(_) => {}
            // A damaged file must not stop every later snapshot: replace it.
            Err(e) => tracing::warn!(error = %e, "replacing an unreadable snapshot file"),
        }
        std::fs::create_dir_all(&self.path)?;
        let meta = postcard::to_allocvec(meta).map_err(|e| StoreFault::Corrupt(e.to_string()))?;
        let len = u32::try_from(meta.len())
            .map_err(|_| StoreFault::Corrupt("snapshot meta too large".into()))?;
        let tmp = self.path.join(format!("{FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&len.to_le_bytes())?;
            f.write_all(&meta)?;
            f.write_all(stream)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.file())?;
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(true)
    }

    /// The current snapshot, if one was saved. A damaged file is set aside (renamed, kept for
    /// inspection) and reported as none, so that a new snapshot is built rather than every
    /// later load failing.
    pub fn load(&self) -> Result<Option<Saved>, StoreFault> {
        let bytes = match std::fs::read(self.file()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match parse(&bytes) {
            Ok(saved) => Ok(Some(saved)),
            Err(e) => {
                let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
                let aside = self.path.join(format!("{FILE}.damaged"));
                tracing::error!(
                    error = %e,
                    kept_as = %aside.display(),
                    "the snapshot file is damaged; setting it aside"
                );
                std::fs::rename(self.file(), aside)?;
                Ok(None)
            }
        }
    }
}

/// Meta and stream of a snapshot file's bytes; the stream is checked whole.
fn parse(bytes: &[u8]) -> Result<Saved, StoreFault> {
    let n = meta_len(bytes)?;
    let meta_bytes = bytes.get(4..4 + n).ok_or_else(corrupt_file)?;
    let meta = postcard::from_bytes(meta_bytes).map_err(|e| StoreFault::Corrupt(e.to_string()))?;
    let stream = bytes[4 + n..].to_vec();
    decode(&stream)?;
    Ok((meta, stream))
}

fn corrupt_file() -> StoreFault {
    StoreFault::Corrupt("snapshot file".into())
}

fn meta_len(header: &[u8]) -> Result<usize, StoreFault> {
    let b: [u8; 4] = header
        .get(..4)
        .ok_or_else(corrupt_file)?
        .try_into()
        .map_err(|_| corrupt_file())?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// The meta of the snapshot in `file`, reading only its header.
fn read_meta(file: &Path) -> Result<Option<SnapshotMeta<NodeId, NodeInfo>>, StoreFault> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut header = [0u8; 4];
    f.read_exact(&mut header)?;
    let mut meta = vec![0u8; meta_len(&header)?];
    f.read_exact(&mut meta)?;
    postcard::from_bytes(&meta)
        .map(Some)
        .map_err(|e| StoreFault::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_round_trips_and_refuses_damage() {
        let mut e = Encoder::default();
        e.push(Cf::Sessions, b"k1", b"v1");
        e.push(Cf::Meta, b"clock", &[0u8; 8]);
        let s = e.finish();
        let pairs = decode(&s).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], (Cf::Sessions, &b"k1"[..], &b"v1"[..]));
        assert_eq!(pairs[1].0, Cf::Meta);
        for cut in 0..s.len() {
            assert!(decode(&s[..cut]).is_err(), "truncated at {cut} accepted");
        }
        let mut bad = s.clone();
        bad[8] = 42; // unknown family
        assert!(decode(&bad).is_err());
        let mut extra = s.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // A stream of another format is refused by name, not as garbage.
        let mut newer = s.clone();
        newer[6] = b'2';
        let e = decode(&newer).expect_err("format 2");
        assert!(matches!(e, StoreFault::Format(_)), "{e}");
        assert!(e.to_string().contains("format 2"), "{e}");
    }

    fn meta(index: u64, id: &str) -> SnapshotMeta<NodeId, NodeInfo> {
        SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                index,
            )),
            last_membership: Default::default(),
            snapshot_id: id.into(),
        }
    }

    /// A valid snapshot stream holding one marker value.
    fn stream(marker: &[u8]) -> Vec<u8> {
        let mut e = Encoder::default();
        e.push(Cf::Meta, b"marker", marker);
        e.finish()
    }

    #[test]
    fn saved_snapshot_survives_and_is_never_replaced_by_an_older_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::new(tmp.path().join("snapshot"));
        assert!(dir.load().unwrap().is_none());
        assert!(dir.save(&meta(5, "a"), &stream(b"five")).unwrap());
        // A build that finishes after a newer install must not win.
        assert!(!dir.save(&meta(3, "b"), &stream(b"three")).unwrap());
        let again = SnapshotDir::new(tmp.path().join("snapshot"));
        let (m, data) = again.load().unwrap().unwrap();
        assert_eq!(m.snapshot_id, "a");
        assert_eq!(data, stream(b"five"));
        assert!(again.save(&meta(5, "c"), &stream(b"five again")).unwrap());
        assert!(again.save(&meta(9, "d"), &stream(b"nine")).unwrap());
        assert_eq!(dir.load().unwrap().unwrap().0.snapshot_id, "d");
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_does_not_block_saves() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::new(tmp.path().join("snapshot"));
        assert!(dir.save(&meta(5, "a"), &stream(b"five")).unwrap());
        // Damage the stream after the header: the file no longer loads.
        let mut bytes = std::fs::read(dir.file()).unwrap();
        let n = bytes.len();
        bytes.truncate(n - 2);
        std::fs::write(dir.file(), &bytes).unwrap();
        assert!(dir.load().unwrap().is_none());
        assert!(tmp.path().join("snapshot/current.snap.damaged").exists());
        // A header that cannot be read does not stop the next save either.
        std::fs::write(dir.file(), b"\x09").unwrap();
        assert!(dir.save(&meta(2, "b"), &stream(b"two")).unwrap());
        assert_eq!(dir.load().unwrap().unwrap().0.snapshot_id, "b");
    }
}
