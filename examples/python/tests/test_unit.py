"""The client without a cluster: how it writes requests and reads answers, errors and feeds, and
how it retries, against fake nodes (HTTPS endpoints that record every request and answer as
scripted). Needs only the `sessiond` binary's `certs local` for TLS material."""

import base64
import json
import subprocess
import threading
import time

import pytest

import sessiond_client as sc
from conftest import _require_binary
from fakenode import DROP, FakeNode, answer
from sessiond_client import (
    Client,
    Created,
    Expired,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Revoked,
    Rotated,
    Session,
    SessiondError,
    TlsError,
    TokenReused,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)

TOKEN = "sdt1_" + "Q" * 43
SESSION = {
    "id": "2lSSYTDay9b9ELHAb4ty3A",
    "userId": "alice",
    "generation": "2",
    "version": "7",
    "data": base64.b64encode(b'{"cart":1}').decode(),
    "attributes": {"device": "phone"},
    "createdAtMs": "1796295703137",
    "lastActiveAtMs": "1796295703138",
    "idleTimeoutMs": "86400000",
    "absoluteExpiresAtMs": "1798887703137",
    "expiresAtMs": "1796382103138",
}


# -- messages and errors, offline ------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, cls",
    [
        (404, {"code": "NOT_FOUND", "message": "session not found"}, NotFound),
        (400, {"code": "EXPIRED", "message": "expired"}, Expired),
        (403, {"code": "REVOKED", "revokedReason": "logout"}, Revoked),
        (403, {"code": "TOKEN_REUSED"}, TokenReused),
        (409, {"code": "VERSION_CONFLICT", "currentVersion": "7"}, VersionConflict),
        (400, {"code": "INVALID_ARGUMENT", "message": "malformed token"}, InvalidArgument),
        (429, {"code": "RESOURCE_EXHAUSTED"}, ResourceExhausted),
        (401, {"code": "UNAUTHENTICATED"}, Unauthenticated),
        (403, {"code": "PERMISSION_DENIED"}, PermissionDenied),
        (503, {"code": "UNAVAILABLE"}, Unavailable),
        # The code decides, never the status.
        (400, {"code": "NOT_FOUND"}, NotFound),
        (403, {"code": "VERSION_CONFLICT", "currentVersion": "3"}, VersionConflict),
    ],
)
def test_the_code_decides_the_exception(status, body, cls):
    e = sc.error_from_answer(status, json.dumps(body).encode())
    assert type(e) is cls
    assert e.code == body["code"] and e.status == status
    assert isinstance(e, SessiondError)


def test_detail_fields():
    e = sc.error_from_answer(403, b'{"code":"REVOKED","message":"session revoked","revokedReason":"reuse_detected"}')
    assert e.reason == "reuse_detected" and str(e) == "session revoked"
    e = sc.error_from_answer(409, b'{"code":"VERSION_CONFLICT","currentVersion":"18446744073709551615"}')
    assert e.current_version == 2**64 - 1
    assert sc.error_from_answer(403, b'{"code":"REVOKED"}').reason == ""


def test_answers_without_a_code():
    # A mistyped route is a 404 without a code: not NOT_FOUND (no session was looked up).
    e = sc.error_from_answer(404, b'{"message":"no such route"}')
    assert type(e) is SessiondError and e.code == "ERROR_CODE_UNSPECIFIED" and e.status == 404
    assert type(sc.error_from_answer(413, b"")) is ResourceExhausted
    assert type(sc.error_from_answer(401, b"<html>")) is Unauthenticated
    e = sc.error_from_answer(502, b"<html>bad gateway</html>")
    assert type(e) is SessiondError and "502" in str(e)
    # A code this client does not know yet stays visible.
    e = sc.error_from_answer(400, b'{"code":"SOMETHING_NEW","message":"m"}')
    assert type(e) is SessiondError and e.code == "SOMETHING_NEW"


