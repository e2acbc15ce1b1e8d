#!/usr/bin/env bash
# The project's test command: system packages, formatting, lints, build, the whole test suite
# (including the planted-bug proof), a chaos smoke run of both layers, and a benchmark smoke run.
#
# Everything is built with the release profile: RocksDB's C++ (most of a build from scratch)
# is then compiled once, and shared with `cargo run --release -p sessiond` and the image.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiond-target}"
bin="$CARGO_TARGET_DIR/release"

phase_start=$SECONDS
phase() {
  if [ -n "${phase_name:-}" ]; then
    echo "   ($phase_name: $((SECONDS - phase_start)) s)"
  fi
  phase_name="$1"
  phase_start=$SECONDS
  echo "== $1"
}

phase "system packages"
bash scripts/setup.sh all

phase "cargo fmt --check"
cargo fmt --all -- --check

phase "cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

phase "cargo build"
# The integration tests start the sessiond binary as separate processes.
cargo build --release --workspace --bins
# One RocksDB build must serve every package: a package built alone must not compile it again
# (the workspace-hack crate unifies the features of build dependencies).
alone="$(cargo build --release -p sessiond --bin sessiond -v 2>&1)"
if grep -qE "^ *Compiling librocksdb-sys" <<<"$alone"; then
  echo "building -p sessiond alone rebuilt librocksdb-sys: regenerate the workspace-hack" \
    "crate (cargo hakari generate)" >&2
  exit 1
fi

phase "deployment checks (Kubernetes schemas, alert rules and their tests, dashboard)"
bash deploy/k8s/check.sh
bash deploy/prometheus/check.sh

# The container-layer tests and smoke run need the image of the current release binary.
phase "container image"
deploy/build-image.sh sessiond:dev

phase "tests"
cargo nextest run --release --workspace --no-fail-fast

# The Python client and WSGI middleware (examples/python) against a `sessiond dev` cluster.
phase "Python client (pytest against sessiond dev)"
SESSIOND_BIN="$bin/sessiond" python3 -m pytest -q -p no:cacheprovider examples/python/tests

# The planted-bug proofs build the in-process nodes with deliberate bugs (a stale read on a
# deposed leader, a follower counted fresh while behind, the leader's own clock as the stamp)
# and assert the harness reports each.
phase "planted bugs must be caught"
cargo nextest run --release -p sessiond-chaos --test planted \
  --features planted-stale-reads,planted-lagging-follower,planted-wall-clock-stamp

# Storage faults at exact persistence points need nodes built with failpoints (test builds
# only). The chaos binary is rebuilt with them and without the planted bugs, so the in-process
# smoke below injects disk faults too.
phase "storage faults (failpoints)"
cargo nextest run --release -p sessiond-chaos --test storage --features failpoints
cargo build --release -p sessiond-chaos --features failpoints --bin sessiond-chaos

out="$(mktemp -d)"
phase "chaos smoke: in-process layer (failures kept in $out)"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 3 --schedules 40 --seconds 3 --seed 1000 --out "$out"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 5 --schedules 10 --seconds 3 --seed 2000 --out "$out"

phase "chaos smoke: container layer (failures kept in $out)"
RUST_LOG=off "$bin/sessiond-chaos" run --layer docker --nodes 3 --schedules 5 --seconds 4 --seed 3000 --out "$out"
RUST_LOG=off "$bin/sessiond-chaos" run --layer docker --nodes 5 --schedules 5 --seconds 4 --seed 4000 --out "$out"

phase "compose files (3 and 5 nodes, TLS on)"
bash deploy/compose-test.sh deploy/compose.yaml 3
bash deploy/compose-test.sh deploy/compose-5.yaml 5

phase "benchmark smoke (2 s per phase; every installed store)"
"$bin/sessiond-bench" run --seconds 2 --workers 8 --prefill 4 --json "$out/bench.json"
phase "done"
