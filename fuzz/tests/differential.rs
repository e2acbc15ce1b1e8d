//! Fuzz target `differential`: command sequences: the state machine against the model of docs/semantics.md (see `sessiond_fuzz::targets::differential`).
//!
//! As a test: the corpus in `tests/__fuzz__/differential/corpus/` (and any `crashes/` kept there),
//! then random inputs for `sessiond_fuzz::TEST_TIME`. Longer: `scripts/fuzz.sh differential SECONDS`.

#[test]
fn differential() {
    bolero::check!()
        .with_test_time(sessiond_fuzz::TEST_TIME)
        .for_each(sessiond_fuzz::targets::differential::run);
}
