//! Fuzz target `snapshot_streams`: snapshot streams and files, loaded and installed into RocksDB (see `sessiond_fuzz::targets::snapshot`).
//!
//! As a test: the corpus in `tests/__fuzz__/snapshot_streams/corpus/` (and any `crashes/` kept there),
//! then random inputs for `sessiond_fuzz::TEST_TIME`. Longer: `scripts/fuzz.sh snapshot_streams SECONDS`.

// Counts live bytes, so the target can bound what a decoder allocates for one input.
#[global_allocator]
static ALLOC: sessiond_fuzz::alloc::Counting = sessiond_fuzz::alloc::Counting;

#[test]
fn snapshot_streams() {
    bolero::check!()
        .with_test_time(sessiond_fuzz::TEST_TIME)
        .for_each(sessiond_fuzz::targets::snapshot::run);
}
