"""Cookie sessions for any ASGI app (Starlette, FastAPI, ...), kept in sessiond.

    app = SessionMiddleware(my_app, Client.from_env())
    # Starlette: Starlette(routes=..., middleware=[Middleware(SessionMiddleware, client=client)])

In a handler, ``request.scope["sessiond.session"]`` (``scope[SCOPE_KEY]``) is an
``AsyncRequestSession``: ``user_id``, ``session_id`` and ``data`` as in ``wsgi_sessions``, and
``await s.login(user_id)``, ``renew()``, ``rotate()``, ``logout()``, ``logout_everywhere()``.

The rules are the WSGI middleware's, from the same code (``wsgi_sessions.py`` must sit beside
this file): a STALE validation with ``touch`` per request, "not found" and "expired" confirmed
with the leader before a logout, a superseded cookie moved to the shared successor, ``data``
written back compare-and-set after the handler (changed keys merged onto a newer value; 409
when another request changed the same keys), a logout that no racing save can undo, and 503
(never a logout) when the store cannot be reached.

The client (``sessiond_client``) is blocking: its calls run in a worker thread
(``asyncio.to_thread``), so the event loop keeps serving other requests meanwhile; asyncio
servers only. The response is buffered until the session is saved (a failed save can still
change the status), so keep session-using responses small and do not stream through it.
Only ``http`` scopes get a session; websockets and lifespan pass through untouched.
"""

from __future__ import annotations

import asyncio
from typing import Callable, List, Optional, Tuple

from sessiond_client import Client, Unavailable
from wsgi_sessions import UNAVAILABLE, CookieSessions, RequestSession

SCOPE_KEY = "sessiond.session"

#: ASGI extensions that bypass ``http.response.body``, hidden from the app.
_UNBUFFERED = ("http.response.pathsend", "http.response.zerocopysend", "http.response.trailers")


class AsyncRequestSession:
    """One request's view of its browser's session, for async handlers."""

    def __init__(self, rs: RequestSession):
        self._rs = rs

    def __repr__(self) -> str:
        return f"Async{self._rs!r}"

    @property
    def user_id(self) -> Optional[str]:
        return self._rs.user_id

    @property
    def session_id(self) -> Optional[str]:
        return self._rs.session_id

    @property
    def logged_in(self) -> bool:
        return self._rs.logged_in

    @property
    def data(self) -> dict:
        """The session data (a dict, stored as JSON), written back after the handler."""
        return self._rs.data

    @data.setter
    def data(self, value: dict) -> None:
        self._rs.data = value

    async def login(self, user_id: str, data: Optional[dict] = None) -> None:
        """Start a new session for ``user_id`` (revoking the browser's previous one)."""
        await asyncio.to_thread(self._rs.login, user_id, data)

    async def renew(self) -> None:
        """A new session and token for the same user and data (at a privilege change)."""
        await asyncio.to_thread(self._rs.renew)

    async def rotate(self) -> None:
        """A new token for this session, on a schedule (kept inside the rotation interval)."""
        await asyncio.to_thread(self._rs.rotate)

    async def logout(self) -> None:
        await asyncio.to_thread(self._rs.logout)

    async def logout_everywhere(self, reason: str = "logout everywhere") -> None:
        await asyncio.to_thread(self._rs.logout_everywhere, reason)


def _header(scope, name: bytes) -> str:
    """The header ``name`` (lower case) of the request, several joined as HTTP allows."""
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]
    return "; ".join(values) if name == b"cookie" else ", ".join(values)


class SessionMiddleware(CookieSessions):
    """ASGI middleware keeping a sessiond session per browser in the cookie ``cookie``
    (settings as ``wsgi_sessions.CookieSessions``)."""

    def __init__(self, app: Callable, client: Client, **settings):
        super().__init__(client, **settings)
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rs = RequestSession(self.client)
        scope[SCOPE_KEY] = AsyncRequestSession(rs)
        token = self.token_in(_header(scope, b"cookie"))
        try:
            if token:
                await asyncio.to_thread(self._validate, rs, token)
        except Unavailable:
            await _plain(send, *UNAVAILABLE)
            return

        # The response is buffered whole: the app must not use the server's extensions that
        # send in other ways (files by path, trailers).
        extensions = dict(scope.get("extensions") or {})
        for name in _UNBUFFERED:
            extensions.pop(name, None)
        scope["extensions"] = extensions

        start: dict = {}
        body: List[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        try:
            await self.app(scope, receive, capture)
        except Unavailable:  # a login, rotation or logout in the handler could not be made
            await _plain(send, *UNAVAILABLE)
            return
        if not start:
            raise RuntimeError("the app returned without starting a response")
        status: int = start["status"]
        headers: List[Tuple[bytes, bytes]] = list(start.get("headers", []))
        failed = await asyncio.to_thread(self._finish, rs)
        if failed is not None:
            status, headers, body = _error(*failed)
        if rs.cookie_changed:
            name, value = self.set_cookie_header(rs._token)
            headers.append((name.lower().encode(), value.encode("latin-1")))
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", b'no-cache="Set-Cookie"'))
        data = b"".join(body)
        # The body is whole now: its length is known, whatever the app announced.
        headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"transfer-encoding")]
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})


def _error(status: str, text: str):
    data = text.encode()
    code = int(status.split(" ", 1)[0])
    return code, [(b"content-type", b"text/plain; charset=utf-8")], [data]


async def _plain(send, status: str, text: str) -> None:
    code, headers, body = _error(status, text)
    data = b"".join(body)
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})
