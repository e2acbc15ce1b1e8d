//! Fuzz target `peer_envelopes`: Raft envelopes and openraft messages a peer sends or answers (see `sessiond_fuzz::targets::peer`).
//!
//! As a test: the corpus in `tests/__fuzz__/peer_envelopes/corpus/` (and any `crashes/` kept there),
//! then random inputs for `sessiond_fuzz::TEST_TIME`. Longer: `scripts/fuzz.sh peer_envelopes SECONDS`.

// Counts live bytes, so the target can bound what a decoder allocates for one input.
#[global_allocator]
static ALLOC: sessiond_fuzz::alloc::Counting = sessiond_fuzz::alloc::Counting;

#[test]
fn peer_envelopes() {
    bolero::check!()
        .with_test_time(sessiond_fuzz::TEST_TIME)
        .for_each(sessiond_fuzz::targets::peer::run);
}
