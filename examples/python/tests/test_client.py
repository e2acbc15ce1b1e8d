"""The client against a real `sessiond dev` cluster: every call, the errors a client can meet,
retries with one request id over lost answers, and the races sessiond exists for."""

import json
import os
import signal
import ssl
import subprocess
import threading
import time

import pytest

from conftest import GRACE_MS, MAX_SESSIONS_PER_USER, NODES, Cluster, binary
from fakenode import DROP, FakeNode, answer, forward
from sessiond_client import (
    Client,
    Expired,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Revoked,
    TlsError,
    TokenReused,
    Unauthenticated,
    Unavailable,
    VersionConflict,
    request_id,
)


def _join(threads, timeout=60):
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread hung"


def test_every_call(client):
    created = client.create_session("alice", b'{"cart": 0}', {"device": "pytest"})
    s, token = created
    assert not created.replayed
    assert token.startswith("sdt1_") and len(token) == 48
    assert s.user_id == "alice" and s.version == 1 and s.generation == 0
    assert s.data == b'{"cart": 0}' and s.attributes == {"device": "pytest"}
    assert s.expires_at_ms > s.created_at_ms > 0
    assert token not in repr(s) and token not in repr(created)

    got, superseded = client.get_session(token)
    assert got.id == s.id and not superseded
    got, superseded = client.get_session(token, "stale", touch=True)
    assert got.id == s.id and not superseded

    s2 = client.update_session(token, data=b'{"cart": 1}', expected_version=1)
    assert s2.version == 2 and s2.data == b'{"cart": 1}' and not s2.replayed
    s3 = client.update_session(session_id=s.id, attributes={"theme": "dark"})
    assert s3.version == 3 and s3.attributes == {"theme": "dark"} and s3.data == b'{"cart": 1}'
    s4 = client.update_session(s3, data=b"", expected_version=3)
    assert s4.data == b"" and s4.attributes == {"theme": "dark"}

    r = client.rotate_token(token)
    assert r.rotated and not r.replayed and r.token != token and token not in repr(r)
    assert r.session.generation == 1 and r.session.version == 5
    _, superseded = client.get_session(token)
    assert superseded, "the old token is inside its grace window"
    again = client.rotate_token(token)
    assert again.token == r.token and again.rotated and again.replayed, "the shared successor"
    assert client.rotate_or_current(token) == r.token
    assert client.rotate_or_current(r.token) == r.token, "inside the rotation interval: unchanged"

    touched, superseded = client.touch_session(r.token)
    assert touched.id == s.id and not superseded
    _, superseded = client.touch_session(token)
    assert superseded

    other, _ = client.create_session("alice")
    assert [x.id for x in client.list_user_sessions("alice", page_size=1)] == [s.id, other.id]
    assert [x.id for x in client.list_user_sessions("alice", "stale")] in ([s.id, other.id], [s.id])

    assert client.revoke_session(r.token, reason="logout") is False
    assert client.revoke_session(session_id=s.id) is True, "already revoked"
    with pytest.raises(Revoked) as e:
        client.get_session(r.token)
    assert e.value.reason == "logout" and e.value.status == 403
    assert r.token not in str(e.value) and r.token not in repr(e.value)
    with pytest.raises(Revoked):
        client.get_session(token)  # every token of a revoked session
    assert [x.id for x in client.list_user_sessions("alice")] == [other.id]
    assert client.revoke_user_sessions("alice") == [other.id]
    assert list(client.list_user_sessions("alice")) == []


def test_lists_page_through_every_session_oldest_first(client):
    ids = [client.create_session("lena")[0].id for _ in range(5)]
    page, nxt = client.list_user_sessions_page("lena", page_size=2)
    assert [s.id for s in page] == ids[:2] and nxt
    page, nxt = client.list_user_sessions_page("lena", page_size=2, page_token=nxt)
    assert [s.id for s in page] == ids[2:4] and nxt
    assert [s.id for s in client.list_user_sessions("lena", page_size=2)] == ids
    assert [s.id for s in client.list_user_sessions("nobody")] == []


