#!/usr/bin/env bash
# The project's test command: formatting, lints, build, the whole test suite,
# and a chaos smoke run of the in-process layer.
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

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

out="$(mktemp -d)"
echo "== chaos smoke: in-process layer (failures kept in $out)"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 3 --schedules 20 --seconds 3 --seed 1000 --out "$out"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 5 --schedules 5 --seconds 3 --seed 2000 --out "$out"
