"""The WSGI middleware end to end: a wsgiref server in a thread, browsers with cookie jars
(http.cookiejar + urllib), against the real cluster."""

import http.cookiejar
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

import pytest

from sessiond_client import Client, Revoked, VersionConflict
from wsgi_sessions import SessionMiddleware

#: Requests of the `wait` parameter meet here after reading their session, before saving it,
#: so that both are sure to have read the same version.
meeting = {}


def app(environ, start_response):
    s = environ["sessiond.session"]
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    if path == "/login":
        s.login(q["user"])
        body = "welcome"
    elif path == "/logout":
        s.logout()
        body = "bye"
    elif path == "/everywhere":
        s.logout_everywhere()
        body = "bye everywhere"
    elif s.user_id is None:
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"log in first"]
    elif path == "/count":
        s.data["n"] = s.data.get("n", 0) + 1
        body = str(s.data["n"])
    elif path == "/set":
        s.data[q["k"]] = q["v"]
        if "wait" in q:
            meeting[q["wait"]].wait(10)
        body = "ok"
    elif path == "/rotate":
        s.data["rotated"] = True
        s.rotate()
        body = "rotated"
    elif path == "/renew":
        s.data["renewed"] = True
        s.renew()
        body = "renewed"
    else:
        body = json.dumps({"user": s.user_id, "data": s.data}, sort_keys=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class CountingClient(Client):
    """Counts the compare-and-set writes that lost."""

    conflicts = 0

    def update_session(self, *a, **kw):
        try:
            return super().update_session(*a, **kw)
        except VersionConflict:
            CountingClient.conflicts += 1
            raise


def _serve(wsgi_app):
    httpd = make_server("127.0.0.1", 0, wsgi_app, server_class=ThreadingServer, handler_class=Quiet)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}"


@pytest.fixture(scope="module")
def server(cluster):
    c = CountingClient(
        cluster.endpoints,
        ca_file=cluster.env["SESSIOND_CA"],
        cert_file=cluster.env["SESSIOND_CERT"],
        key_file=cluster.env["SESSIOND_KEY"],
    )
    httpd, url = _serve(SessionMiddleware(app, c, secure=False))
    yield url
    httpd.shutdown()
    httpd.server_close()


class Browser:
    def __init__(self, base, jar=None):
        self.base = base
        self.jar = jar if jar is not None else http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.last_headers = None

    def get(self, path):
        try:
            with self.opener.open(self.base + path, timeout=30) as r:
                self.last_headers = r.headers
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            self.last_headers = e.headers
            return e.code, e.read().decode()

    def token(self):
        return next((c.value for c in self.jar if c.name == "sid"), None)

    def set_token(self, token):
        self.jar.set_cookie(
            http.cookiejar.Cookie(
                0, "sid", token, None, False, "127.0.0.1", False, False, "/", True,
                False, None, False, None, None, {"HttpOnly": None},
            )
        )


def me(user, data):
    return (200, json.dumps({"user": user, "data": data}, sort_keys=True))


def test_login_count_rotate_logout(server, client):
    b = Browser(server)
    assert b.get("/me") == (401, "log in first")
    assert b.get("/login?user=hana") == (200, "welcome")
    first = b.token()
    assert first and first.startswith("sdt1_")
    cookie = b.last_headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    for want in ("1", "2", "3"):
        assert b.get("/count") == (200, want)
        assert b.last_headers["Set-Cookie"] is None, "the cookie is only set when it changes"
    s, _ = client.get_session(first)
    assert json.loads(s.data) == {"n": 3}, "written back"
    assert s.version == 4, "one write per changed request"
    b.get("/me")
    assert client.get_session(first)[0].version == 4, "a request that changes nothing writes nothing"

    # Another tab rotated the token: this browser's next request moves to the successor.
    successor = client.rotate_or_current(first)
    conflicts = CountingClient.conflicts
    assert b.get("/count") == (200, "4")
    assert b.token() == successor
    assert CountingClient.conflicts == conflicts, "the save expected the version after the rotation"
    assert b.get("/me") == me("hana", {"n": 4})

    # A rotation in the handler, inside the rotation interval: the token stays, the change lands.
    version = client.get_session(successor)[0].version
    assert b.get("/rotate") == (200, "rotated")
    assert b.token() == successor and b.last_headers["Set-Cookie"] is None
    s, _ = client.get_session(successor)
    assert json.loads(s.data) == {"n": 4, "rotated": True} and s.version == version + 1

    # A privilege change: a new session with the same user and data; the old one is dead.
    assert b.get("/renew") == (200, "renewed")
    assert b.token() not in (first, successor)
    with pytest.raises(Revoked) as e:
        client.get_session(successor)
    assert e.value.reason == "renewed"
    s2, _ = client.get_session(b.token())
    assert s2.id != s.id and s2.user_id == "hana"
    assert b.get("/me") == me("hana", {"n": 4, "rotated": True, "renewed": True})

    last = b.token()
    assert b.get("/logout") == (200, "bye")
    assert b.token() is None
    with pytest.raises(Revoked) as e:
        client.get_session(last)
    assert e.value.reason == "logout"
    assert b.get("/count")[0] == 401


