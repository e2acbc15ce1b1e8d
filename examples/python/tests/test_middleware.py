"""The WSGI and ASGI middlewares end to end, the same scenarios against each: a WSGI app
behind a threading wsgiref server (wsgi_app.py) and a Starlette app with async handlers behind
uvicorn (asgi_app.py); browsers with cookie jars (urllib); the real cluster."""

import asyncio
import json
import threading

import pytest

import asgi_app
import wsgi_app
from asgi_sessions import SessionMiddleware as AsgiMiddleware
from browser import Browser
from sessiond_client import Client, Revoked, VersionConflict


class CountingClient(Client):
    """Counts the compare-and-set writes that lost."""

    conflicts = 0

    def update_session(self, *a, **kw):
        try:
            return super().update_session(*a, **kw)
        except VersionConflict:
            CountingClient.conflicts += 1
            raise


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def stack(request):
    """The app module of one server interface: ``serve(client)`` and ``meet(name)``."""
    return {"wsgi": wsgi_app, "asgi": asgi_app}[request.param]


@pytest.fixture(scope="module")
def server(cluster, stack):
    c = CountingClient(
        cluster.endpoints,
        ca_file=cluster.env["SESSIOND_CA"],
        cert_file=cluster.env["SESSIOND_CERT"],
        key_file=cluster.env["SESSIOND_KEY"],
    )
    url, stop = stack.serve(c)
    yield url
    stop()


@pytest.fixture
def user(stack):
    """User names of one stack's runs, distinct from the other's on the shared cluster."""
    return lambda name: f"{stack.__name__}-{name}"


def me(user, data):
    return (200, {"user": user, "data": data})


def whoami(b):
    code, body = b.get("/me")
    return code, (json.loads(body) if code == 200 else body)


def test_login_count_rotate_logout(server, client, user):
    b = Browser(server)
    assert b.get("/me") == (401, "log in first")
    assert b.get(f"/login?user={user('hana')}") == (200, "welcome")
    first = b.token()
    assert first and first.startswith("sdt1_")
    cookie = b.last_headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert b.last_headers["Cache-Control"] == 'no-cache="Set-Cookie"'
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
    assert whoami(b) == me(user("hana"), {"n": 4})

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
    assert s2.id != s.id and s2.user_id == user("hana")
    assert whoami(b) == me(user("hana"), {"n": 4, "rotated": True, "renewed": True})

    last = b.token()
    assert b.get("/logout") == (200, "bye")
    assert b.token() is None
    with pytest.raises(Revoked) as e:
        client.get_session(last)
    assert e.value.reason == "logout"
    assert b.get("/count")[0] == 401


def test_a_new_login_revokes_the_previous_session(server, client, user):
    b = Browser(server)
    b.get(f"/login?user={user('ines')}")
    before = b.token()
    b.get("/count")
    b.get(f"/login?user={user('ines')}")
    assert b.token() != before
    with pytest.raises(Revoked):
        client.get_session(before)
    assert whoami(b) == me(user("ines"), {}), "a fresh session"


def test_tabs_racing_with_a_superseded_cookie_converge_on_one_token(server, client, user):
    b = Browser(server)
    b.get(f"/login?user={user('jana')}")
    token = b.token()
    successor = client.rotate_or_current(token)  # another tab (or server) rotated
    tabs = [Browser(server) for _ in range(6)]
    for t in tabs:
        t.set_token(token)  # every tab still presents the superseded token
    results = []
    barrier = threading.Barrier(len(tabs))

    def go(tab):
        barrier.wait()
        results.append(whoami(tab))

    threads = [threading.Thread(target=go, args=(t,)) for t in tabs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [me(user("jana"), {})] * len(tabs), "no tab was logged out"
    assert {t.token() for t in tabs} == {successor}, "every tab holds the one successor"
    s, superseded = client.get_session(successor)
    assert s.generation == 1 and not superseded


def test_concurrent_saves_of_different_keys_both_land(server, client, user, stack):
    b = Browser(server)
    b.get(f"/login?user={user('kira')}")
    version = client.get_session(b.token())[0].version
    stack.meet("k1")
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


def test_concurrent_saves_of_the_same_key_answer_409_to_one(server, client, user, stack):
    b = Browser(server)
    b.get(f"/login?user={user('lara')}")
    stack.meet("k2")
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


def test_a_logout_racing_saves_never_brings_the_session_back(server, client, user):
    for round in range(3):
        tab = Browser(server)
        tab.get(f"/login?user={user(f'ivy{round}')}")
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
        assert list(client.list_user_sessions(user(f"ivy{round}"))) == []
        assert tab.get("/me")[0] == 401


def test_logout_everywhere_logs_out_the_other_browsers(server, client, user):
    phone, laptop = Browser(server), Browser(server)
    phone.get(f"/login?user={user('mona')}")
    laptop.get(f"/login?user={user('mona')}")
    assert laptop.get("/count") == (200, "1")
    assert phone.get("/everywhere") == (200, "bye everywhere")
    assert laptop.get("/count")[0] == 401
    assert laptop.token() is None, "the dead cookie was cleared"
    assert list(client.list_user_sessions(user("mona"))) == []


def test_a_cookie_that_is_no_token_is_cleared(server):
    b = Browser(server)
    b.set_token("garbage")
    assert b.get("/me")[0] == 401
    assert b.token() is None
    b.set_token("sdt1_" + "A" * 43)  # well formed, never issued
    assert b.get("/me")[0] == 401
    assert b.token() is None


def test_an_unreachable_store_is_a_503_not_a_logout(cluster, server, user, stack):
    b = Browser(server)
    b.get(f"/login?user={user('nora')}")
    token = b.token()
    dead = Client(["127.0.0.1:9"], ca_file=cluster.env["SESSIOND_CA"], deadline=0.5)
    url, stop = stack.serve(dead)
    try:
        b2 = Browser(url, b.jar)
        assert b2.get("/me") == (503, "session store unavailable\n")
        assert b2.last_headers["Set-Cookie"] is None
        assert b.token() == token, "the cookie was kept"
    finally:
        stop()
    assert whoami(b) == me(user("nora"), {}), "still logged in once the store is back"


def test_asgi_scopes_other_than_http_pass_through_without_a_session():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope)

    mw = AsgiMiddleware(inner, Client(["127.0.0.1:9"], deadline=0.1))
    asyncio.run(mw({"type": "lifespan"}, None, None))
    assert seen == [{"type": "lifespan"}], "no session, no change to the scope"
