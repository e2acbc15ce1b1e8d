#!/usr/bin/env bash
# The project's test command: formatting, lints, build, the whole test suite (including the
# planted-bug proof), a chaos smoke run of both layers, and a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiond-target}"
bin="$CARGO_TARGET_DIR/debug"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build"
# The integration tests start the sessiond binary as separate processes.
cargo build --workspace --bins

# The container-layer tests and smoke run need the image of the current release binary.
echo "== container image (release build)"
deploy/build-image.sh sessiond:dev

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# The planted-bug proof builds the in-process nodes with a deliberate stale-read bug and
# asserts the harness reports it. It shares the debug directory, so the chaos binary is
# rebuilt without the bug right after.
echo "== planted bug must be caught"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p sessiond-chaos --features planted-stale-reads --test planted
else
  cargo test -p sessiond-chaos --features planted-stale-reads --test planted
fi
cargo build -p sessiond-chaos --bin sessiond-chaos

out="$(mktemp -d)"
echo "== chaos smoke: in-process layer (failures kept in $out)"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 3 --schedules 40 --seconds 3 --seed 1000 --out "$out"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 5 --schedules 10 --seconds 3 --seed 2000 --out "$out"

echo "== chaos smoke: container layer (failures kept in $out)"
RUST_LOG=off "$bin/sessiond-chaos" run --layer docker --nodes 3 --schedules 5 --seconds 4 --seed 3000 --out "$out"
RUST_LOG=off "$bin/sessiond-chaos" run --layer docker --nodes 5 --schedules 5 --seconds 4 --seed 4000 --out "$out"

echo "== benchmark smoke (2 s per phase; every installed store)"
"$bin/sessiond-bench" run --seconds 2 --workers 8 --prefill 4 --json "$out/bench.json"
