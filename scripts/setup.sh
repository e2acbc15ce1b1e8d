#!/usr/bin/env bash
# Installs and checks the system packages sessiond's build and tests need (Debian/Ubuntu).
#
#   bash scripts/setup.sh build   what `cargo build` needs (RocksDB: libclang and a C++ compiler)
#   bash scripts/setup.sh all     also what the test suite, the chaos harness, the benchmark and
#                                 the deployment checks need (Python tools from PyPI), and
#                                 starts the Docker engine when it is not running
#   bash scripts/setup.sh check   only check `all`, install nothing
#
# Every package is found by its exact name (dpkg-query), then checked the way its user finds it,
# so that a missing piece stops here in seconds with its name, not in a build script minutes later.
# Without root and without password-less sudo, it prints the one apt-get line to run and fails.
set -euo pipefail

# The one list. Fields: package | group | who needs it.
PACKAGES='
libclang-dev      | build | RocksDB Rust bindings: bindgen loads libclang.so and clang headers at build time
g++               | build | RocksDB C++ sources, compiled by librocksdb-sys
protobuf-compiler | test  | the benchmark etcd client: its build script runs protoc
libprotobuf-dev   | test  | the benchmark etcd client: google/protobuf well-known .proto files
etcd-server       | test  | the benchmark: etcd is one of the stores compared
redis-server      | test  | the benchmark: Redis is one of the stores compared
iptables          | test  | chaos container layer: partitions are iptables-restore rules
util-linux        | test  | chaos container layer: nsenter into a container network namespace
docker.io         | test  | chaos container layer and the image: a Docker engine (dockerd)
docker-compose    | test  | the compose files are started by deploy/compose-test.sh
fonts-dejavu-core | test  | the benchmark chart: DejaVuSans.ttf
libfaketime       | test  | chaos container layer: every node wall clock follows an offset file
prometheus        | test  | promtool: the alert rules are checked and unit-tested
'

# How each package's user finds it. Prints nothing and succeeds when usable.
check() {
  case "$1" in
    libclang-dev)
      # clang-sys (bindgen) looks in LIBCLANG_PATH, else in the directory llvm-config names,
      # else in the versioned LLVM directories; it needs libclang itself, not libclang-cpp.
      local dirs=()
      if [ -n "${LIBCLANG_PATH:-}" ]; then
        dirs=("$LIBCLANG_PATH")
      elif command -v llvm-config >/dev/null 2>&1; then
        dirs=("$(llvm-config --libdir)")
      else
        dirs=(/usr/lib/llvm-*/lib)
      fi
      local d
      for d in "${dirs[@]}"; do
        if [ -e "$d/libclang.so" ]; then
          # The clang builtin headers (stddef.h) come with it; bindgen fails without them.
          compgen -G "$d/clang/*/include/stddef.h" >/dev/null && return 0
        fi
      done
      echo "no libclang.so with clang headers in ${dirs[*]}"
      return 1 ;;
    g++) c++ --version >/dev/null 2>&1 || { echo "no C++ compiler (c++)"; return 1; } ;;
    protobuf-compiler) protoc --version >/dev/null 2>&1 || { echo "protoc does not run"; return 1; } ;;
    libprotobuf-dev)
      [ -f /usr/include/google/protobuf/descriptor.proto ] ||
        { echo "no /usr/include/google/protobuf/descriptor.proto"; return 1; } ;;
    etcd-server) etcd --version >/dev/null 2>&1 || { echo "etcd does not run"; return 1; } ;;
    redis-server) redis-server --version >/dev/null 2>&1 || { echo "redis-server does not run"; return 1; } ;;
    iptables) iptables-restore --version >/dev/null 2>&1 || { echo "iptables-restore does not run"; return 1; } ;;
    util-linux) nsenter --version >/dev/null 2>&1 || { echo "nsenter does not run"; return 1; } ;;
    docker.io)
      command -v dockerd >/dev/null 2>&1 || { echo "no dockerd"; return 1; }
      command -v docker >/dev/null 2>&1 || { echo "no docker client"; return 1; } ;;
    docker-compose) docker-compose --version >/dev/null 2>&1 || { echo "docker-compose does not run"; return 1; } ;;
    fonts-dejavu-core)
      [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] ||
        { echo "no /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"; return 1; } ;;
    prometheus) promtool --version >/dev/null 2>&1 || { echo "promtool does not run"; return 1; } ;;
    libfaketime)
      [ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] ||
        { echo "no /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"; return 1; } ;;
    *) echo "no check for $1"; return 1 ;;
  esac
}

# The packages of the groups named ("build" or "all").
packages_of() {
  local want="$1"
  echo "$PACKAGES" | while IFS='|' read -r pkg group _; do
    pkg="$(echo "$pkg" | tr -d ' ')"
    group="$(echo "$group" | tr -d ' ')"
    [ -n "$pkg" ] || continue
    if [ "$want" = all ] || [ "$group" = "$want" ]; then
      echo "$pkg"
    fi
  done
}

why_of() {
  echo "$PACKAGES" | awk -F'|' -v p="$1" '{ gsub(/ /, "", $1) } $1 == p { sub(/^ +/, "", $3); print $3 }'
}

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 127
  fi
}

install_group() {
  local missing=() pkg
  for pkg in $(packages_of "$1"); do
    installed "$pkg" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  if ! as_root true 2>/dev/null; then
    echo "setup: missing system packages and no root or password-less sudo; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq </dev/null
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

check_group() {
  local failed=0 pkg why
  for pkg in $(packages_of "$1"); do
    if ! why="$(check "$pkg")"; then
      echo "setup: package $pkg is not usable: $why (needed by $(why_of "$pkg"))" >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || exit 1
}

start_docker() {
  docker info >/dev/null 2>&1 && return 0
  echo "setup: starting the Docker engine"
  (as_root nohup dockerd >/tmp/sessiond-dockerd.log 2>&1 &) || true
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "setup: the Docker engine did not start (see /tmp/sessiond-dockerd.log)" >&2
  exit 1
}

rust_tools() {
  if command -v rustup >/dev/null 2>&1; then
    local component
    for component in rustfmt clippy; do
      rustup component list --installed 2>/dev/null | grep -q "^${component}" ||
        rustup component add "$component" </dev/null
    done
  fi
  cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked </dev/null
}

# Python tools of the deployment checks, from PyPI, at pinned versions.
# The manifests' schema check, and the test runner of the Python client (examples/python)
# with the ASGI framework and server its middleware is tested behind.
PYTHON_TOOLS='kubernetes-validate==1.37.0 PyYAML==6.0.3 pytest==8.3.4 starlette==1.10.0 uvicorn==0.55.0'
python_tools() {
  python3 -c 'import kubernetes_validate, yaml, pytest, starlette, uvicorn' 2>/dev/null && return 0
  echo "setup: installing $PYTHON_TOOLS (pip)"
  python3 -m pip install -q --disable-pip-version-check $PYTHON_TOOLS </dev/null
}

case "${1:-}" in
  build) install_group build; check_group build ;;
  all) install_group all; check_group all; start_docker; rust_tools; python_tools ;;
  check) check_group all ;;
  *) echo "usage: scripts/setup.sh build|all|check" >&2; exit 2 ;;
esac