def test_a_new_login_revokes_the_previous_session(server, client):
    b = Browser(server)
    b.get("/login?user=ines")
    before = b.token()
    b.get("/count")
    b.get("/login?user=ines")
    assert b.token() != before
    with pytest.raises(Revoked):
        client.get_session(before)
    assert b.get("/me") == me("ines", {}), "a fresh session"


def test_tabs_racing_with_a_superseded_cookie_converge_on_one_token(server, client):
    b = Browser(server)
    b.get("/login?user=jana")
    token = b.token()
    successor = client.rotate_or_current(token)  # another tab (or server) rotated
    tabs = [Browser(server) for _ in range(6)]
    for t in tabs:
        t.set_token(token)  # every tab still presents the superseded token
    results = []
    barrier = threading.Barrier(len(tabs))

    def go(tab):
        barrier.wait()
        results.append(tab.get("/me"))

    threads = [threading.Thread(target=go, args=(t,)) for t in tabs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [me("jana", {})] * len(tabs), "no tab was logged out"
    assert {t.token() for t in tabs} == {successor}, "every tab holds the one successor"
    s, superseded = client.get_session(successor)
    assert s.generation == 1 and not superseded


def test_concurrent_saves_of_different_keys_both_land(server, client):
    b = Browser(server)
    b.get("/login?user=kira")
    version = client.get_session(b.token())[0].version
    meeting["k1"] = threading.Barrier(2)
    results = []
    threads = [
        threading.Thread(target=lambda k=k, v=v: results.append(b.get(f"/set?k={k}&v={v}&wait=k1")))
        for k, v in (("a", "1"), ("b", "2"))
    ]
    conflicts = CountingClient.conflicts
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [(200, "ok")] * 2
    assert CountingClient.conflicts == conflicts + 1, "both read one version; one save lost its CAS"
    s, _ = client.get_session(b.token())
    assert json.loads(s.data) == {"a": "1", "b": "2"}, "the loser's change merged, nothing lost"
    assert s.version == version + 2


def test_concurrent_saves_of_the_same_key_answer_409_to_one(server, client):
    b = Browser(server)
    b.get("/login?user=lara")
    meeting["k2"] = threading.Barrier(2)
    results = {}
    threads = [
        threading.Thread(target=lambda v=v: results.__setitem__(v, b.get(f"/set?k=color&v={v}&wait=k2")))
        for v in ("red", "blue")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(code for code, _ in results.values())
    assert codes == [200, 409], results
    winner = next(v for v, (code, _) in results.items() if code == 200)
    s, _ = client.get_session(b.token())
    assert json.loads(s.data) == {"color": winner}, "the refused write left no trace"


def test_a_logout_racing_saves_never_brings_the_session_back(server, client):
    for round in range(3):
        tab = Browser(server)
        tab.get(f"/login?user=ivy{round}")
        token = tab.token()
        other = Browser(server, tab.jar)  # another tab of the same browser: one cookie jar
        codes = []

        def count():
            for _ in range(8):
                codes.append(other.get("/count")[0])

        t = threading.Thread(target=count)
        t.start()
        tab.get("/logout")
        t.join(60)
        assert set(codes) <= {200, 401}, codes
        with pytest.raises(Revoked):
            client.get_session(token)
        assert list(client.list_user_sessions(f"ivy{round}")) == []
        assert tab.get("/me")[0] == 401


def test_logout_everywhere_logs_out_the_other_browsers(server, client):
    phone, laptop = Browser(server), Browser(server)
    phone.get("/login?user=mona")
    laptop.get("/login?user=mona")
    assert laptop.get("/count") == (200, "1")
    assert phone.get("/everywhere") == (200, "bye everywhere")
    assert laptop.get("/count")[0] == 401
    assert laptop.token() is None, "the dead cookie was cleared"
    assert list(client.list_user_sessions("mona")) == []


def test_a_cookie_that_is_no_token_is_cleared(server):
    b = Browser(server)
    b.set_token("garbage")
    assert b.get("/me")[0] == 401
    assert b.token() is None
    b.set_token("sdt1_" + "A" * 43)  # well formed, never issued
    assert b.get("/me")[0] == 401
    assert b.token() is None


def test_an_unreachable_store_is_a_503_not_a_logout(cluster, server):
    b = Browser(server)
    b.get("/login?user=nora")
    token = b.token()
    dead = Client(["127.0.0.1:9"], ca_file=cluster.env["SESSIOND_CA"], deadline=0.5)
    httpd, url = _serve(SessionMiddleware(app, dead, secure=False))
    try:
        b2 = Browser(url, b.jar)
        assert b2.get("/me")[0] == 503
        assert b2.last_headers["Set-Cookie"] is None
        assert b.token() == token, "the cookie was kept"
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert b.get("/me") == me("nora", {}), "still logged in once the store is back"