def test_no_token_in_error_text_or_repr():
    body = json.dumps({"code": "INVALID_ARGUMENT", "message": f"bad token {TOKEN} here"}).encode()
    e = sc.error_from_answer(400, body)
    for text in (str(e), repr(e), e.message, e.detail["message"], str(e.args)):
        assert TOKEN not in text and "QQQQQQQQ" not in text
    assert "sdt1_<redacted>" in str(e)


def test_session_from_json():
    s = Session.from_json(SESSION)
    assert (s.id, s.user_id, s.generation, s.version) == ("2lSSYTDay9b9ELHAb4ty3A", "alice", 2, 7)
    assert s.data == b'{"cart":1}' and s.attributes == {"device": "phone"}
    assert s.created_at_ms == 1796295703137 and s.expires_at_ms == 1796382103138
    assert not s.replayed
    # Fields at their default value are left out of answers.
    s = Session.from_json({"id": "x", "userId": "u", "version": "1"})
    assert (s.generation, s.data, s.attributes, s.idle_timeout_ms) == (0, b"", {}, 0)
    assert Session.from_json(None).id == ""


def test_results_never_show_the_token():
    created = Created(Session.from_json(SESSION), TOKEN, False)
    session, token = created
    assert token == TOKEN and session.id == SESSION["id"]
    assert TOKEN not in repr(created)
    rotated = Rotated(Session.from_json(SESSION), TOKEN, True, False)
    assert TOKEN not in repr(rotated) and TOKEN not in str(rotated)


def test_request_ids_are_16_random_bytes():
    ids = {sc.request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(base64.b64decode(i, validate=True)) == 16 for i in ids)


def test_session_refs():
    assert sc.session_ref(TOKEN) == {"token": TOKEN}
    assert sc.session_ref(token=TOKEN) == {"token": TOKEN}
    assert sc.session_ref(session_id="abc") == {"id": "abc"}
    assert sc.session_ref({"id": "abc"}) == {"id": "abc"}
    assert sc.session_ref(Session.from_json(SESSION)) == {"id": SESSION["id"]}
    for bad in [(), (TOKEN, TOKEN), (None, None, None)]:
        with pytest.raises(ValueError):
            sc.session_ref(*bad)
    with pytest.raises(ValueError):
        sc.session_ref(TOKEN, session_id="abc")
    with pytest.raises(ValueError) as e:
        sc.session_ref({"token": TOKEN, "id": "x"})
    assert TOKEN not in str(e.value)


def test_consistency_and_endpoints():
    assert sc.consistency_name("stale") == "CONSISTENCY_STALE"
    assert sc.consistency_name("linearizable") == "CONSISTENCY_LINEARIZABLE"
    assert sc.consistency_name("CONSISTENCY_STALE") == "CONSISTENCY_STALE"
    with pytest.raises(ValueError):
        sc.consistency_name("eventual")
    assert sc.parse_endpoints(" 127.0.0.1:7001, https://node2:7002/ ,,[::1]:7003") == [
        "127.0.0.1:7001",
        "node2:7002",
        "[::1]:7003",
    ]
    assert sc.parse_endpoints("") == []
    with pytest.raises(ValueError):
        sc.parse_endpoints("node1")
    with pytest.raises(ValueError):
        sc.parse_endpoints("node1:http")


def test_ndjson_feed():
    lines = [
        b'{"index":"5","sessionId":"a","userId":"u","reason":"logout","revokedAtMs":"17"}\n',
        b"\n",
        b'{"index":"6","sessionId":"b","userId":"u"}\n',
        b'{"error":{"code":"UNAVAILABLE","message":"storage failed"}}\n',
        b'{"index":"7","sessionId":"c"}\n',
    ]
    feed = sc.parse_ndjson(lines)
    first, second = next(feed), next(feed)
    assert (first.index, first.session_id, first.reason, first.revoked_at_ms) == (5, "a", "logout", 17)
    assert (second.index, second.reason) == (6, "")
    with pytest.raises(Unavailable):
        next(feed)
    assert list(sc.parse_ndjson([b'{"index":"1"}'])) == [sc.Revocation(1, "", "", "", 0)]


# -- TLS material for fake nodes ------------------------------------------------------------