def test_log_out_everywhere_but_here_and_watch_it(client):
    ids = [client.create_session("bob")[0].id for _ in range(3)]
    events = []
    failures = []

    def watch():
        try:
            for ev in client.watch_revocations(from_index=1, timeout=20):
                if ev.user_id == "bob":
                    events.append(ev)
                if len(events) == 2:
                    return
        except Exception as e:  # noqa: BLE001
            failures.append(e)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    revoked = client.revoke_user_sessions("bob", except_id=ids[0], reason="password changed")
    assert sorted(revoked) == sorted(ids[1:])
    _join([t], 30)
    assert failures == []
    assert sorted(e.session_id for e in events) == sorted(ids[1:])
    assert all(e.reason == "password changed" and e.index > 0 and e.revoked_at_ms > 0 for e in events)
    assert events[0].index <= events[1].index
    assert [s.id for s in client.list_user_sessions("bob")] == [ids[0]]

    # A reader that comes back later starts after the last event it saw and misses none.
    client.revoke_session(session_id=ids[0], reason="logout")
    feed = client.watch_revocations(from_index=events[-1].index + 1, timeout=20)
    try:
        nxt = next(e for e in feed if e.user_id == "bob")
    finally:
        feed.close()
    assert (nxt.session_id, nxt.reason) == (ids[0], "logout")


def test_a_retry_with_the_same_request_id_is_a_replay(client):
    rid = request_id()
    first = client.create_session("carol", b"x", rid=rid)
    again = client.create_session("carol", b"x", rid=rid)
    assert again.replayed and not first.replayed
    assert (first.session.id, first.token) == (again.session.id, again.token), "one session, one token"
    assert len(list(client.list_user_sessions("carol"))) == 1

    rid = request_id()
    rot = client.rotate_token(first.token, rid=rid)
    rot_again = client.rotate_token(first.token, rid=rid)
    assert rot.token == rot_again.token and rot_again.replayed and not rot.replayed

    rid = request_id()
    u1 = client.update_session(rot.token, data=b"y", expected_version=2, rid=rid)
    u2 = client.update_session(rot.token, data=b"y", expected_version=2, rid=rid)
    assert u1.version == u2.version == 3 and u2.replayed, "applied once"
    assert client.get_session(rot.token)[0].version == 3
    with pytest.raises(InvalidArgument):
        # The same id for another request is refused, never answered with the first answer.
        client.update_session(rot.token, data=b"z", expected_version=3, rid=rid)


def _proxy(cluster, lose):
    """A fake first node that forwards each request to the real first node and then `lose`s
    the answer: DROP (a connection reset) or 503 (as if the forward had timed out)."""
    ctx = ssl.create_default_context(cafile=cluster.env["SESSIOND_CA"])
    ctx.load_cert_chain(cluster.env["SESSIOND_CERT"], cluster.env["SESSIOND_KEY"])
    seen = []

    def script(node, rec):
        status, headers, body = forward(cluster.endpoints[0], ctx, rec)
        seen.append((status, body))
        if lose == "drop":
            return DROP
        return answer(503, {"code": "UNAVAILABLE", "message": "forward timed out"})

    node = FakeNode(str(cluster.certs / "node-1.crt"), str(cluster.certs / "node-1.key"), script)
    return node, seen


@pytest.mark.parametrize("lose", ["drop", "503"])
def test_a_lost_answer_is_retried_on_another_node_and_replayed(cluster, lose):
    proxy, seen = _proxy(cluster, lose)
    try:
        # A fresh client for each call, so that the proxy is the first node tried.
        def fresh():
            return cluster.client(endpoints=[proxy.endpoint] + cluster.endpoints[1:])

        created = fresh().create_session("dora", b"cart")
        assert created.replayed, "the retry got the first outcome"
        first = json.loads(seen[-1][1])
        assert seen[-1][0] == 200 and first["token"] == created.token
        assert [s.id for s in fresh().list_user_sessions("dora")] == [created.session.id]

        rotated = fresh().rotate_token(created.token)
        assert rotated.replayed and rotated.token == json.loads(seen[-1][1])["token"]
        assert rotated.token != created.token

        updated = fresh().update_session(rotated.token, data=b"cart+1", expected_version=2)
        assert updated.replayed and updated.version == 3, "applied once"

        assert fresh().revoke_session(rotated.token) is False, "the first answer: not revoked before"
        with pytest.raises(Revoked):
            fresh().get_session(rotated.token)
        assert len(proxy.requests) == 6, "every call went to the proxy first"
    finally:
        proxy.close()


