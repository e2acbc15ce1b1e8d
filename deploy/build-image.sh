#!/usr/bin/env bash
# Build the sessiond container image locally, with no registry: a FROM-scratch image holding
# the release binary and exactly the shared libraries it links (as ldd reports them).
# Usage: deploy/build-image.sh [TAG]   (default tag: sessiond:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-sessiond:dev}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sessiond-target}"
cargo build --release -p sessiond --bin sessiond
bin="$CARGO_TARGET_DIR/release/sessiond"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/data" "$ctx/rootfs/tmp"
cp "$bin" "$ctx/rootfs/usr/local/bin/sessiond"
# Debug info stays in the build; the image carries the stripped binary.
strip --strip-debug "$ctx/rootfs/usr/local/bin/sessiond"
# Every library the binary links, at the same path, plus the dynamic loader.
ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u |
  while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
cp deploy/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx"
echo "built $tag"