def _certs(tmp_path_factory, name):
    d = tmp_path_factory.mktemp(name)
    subprocess.run(
        [_require_binary(), "certs", "local", "--nodes", "1", "--certs-dir", str(d)],
        check=True,
        capture_output=True,
    )
    return d


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return _certs(tmp_path_factory, "pki")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return _certs(tmp_path_factory, "other-pki")


@pytest.fixture
def nodes(pki):
    """``nodes(script, ...)``: fake nodes with the node certificate of ``pki``."""
    made = []

    def make(*scripts):
        for s in scripts:
            made.append(FakeNode(str(pki / "node-1.crt"), str(pki / "node-1.key"), s))
        return made[-len(scripts) :]

    yield make
    for n in made:
        n.close()


def _client(pki, nodes_or_endpoints, **kw):
    endpoints = [n if isinstance(n, str) else n.endpoint for n in nodes_or_endpoints]
    kw.setdefault("cert_file", str(pki / "client-dev.crt"))
    kw.setdefault("key_file", str(pki / "client-dev.key"))
    return Client(endpoints, ca_file=str(pki / "ca.crt"), **kw)


def created(node=None, rec=None, headers=()):
    return answer(200, {"session": {"id": "s1", "userId": "alice", "version": "1"}, "token": TOKEN}, headers)


def unavailable(node, rec):
    return answer(503, {"code": "UNAVAILABLE", "message": "no leader known"})


def not_leader_unnamed(node, rec):
    return answer(503, {"code": "NOT_LEADER", "message": "election"})


def test_a_certificate_and_a_bearer_token_together_are_refused(pki):
    with pytest.raises(ValueError, match="not both") as e:
        _client(pki, ["127.0.0.1:1"], bearer_token="s3cret")
    assert "s3cret" not in str(e.value)


def test_from_env(pki, tmp_path):
    secret = tmp_path / "app.secret"
    secret.write_text("s3cret\n")
    c = Client.from_env(
        {
            "SESSIOND_ENDPOINTS": "127.0.0.1:1, 127.0.0.1:2",
            "SESSIOND_CA": str(pki / "ca.crt"),
            "SESSIOND_CERT": "",
            "SESSIOND_TOKEN_FILE": str(secret),
        }
    )
    assert c.endpoints == ["127.0.0.1:1", "127.0.0.1:2"]
    assert c._bearer == "s3cret" and "s3cret" not in repr(c)
    c = Client.from_env(
        {
            "SESSIOND_ENDPOINTS": "127.0.0.1:1",
            "SESSIOND_CA": str(pki / "ca.crt"),
            "SESSIOND_CERT": str(pki / "client-dev.crt"),
            "SESSIOND_KEY": str(pki / "client-dev.key"),
        },
        timeout=1.5,
    )
    assert c._bearer is None and c._timeout == 1.5 and "certificate" in repr(c)
    with pytest.raises(ValueError, match="SESSIOND_ENDPOINTS"):
        Client.from_env({"SESSIOND_CA": str(pki / "ca.crt")})
    with pytest.raises(ValueError, match="SESSIOND_KEY"):
        Client.from_env({"SESSIOND_ENDPOINTS": "h:1", "SESSIOND_CERT": str(pki / "client-dev.crt")})


# -- the transport against fake nodes ------------------------------------------------------


