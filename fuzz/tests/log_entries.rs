//! Fuzz target `log_entries`: log entry payloads, applied to a populated in-memory state (see `sessiond_fuzz::targets::log`).
//!
//! As a test: the corpus in `tests/__fuzz__/log_entries/corpus/` (and any `crashes/` kept there),
//! then random inputs for `sessiond_fuzz::TEST_TIME`. Longer: `scripts/fuzz.sh log_entries SECONDS`.

#[test]
fn log_entries() {
    bolero::check!()
        .with_test_time(sessiond_fuzz::TEST_TIME)
        .for_each(sessiond_fuzz::targets::log::run);
}
