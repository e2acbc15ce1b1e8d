//! The stored format of a data directory: which encoding its records, log entries and
//! snapshots use, so that a later build knows how to read (or upgrade) what an earlier one
//! wrote, and an older build refuses what a newer one wrote instead of misreading it.
//!
//! The version is kept once per database (`raft_meta/format`) rather than in every value:
//! values stay the compact postcard encoding of [`sessiond_state::codec`], and a change of
//! encoding comes with an upgrade step here that rewrites the database at open. Snapshot
//! streams carry the same version in their magic (see [`super::snapshot`]).
//!
//! Data directories written before the marker existed hold format 1: the fixture in
//! `tests/fixtures/format-1/` is one, and every build must open and serve it.

use super::{cf, StoreFault, CF_RAFT_META};
use rocksdb::{WriteOptions, DB};

/// The format this build writes.
pub const CURRENT: u32 = 1;
/// The oldest format this build reads (upgrading it to [`CURRENT`] at open).
pub const OLDEST: u32 = 1;

const KEY: &[u8] = b"format";

/// Check the format of an opened database, upgrading an older one and marking an unmarked
/// one; an unknown or newer format is refused with a message naming both versions.
pub(crate) fn check(db: &DB) -> Result<u32, StoreFault> {
    let meta = cf(db, CF_RAFT_META)?;
    let found = match db.get_cf(meta, KEY)? {
        None => None,
        Some(b) => Some(u32::from_be_bytes(b.as_slice().try_into().map_err(
            |_| StoreFault::Corrupt(format!("format marker of {} bytes", b.len())),
        )?)),
    };
    match found {
        Some(v) if v == CURRENT => return Ok(v),
        Some(v) if v > CURRENT => {
            return Err(StoreFault::Format(format!(
                "the data directory holds stored format {v}, written by a newer sessiond; this \
                 build reads formats {OLDEST} to {CURRENT}"
            )))
        }
        Some(v) if v < OLDEST => {
            return Err(StoreFault::Format(format!(
                "the data directory holds stored format {v}, older than any this build reads \
                 ({OLDEST} to {CURRENT}): open it with an earlier release first"
            )))
        }
        // Formats OLDEST..CURRENT would be upgraded here, one step at a time; there are none
        // yet. Unmarked directories were written in format 1.
        Some(_) | None => {}
    }
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.put_cf_opt(meta, KEY, CURRENT.to_be_bytes(), &synced)?;
    Ok(CURRENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> DB {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        DB::open_cf(&o, dir, [CF_RAFT_META]).expect("open")
    }

    #[test]
    fn a_directory_is_marked_and_a_newer_or_broken_marker_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open(dir.path());
        assert_eq!(check(&db).expect("unmarked"), CURRENT);
        assert_eq!(check(&db).expect("marked"), CURRENT);
        let meta = cf(&db, CF_RAFT_META).expect("cf");
        db.put_cf(meta, KEY, (CURRENT + 1).to_be_bytes())
            .expect("put");
        let e = check(&db).expect_err("newer");
        assert!(e.to_string().contains("newer sessiond"), "{e}");
        db.put_cf(meta, KEY, 0u32.to_be_bytes()).expect("put");
        assert!(matches!(check(&db), Err(StoreFault::Format(_))));
        db.put_cf(meta, KEY, [1u8, 2]).expect("put");
        assert!(matches!(check(&db), Err(StoreFault::Corrupt(_))));
    }
}