def test_requests_are_proto3_json(pki, nodes):
    def script(node, rec):
        if rec.path == "/v1/sessions/get":
            return answer(200, {"session": SESSION, "superseded": True})
        if rec.path == "/v1/sessions/update":
            return answer(200, {"session": SESSION, "replayed": True})
        if rec.path == "/v1/sessions/revoke":
            return answer(200, {"id": "s1", "alreadyRevoked": True})
        if rec.path == "/v1/users/revoke":
            return answer(200, {"revokedIds": ["a", "b"]})
        return created()

    (n,) = nodes(script)
    c = _client(pki, [n])
    session, token = c.create_session(
        "alice", b"\x00\xffdata", {"k": "v"}, idle_timeout_ms=1000, absolute_timeout_ms=2**63
    )
    assert token == TOKEN and session.version == 1
    session, superseded = c.get_session(TOKEN, "stale", touch=True)
    assert superseded and session.version == 7
    s = c.update_session({"id": "s1"}, attributes={"a": "b"}, expected_version=5)
    assert s.replayed and s.data == b'{"cart":1}'
    c.update_session(TOKEN, data=b"")
    assert c.revoke_session(session_id="s1", reason="bye") is True
    assert c.revoke_user_sessions("alice", except_id="s1") == ["a", "b"]
    sent = [(r.path, r.json) for r in n.requests]
    assert [p for p, _ in sent] == [
        "/v1/sessions/create",
        "/v1/sessions/get",
        "/v1/sessions/update",
        "/v1/sessions/update",
        "/v1/sessions/revoke",
        "/v1/users/revoke",
    ]
    create = sent[0][1]
    assert base64.b64decode(create["data"]) == b"\x00\xffdata"
    assert create["attributes"] == {"k": "v"}
    assert (create["idleTimeoutMs"], create["absoluteTimeoutMs"]) == ("1000", str(2**63))
    assert len(base64.b64decode(create["requestId"])) == 16
    assert sent[1][1] == {"token": TOKEN, "consistency": "CONSISTENCY_STALE", "touch": True}
    update = sent[2][1]
    assert update["session"] == {"id": "s1"} and update["expectedVersion"] == "5"
    assert update["attributes"] == {"entries": {"a": "b"}} and "data" not in update
    # Empty data is data (it empties the session's); no data keeps it.
    assert sent[3][1]["session"] == {"token": TOKEN} and sent[3][1]["data"] == ""
    assert "expectedVersion" not in sent[3][1] and "attributes" not in sent[3][1]
    assert sent[4][1]["session"] == {"id": "s1"} and sent[4][1]["reason"] == "bye"
    assert sent[5][1]["exceptId"] == "s1"
    request_ids = [b["requestId"] for p, b in sent if p != "/v1/sessions/get"]
    assert len(set(request_ids)) == len(request_ids), "one request id per call"
    for r in n.requests:
        assert r.headers["Content-Type"] == "application/json"
        assert "Authorization" not in r.headers


def test_bearer_credential_is_sent(pki, nodes):
    (n,) = nodes(created)
    c = _client(pki, [n], cert_file=None, key_file=None, bearer_token="s3cret")
    c.create_session("alice")
    assert n.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(c)


def test_list_reads_every_page(pki, nodes):
    pages = {"": (["a", "b"], "p2"), "p2": (["c", "d"], "p3"), "p3": (["e"], "")}

    def script(node, rec):
        ids, nxt = pages[rec.json.get("pageToken", "")]
        body = {"sessions": [{"id": i, "userId": "alice"} for i in ids]}
        if nxt:
            body["nextPageToken"] = nxt
        return answer(200, body)

    (n,) = nodes(script)
    c = _client(pki, [n])
    assert [s.id for s in c.list_user_sessions("alice", "stale", page_size=2)] == list("abcde")
    assert [r.json.get("pageToken", "") for r in n.requests] == ["", "p2", "p3"]
    assert all(r.json["pageSize"] == 2 and r.json["consistency"] == "CONSISTENCY_STALE" for r in n.requests)
    sessions, nxt = c.list_user_sessions_page("alice", page_token="p2")
    assert [s.id for s in sessions] == ["c", "d"] and nxt == "p3"


def test_unavailable_nodes_are_skipped_with_the_same_request_id(pki, nodes):
    a, b, c_ = nodes(unavailable, not_leader_unnamed, created)
    client = _client(pki, [a, b, c_])
    session, token = client.create_session("alice", b"x")
    assert token == TOKEN
    bodies = [n.requests[0].body for n in (a, b, c_)]
    assert len({json.loads(x)["requestId"] for x in bodies}) == 1, "one request id on every retry"
    assert bodies[0] == bodies[1] == bodies[2]
    # The nodes that could not answer are tried last for a while.
    client.create_session("alice")
    assert (len(a.requests), len(b.requests), len(c_.requests)) == (1, 1, 2)


