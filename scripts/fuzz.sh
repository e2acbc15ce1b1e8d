#!/usr/bin/env bash
# Run one fuzz target of the `sessiond-fuzz` crate for a long time:
#
#   scripts/fuzz.sh TARGET SECONDS
#
# TARGET is one of: grpc_requests peer_envelopes log_entries snapshot_streams config_toml
# differential (the test files in fuzz/tests/). The target replays its corpus
# (fuzz/tests/__fuzz__/TARGET/corpus/), then runs bolero's random engine for SECONDS. At the
# end it prints the run time, the inputs per second and the number of inputs run; a finding
# fails the run with the (shrunk) input and the BOLERO_RANDOM_SEED that reproduces it:
#
#   BOLERO_RANDOM_SEED=<seed> BOLERO_RANDOM_ITERATIONS=0 scripts/fuzz.sh TARGET 1
#
# Keep a reproducer as a file in fuzz/tests/__fuzz__/TARGET/crashes/: every later run, the
# test suite's included, replays it first.
#
# The engine is the random one on purpose: a coverage-guided engine (libFuzzer through
# cargo-bolero, AFL through cargo-afl) needs either a nightly toolchain or an instrumented
# build of every dependency in a target directory of its own, RocksDB's C++ included, which
# is half an hour on a small machine before the first input runs. The targets are written for
# a blind engine: most read their input as a recipe for a nearly valid message (see
# fuzz/src/input.rs), and they work unchanged under a coverage-guided engine.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(grpc_requests peer_envelopes log_entries snapshot_streams config_toml differential)
usage() {
  echo "usage: $0 TARGET SECONDS   (TARGET: ${targets[*]})" >&2
  exit 2
}
[ $# -eq 2 ] || usage
target="$1"
seconds="$2"
[[ " ${targets[*]} " == *" $target "* ]] || usage
[[ "$seconds" =~ ^[0-9]+$ ]] || usage

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiond-target}"
export BOLERO_RANDOM_TEST_TIME_MS="${BOLERO_RANDOM_TEST_TIME_MS:-$((seconds * 1000))}"
# Inputs of up to 4 KiB, as in the test suite (a seed reproduces only with the same length).
export BOLERO_RANDOM_MAX_LEN="${BOLERO_RANDOM_MAX_LEN:-4096}"

# The same release build as the test suite's, so nothing is compiled twice.
cargo test --release -p sessiond-fuzz --test "$target" -- --exact "$target" --nocapture
