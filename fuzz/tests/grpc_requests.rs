//! Fuzz target `grpc_requests`: client-port request messages and the handlers' checks before state (see `sessiond_fuzz::targets::grpc`).
//!
//! As a test: the corpus in `tests/__fuzz__/grpc_requests/corpus/` (and any `crashes/` kept there),
//! then random inputs for `sessiond_fuzz::TEST_TIME`. Longer: `scripts/fuzz.sh grpc_requests SECONDS`.

// Counts live bytes, so the target can bound what a decoder allocates for one input.
#[global_allocator]
static ALLOC: sessiond_fuzz::alloc::Counting = sessiond_fuzz::alloc::Counting;

#[test]
fn grpc_requests() {
    bolero::check!()
        .with_test_time(sessiond_fuzz::TEST_TIME)
        .for_each(sessiond_fuzz::targets::grpc::run);
}