def test_a_lost_answer_is_retried_on_another_node(pki, nodes):
    a, b = nodes(lambda n, r: DROP, created)
    client = _client(pki, [a, b])
    _, token = client.create_session("alice")
    assert token == TOKEN
    assert a.requests[0].body == b.requests[0].body


def test_the_named_leader_is_asked_next_and_then_first(pki, nodes):
    leader_holder = {}

    def follower(node, rec):
        return answer(
            503,
            {"code": "NOT_LEADER", "leaderId": "3", "leaderAddr": leader_holder["addr"]},
        )

    a, b, c_ = nodes(
        follower,
        lambda n, r: created(headers=[("sessiond-node", "2")]),
        lambda n, r: created(headers=[("sessiond-node", "3")]),
    )
    leader_holder["addr"] = c_.endpoint
    client = _client(pki, [a, b, c_])
    client.rotate_token(TOKEN)
    assert (len(a.requests), len(b.requests), len(c_.requests)) == (1, 0, 1)
    client.update_session(TOKEN, data=b"x")
    assert (len(a.requests), len(b.requests), len(c_.requests)) == (1, 0, 2), "writes go to the leader"


def test_a_refusal_is_not_retried(pki, nodes):
    a, b = nodes(
        lambda n, r: answer(409, {"code": "VERSION_CONFLICT", "message": "conflict", "currentVersion": "9"}),
        created,
    )
    client = _client(pki, [a, b])
    with pytest.raises(VersionConflict) as e:
        client.update_session(TOKEN, data=b"x", expected_version=3)
    assert e.value.current_version == 9 and e.value.status == 409
    assert len(a.requests) == 1 and b.requests == []


def test_the_deadline_ends_retries_with_unavailable(pki, nodes):
    a, b = nodes(unavailable, unavailable)
    client = _client(pki, [a, b], deadline=0.6)
    t = time.monotonic()
    with pytest.raises(Unavailable) as e:
        client.get_session(TOKEN)
    assert time.monotonic() - t < 3
    assert len(a.requests) >= 2 and len(b.requests) >= 2, "every node, more than once"
    assert TOKEN not in str(e.value) and TOKEN not in repr(e.value)
    client = _client(pki, [a, b], max_attempts=3)
    with pytest.raises(Unavailable, match="3 attempts"):
        client.get_session(TOKEN)


def test_a_connection_closed_while_idle_is_reopened_on_the_same_node(pki, nodes):
    a, b = nodes(lambda n, r: created() + ("close",), created)
    client = _client(pki, [a, b])
    for _ in range(3):
        client.create_session("alice")
    assert (len(a.requests), len(b.requests)) == (3, 0)


def test_a_server_outside_the_ca_fails_fast_and_is_not_retried(pki, other_pki, nodes):
    (a,) = nodes(created)
    client = Client([a.endpoint], ca_file=str(other_pki / "ca.crt"), deadline=10)
    t = time.monotonic()
    with pytest.raises(TlsError):
        client.create_session("alice")
    assert time.monotonic() - t < 2 and a.requests == []


def test_nodes_that_all_hang_up_after_the_handshake_refuse_the_certificate(pki, nodes):
    # What a node refusing a client certificate mostly looks like under TLS 1.3: the
    # handshake completes on the client's side, then the connection closes without an answer.
    a, b = nodes(lambda n, r: DROP, lambda n, r: DROP)
    t = time.monotonic()
    with pytest.raises(TlsError, match="client certificate"):
        _client(pki, [a, b], deadline=10).get_session(TOKEN)
    assert time.monotonic() - t < 3
    assert len(a.requests) == len(b.requests) == 2, "every node twice, then no more"
    # Without a client certificate the nodes cannot be refusing one: an outage, retried.
    bearer = _client(pki, [a, b], cert_file=None, key_file=None, bearer_token="s", deadline=0.5)
    with pytest.raises(Unavailable):
        bearer.get_session(TOKEN)


def test_bodies_past_the_limit_are_refused_before_sending(pki, nodes):
    (a,) = nodes(created)
    client = _client(pki, [a])
    with pytest.raises(ResourceExhausted):
        client.create_session("alice", b"x" * (17 * 1024 * 1024))
    assert a.requests == []