def test_errors_are_typed(cluster, client):
    with pytest.raises(InvalidArgument) as e:
        client.get_session("sdt1_short")
    assert e.value.status == 400 and "sdt1_short" not in str(e.value)
    with pytest.raises(InvalidArgument):
        client.update_session(session_id="not-an-id", data=b"")
    with pytest.raises(NotFound) as e:
        client.update_session(session_id="AAAAAAAAAAAAAAAAAAAAAA", data=b"")
    assert e.value.status == 404
    with pytest.raises(NotFound):
        client.get_session("sdt1_" + "A" * 43)
    with pytest.raises(InvalidArgument):
        client.create_session("")
    s, token = client.create_session("dave", b"orig")
    with pytest.raises(InvalidArgument):
        client.revoke_session(token, reason="x" * 129)
    with pytest.raises(InvalidArgument):
        client.update_session(token, data=b"x" * 70000)
    with pytest.raises(VersionConflict) as e:
        client.update_session(token, data=b"late", expected_version=7)
    assert e.value.current_version == 1 and e.value.status == 409
    assert client.get_session(token)[0].data == b"orig", "nothing written"

    # A rotated-away token presented after its grace window: reuse, and the session is gone.
    new = client.rotate_or_current(token)
    time.sleep(GRACE_MS / 1000 + 0.5)
    with pytest.raises(TokenReused) as e:
        client.rotate_token(token)
    assert e.value.status == 403
    with pytest.raises(Revoked) as e:
        client.get_session(new)
    assert e.value.reason == "reuse_detected"

    s, token = client.create_session("dave", idle_timeout_ms=300)
    time.sleep(0.8)
    with pytest.raises((Expired, NotFound)):
        # Expired until the leader sweeps it (within a second), then not found.
        client.get_session(token)


def test_the_per_user_cap_refuses(client):
    for _ in range(MAX_SESSIONS_PER_USER):
        client.create_session("greedy")
    with pytest.raises(ResourceExhausted) as e:
        client.create_session("greedy")
    assert e.value.status == 429
    assert len(list(client.list_user_sessions("greedy"))) == MAX_SESSIONS_PER_USER


