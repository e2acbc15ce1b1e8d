#!/usr/bin/env bash
# The project's test command: formatting, lints, build, the whole test suite, the planted-bug
# proof, chaos smoke runs of both layers, and a benchmark smoke run.
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

# The container layer runs the release binary in a FROM-scratch image built here.
docker_ok=0
if docker info >/dev/null 2>&1; then
  echo "== container image (release build)"
  bash deploy/build-image.sh sessiond:dev
  docker_ok=1
else
  echo "== no Docker engine: the container layer is skipped"
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

echo "== chaos: the planted stale-read bug must be caught"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p sessiond-chaos --features planted-stale-reads --test planted
else
  cargo test -p sessiond-chaos --features planted-stale-reads --test planted
fi
# That build left the bug in the chaos binary; rebuild it clean before the smoke runs.
cargo build -p sessiond-chaos --bin sessiond-chaos

out="$(mktemp -d)"
echo "== chaos smoke: in-process layer (failures kept in $out)"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 3 --schedules 40 --seconds 3 --seed 1000 --out "$out"
RUST_LOG=off "$bin/sessiond-chaos" run --layer inproc --nodes 5 --schedules 10 --seconds 3 --seed 2000 --out "$out"
if [ "$docker_ok" = 1 ]; then
  echo "== chaos smoke: container layer"
  RUST_LOG=off "$bin/sessiond-chaos" run --layer docker --nodes 3 --schedules 3 --seconds 5 --seed 3000 --out "$out"
  RUST_LOG=off "$bin/sessiond-chaos" run --layer docker --nodes 5 --schedules 2 --seconds 5 --seed 4000 --out "$out"
fi

echo "== benchmark smoke (2 s per phase, every backend available)"
cargo build --release -p sessiond-bench
"$CARGO_TARGET_DIR/release/sessiond-bench" run --backend all --seconds 2 --workers 8 \
  --phases create,get,rotate,mixed --sessiond-bin "$CARGO_TARGET_DIR/release/sessiond"
