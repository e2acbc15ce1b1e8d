//! Fuzz target `config_toml`: the TOML configuration file and the initial cluster list (see `sessiond_fuzz::targets::config`).
//!
//! As a test: the corpus in `tests/__fuzz__/config_toml/corpus/` (and any `crashes/` kept there),
//! then random inputs for `sessiond_fuzz::TEST_TIME`. Longer: `scripts/fuzz.sh config_toml SECONDS`.

#[test]
fn config_toml() {
    bolero::check!()
        .with_test_time(sessiond_fuzz::TEST_TIME)
        .for_each(sessiond_fuzz::targets::config::run);
}
