#!/usr/bin/env bash
# The Python client's and the WSGI and ASGI middlewares' tests: pytest (pinned) against a 3-node
# `sessiond dev` cluster that the tests start on free loopback ports and stop at the end.
#
#   examples/python/run-tests.sh [pytest arguments...]
#
# The sessiond binary is $SESSIOND_BIN, else $CARGO_TARGET_DIR/release/sessiond
# (CARGO_TARGET_DIR defaulting to ~/.cache/sessiond-target); build it first with
# `cargo build --release -p sessiond --bin sessiond`. The test packages (pytest==8.3.4, and
# starlette==1.10.0 and uvicorn==0.55.0 for the ASGI middleware) are used from the Python found
# ($PYTHON, default python3) when it already has them, else installed from PyPI into a virtual
# environment ($SESSIOND_PY_VENV, default ~/.cache/sessiond-python-venv), or into the user site
# when venv is not available.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pytest_version=8.3.4
packages="pytest==$pytest_version starlette==1.10.0 uvicorn==0.55.0"
python=${PYTHON:-python3}

target=${CARGO_TARGET_DIR:-$HOME/.cache/sessiond-target}
export SESSIOND_BIN=${SESSIOND_BIN:-$target/release/sessiond}
if [ ! -x "$SESSIOND_BIN" ]; then
  echo "run-tests.sh: no sessiond binary at $SESSIOND_BIN" >&2
  echo "  build it (cargo build --release -p sessiond --bin sessiond) or set SESSIOND_BIN" >&2
  exit 1
fi

has_packages() {
  "$1" -c "import pytest, starlette, uvicorn, sys; sys.exit(pytest.__version__ != '$pytest_version')" \
    >/dev/null 2>&1
}

if has_packages "$python"; then
  py=$python
else
  venv=${SESSIOND_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sessiond-python-venv}
  if ! has_packages "$venv/bin/python"; then
    if "$python" -m venv "$venv" >/dev/null 2>&1 && [ -x "$venv/bin/python" ]; then
      "$venv/bin/python" -m pip install -q --disable-pip-version-check $packages
    else
      venv=
    fi
  fi
  if [ -n "$venv" ]; then
    py=$venv/bin/python
  else
    echo "run-tests.sh: no venv module; installing $packages into the user site" >&2
    "$python" -m pip install -q --disable-pip-version-check --user $packages ||
      "$python" -m pip install -q --disable-pip-version-check --user --break-system-packages \
        $packages
    py=$python
  fi
fi

cd "$here"
export PYTHONDONTWRITEBYTECODE=1
exec "$py" -m pytest -q -p no:cacheprovider tests "$@"