def test_credentials(cluster, client):
    _, token = client.create_session("erin")
    anonymous = Client(cluster.endpoints, ca_file=cluster.env["SESSIOND_CA"], deadline=3)
    with pytest.raises(Unauthenticated) as e:
        anonymous.get_session(token)
    assert e.value.status == 401
    wrong = Client(cluster.endpoints, ca_file=cluster.env["SESSIOND_CA"], bearer_token="nope", deadline=3)
    with pytest.raises(Unauthenticated):
        wrong.get_session(token)

    # The nodes' certificates do not verify against another CA: refused at once, not retried.
    other = cluster.root / "other-ca"
    subprocess.run([binary(), "certs", "ca", "--certs-dir", str(other)], check=True, capture_output=True)
    stranger = Client(cluster.endpoints, ca_file=str(other / "ca.crt"), deadline=10)
    t = time.monotonic()
    with pytest.raises(TlsError):
        stranger.get_session(token)
    assert time.monotonic() - t < 3

    # A client certificate of another CA: the nodes refuse the handshake; not retried either.
    other_pki = cluster.root / "other-pki"
    subprocess.run(
        [binary(), "certs", "local", "--nodes", "1", "--certs-dir", str(other_pki)],
        check=True,
        capture_output=True,
    )
    impostor = Client(
        cluster.endpoints,
        ca_file=cluster.env["SESSIOND_CA"],
        cert_file=str(other_pki / "client-dev.crt"),
        key_file=str(other_pki / "client-dev.key"),
        deadline=10,
    )
    t = time.monotonic()
    with pytest.raises(TlsError):
        impostor.get_session(token)
    assert time.monotonic() - t < 3

    # A bearer credential of a principal that may only watch revocations.
    secret_file = cluster.root / "watcher.secret"
    subprocess.run(
        [binary(), "certs", "credential", "--certs-dir", str(cluster.certs), "--name",
         "pywatcher", "--role", "watch", "--out", str(secret_file)],
        check=True,
        capture_output=True,
    )
    cluster.reload()
    watcher = Client(
        cluster.endpoints,
        ca_file=cluster.env["SESSIOND_CA"],
        bearer_token=secret_file.read_text().strip(),
        deadline=3,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            watcher.create_session("eve")
            raise AssertionError("a watch-only principal created a session")
        except PermissionDenied as e:
            assert e.status == 403
            break
        except Unauthenticated:
            # Not every node has re-read the access list yet.
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_an_unreachable_cluster_is_unavailable_not_logged_out(cluster):
    dead = Client(["127.0.0.1:9", "127.0.0.1:10"], ca_file=cluster.env["SESSIOND_CA"], deadline=1.0)
    with pytest.raises(Unavailable):
        dead.get_session("sdt1_" + "A" * 43)


def test_dead_endpoints_are_skipped(cluster):
    c = cluster.client(endpoints=["127.0.0.1:9"] + cluster.endpoints)
    s, token = c.create_session("fay")
    assert c.get_session(token, "stale")[0].id == s.id


def test_racing_refreshes_from_threads_share_one_successor(cluster, client):
    for round in range(3):
        _, token = client.create_session(f"frank{round}")
        results, errors = [], []
        n = 8
        barrier = threading.Barrier(n)

        def refresh(i):
            # Each tab through its own client, its requests reaching different nodes first.
            eps = cluster.endpoints[i % 3 :] + cluster.endpoints[: i % 3]
            c = cluster.client(endpoints=eps)
            barrier.wait()
            try:
                results.append(c.rotate_or_current(token))
            except Exception as e:  # recorded: a logged-out tab is the bug
                errors.append(e)

        threads = [threading.Thread(target=refresh, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        _join(threads)
        assert errors == []
        assert len(results) == n and len(set(results)) == 1, "every racing tab got the same successor"
        assert results[0] != token
        s, superseded = client.get_session(results[0])
        assert s.generation == 1 and not superseded, "one rotation, not eight"
        _, superseded = client.get_session(token)
        assert superseded, "the old token still works inside the grace window"


def test_a_logout_racing_saves_is_final(cluster, client):
    for round in range(3):
        s, token = client.create_session(f"gina{round}", b"0")
        outcomes = []
        errors = []
        n = 8
        barrier = threading.Barrier(n + 1)

        def save(i):
            eps = cluster.endpoints[i % 3 :] + cluster.endpoints[: i % 3]
            c = cluster.client(endpoints=eps)
            barrier.wait()
            for j in range(5):
                try:
                    c.update_session(token, data=f"{i}.{j}".encode())
                    outcomes.append("saved")
                except Revoked:
                    outcomes.append("refused")
                except Exception as e:  # noqa: BLE001
                    errors.append(e)

        def logout():
            barrier.wait()
            time.sleep(0.01)
            client.revoke_session(token, reason="logout")

        threads = [threading.Thread(target=save, args=(i,)) for i in range(n)]
        threads.append(threading.Thread(target=logout))
        for t in threads:
            t.start()
        _join(threads)
        assert errors == [] and len(outcomes) == n * 5
        # After the logout nothing reads or writes the session, whichever node is asked.
        for ep in cluster.endpoints:
            c = cluster.client(endpoints=[ep])
            with pytest.raises(Revoked) as e:
                c.get_session(token)
            assert e.value.reason == "logout"
            with pytest.raises(Revoked):
                c.update_session(token, data=b"late")
            with pytest.raises(Revoked):
                c.update_session(session_id=s.id, data=b"late")
            with pytest.raises(Revoked):
                c.touch_session(token)
            with pytest.raises(Revoked):
                c.rotate_token(token)
        assert list(client.list_user_sessions(f"gina{round}")) == []
        # STALE reads catch up within the bound and then say the same.
        deadline = time.monotonic() + 5
        for ep in cluster.endpoints:
            c = cluster.client(endpoints=[ep])
            while True:
                try:
                    c.get_session(token, "stale")
                except Revoked:
                    break
                assert time.monotonic() < deadline, "a STALE read still shows the session"
                time.sleep(0.1)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sessiond_dev_stops_its_nodes_on_sigterm(tmp_path):
    # A process manager or `kill` sends SIGTERM to `sessiond dev` alone, not to its group:
    # its nodes must not be left running, holding the ports.
    dev = Cluster(tmp_path)
    dev.start()
    try:
        nodes = dev.node_pids()
        assert len(nodes) == NODES, nodes
        os.kill(dev.proc.pid, signal.SIGTERM)
        assert dev.proc.wait(timeout=20) == 0, "a clean stop"
        deadline = time.monotonic() + 10
        while any(_running(p) for p in nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in nodes if _running(p)] == [], "nodes left running"
    finally:
        dev.stop()