def test_watch_resumes_after_the_last_event_on_another_node(pki, nodes):
    def event(i):
        return json.dumps({"index": str(i), "sessionId": f"s{i}", "userId": "u", "reason": "logout"}).encode() + b"\n"

    def first(node, rec):
        return 200, [("Content-Type", "application/x-ndjson")], [
            event(5),
            event(6),
            b'{"error":{"code":"UNAVAILABLE","message":"storage"}}\n',
        ]

    def second(node, rec):
        start = int(rec.json["fromIndex"])
        return 200, [("Content-Type", "application/x-ndjson")], [event(start), event(start + 1)]

    a, b = nodes(first, second)
    client = _client(pki, [a, b])
    got = []
    for ev in client.watch_revocations(from_index=5, timeout=5):
        got.append(ev.index)
        if len(got) == 4:
            break
    assert got == [5, 6, 7, 8]
    assert a.requests[0].json == {"fromIndex": "5"}
    assert b.requests[0].json == {"fromIndex": "7"}, "resumed after the last event seen"


def test_watch_refusals_are_raised(pki, nodes):
    (a,) = nodes(lambda n, r: answer(403, {"code": "PERMISSION_DENIED", "message": "needs watch"}))
    with pytest.raises(PermissionDenied):
        next(_client(pki, [a]).watch_revocations())


def test_threads_share_a_client(pki, nodes):
    (a,) = nodes(created)
    client = _client(pki, [a])
    errors = []

    def work():
        try:
            for _ in range(20):
                client.create_session("alice")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(a.requests) == 80


# -- the middleware's save, offline -----------------------------------------------------------


class StubStore:
    """One session in memory with compare-and-set; `others` are writes of other requests, each
    landing just before the next update of this one (so that it loses its compare-and-set)."""

    def __init__(self, data: dict):
        self.data, self.version, self.others, self.updates = dict(data), 1, [], 0

    def session(self):
        return Session(id="s", user_id="u", version=self.version, data=json.dumps(self.data).encode())

    def update_session(self, ref=None, data=None, attributes=None, expected_version=0, **kw):
        self.updates += 1
        if self.others:
            self.data.update(self.others.pop(0))
            self.version += 1
        if expected_version and expected_version != self.version:
            detail = {"code": "VERSION_CONFLICT", "currentVersion": str(self.version)}
            raise VersionConflict("version conflict", detail, 409)
        self.data = json.loads(data)
        self.version += 1
        return self.session()

    def get_session(self, token, consistency="linearizable", touch=False):
        return self.session(), False


def _request_session(store):
    from wsgi_sessions import RequestSession

    rs = RequestSession(store)
    rs._adopt(store.session(), TOKEN)
    return rs


def test_a_save_merges_its_changes_over_other_writers():
    store = StubStore({"a": 1, "b": 1, "c": 1})
    rs = _request_session(store)
    rs.data["a"] = 2
    del rs.data["c"]
    store.others = [{"b": 5}, {"d": 7}]  # two other saves, of other keys, win two races
    rs.save()
    assert store.data == {"a": 2, "b": 5, "d": 7}
    assert store.updates == 3 and rs.version == store.version == 4
    assert TOKEN not in repr(rs)


def test_a_save_never_overwrites_another_writer_of_the_same_key():
    from wsgi_sessions import DataConflict

    store = StubStore({"a": 1, "b": 1})
    rs = _request_session(store)
    rs.data["a"] = 2
    store.others = [{"b": 5}, {"a": 9}]  # the second race is over the same key
    with pytest.raises(DataConflict):
        rs.save()
    assert store.data == {"a": 9, "b": 5}


def test_an_unchanged_session_is_not_written():
    store = StubStore({"a": [1, {"x": 2}]})
    rs = _request_session(store)
    rs.data["a"][1]["x"] = 2  # the same value
    rs.save()
    assert store.updates == 0
    rs.data["a"][1]["x"] = 3  # a change inside a nested value
    rs.save()
    assert store.updates == 1 and store.data == {"a": [1, {"x": 3}]}
