"""A real local cluster for the tests: `sessiond dev` (3 nodes, TLS and authentication on) on
free loopback ports of its own in a temporary directory, started once per test session and
stopped at its end. Tests that need no cluster (test_unit.py) never start it.

The binary is $SESSIOND_BIN, else $CARGO_TARGET_DIR/release/sessiond (CARGO_TARGET_DIR
defaulting to ~/.cache/sessiond-target)."""

import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from sessiond_client import Client  # noqa: E402

#: The cluster policy of the test cluster (bootstrap flags, read from the environment by every
#: node): a grace window short enough to wait out in a test, long enough for a loaded machine
#: to finish a step inside it; and a small per-user cap under `refuse`, so that
#: RESOURCE_EXHAUSTED can be provoked.
GRACE_MS = 3000
MAX_SESSIONS_PER_USER = 20
NODES = 3


def binary() -> str:
    if os.environ.get("SESSIOND_BIN"):
        return os.environ["SESSIOND_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/sessiond-target")
    return os.path.join(target, "release", "sessiond")


def _require_binary() -> str:
    b = binary()
    if not os.access(b, os.X_OK):
        pytest.fail(
            f"no sessiond binary at {b}: build it (cargo build --release -p sessiond) or set SESSIOND_BIN",
            pytrace=False,
        )
    return b


def _ports_free(base: int) -> bool:
    for offset in (0, 100, 200):
        for i in range(1, NODES + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", base + offset + i))
                except OSError:
                    return False
    return True


def _lines(proc, out: "queue.Queue[str]") -> None:
    for line in proc.stdout:
        out.put(line)


class Cluster:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.proc = None
        self.env = {}
        self.base = 0
        self.data = None

    def start(self) -> None:
        exe = _require_binary()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIOND_")}
        env.update(
            SESSIOND_GRACE_WINDOW_MS=str(GRACE_MS),
            SESSIOND_MAX_SESSIONS_PER_USER=str(MAX_SESSIONS_PER_USER),
            SESSIOND_CAP_POLICY="refuse",
            RUST_LOG="warn",
        )
        problems = []
        for attempt in range(8):
            # In 20000-29999 (below the usual ephemeral range), derived from the pid so that
            # parallel runs differ; another base on each attempt.
            base = 20000 + (os.getpid() * 7 + attempt * 1237) % 9600
            if not _ports_free(base):
                problems.append(f"ports of base {base} taken")
                continue
            data = self.root / f"dev-{attempt}"
            proc = subprocess.Popen(
                [exe, "dev", "--nodes", str(NODES), "--data-dir", str(data), "--base-port", str(base)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=True,  # its own process group: the nodes go down with it
            )
            self.proc, self.data, self.base = proc, data, base
            try:
                self._await_exports(proc)
                self._wait_ready()
                return
            except Exception as e:  # noqa: BLE001 - reported below with the nodes' logs
                problems.append(f"base {base}: {e}\n{self.logs_tail()}")
                self.stop()
        raise RuntimeError("sessiond dev did not start:\n" + "\n".join(problems))

    def _await_exports(self, proc) -> None:
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            seen.append(line)
            words = line.split()
            if words[:1] == ["export"] and words[1].startswith("SESSIOND_ENDPOINTS="):
                self.env = dict(w.split("=", 1) for w in words[1:])
                self.endpoints = self.env["SESSIOND_ENDPOINTS"].split(",")
                return
        raise RuntimeError("no `export SESSIOND_ENDPOINTS=...` line; it printed:\n" + "".join(seen))

    def _wait_ready(self) -> None:
        """Every node's /readyz (member of a cluster with a leader, caught up), then a write."""
        deadline = time.monotonic() + 90
        for i in range(1, NODES + 1):
            url = f"http://127.0.0.1:{self.base + 200 + i}/readyz"
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sessiond dev exited ({self.proc.returncode})")
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not ready")
                time.sleep(0.2)
        client = self.client(deadline=5.0)
        while True:
            try:
                client.create_session("readiness-probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def logs_tail(self, lines: int = 20) -> str:
        out = []
        for i in range(1, NODES + 1):
            log = (self.data or self.root) / f"node{i}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- node{i}.log\n" + "\n".join(tail))
        return "\n".join(out)

    def client(self, endpoints=None, **kw) -> Client:
        return Client(
            endpoints or self.endpoints,
            ca_file=self.env["SESSIOND_CA"],
            cert_file=self.env["SESSIOND_CERT"],
            key_file=self.env["SESSIOND_KEY"],
            **kw,
        )

    @property
    def certs(self) -> pathlib.Path:
        return pathlib.Path(self.env["SESSIOND_CA"]).parent

    def node_pids(self) -> list:
        """The `sessiond serve` processes of this cluster (in the process group of its
        `sessiond dev`)."""
        pids = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.getpgid(int(pid)) != self.proc.pid:
                    continue
                cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ProcessLookupError):
                continue
            if b"serve" in cmd:
                pids.append(int(pid))
        return pids

    def reload(self) -> None:
        """SIGHUP the nodes: they re-read certificates and the access list."""
        pids = self.node_pids()
        assert len(pids) == NODES, pids
        for pid in pids:
            os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        """Ctrl-C for `sessiond dev` (it stops its nodes), then the whole group if need be."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # nodes left behind, if any
            except ProcessLookupError:
                break
            time.sleep(0.5)
        if proc.poll() is None:
            proc.wait()


@pytest.fixture(scope="session")
def cluster():
    with tempfile.TemporaryDirectory(prefix="sessiond-py-") as root:
        c = Cluster(pathlib.Path(root))
        c.start()
        try:
            yield c
        finally:
            c.stop()


@pytest.fixture
def client(cluster):
    c = cluster.client()
    yield c
    c.close()
