"""Cookie sessions for any WSGI app, kept in sessiond (standard library only).

    app = SessionMiddleware(my_app, Client.from_env())

In the app, ``environ["sessiond.session"]`` is a ``RequestSession``:

- ``user_id``, ``session_id`` and ``data`` (a dict, stored as JSON) of a logged-in browser,
  else None, None, {};
- ``login(user_id)``: a new session and token (the old session revoked): call it after checking
  a password, so that a token planted before the login is worth nothing (session fixation);
- ``renew()``: a new session and token with the same user and data (at a privilege change);
  ``rotate()``: a new token for the same session (scheduled rotation; inside the cluster's
  rotation interval the token is kept);
- ``logout()`` / ``logout_everywhere()``: revoke this session / every session of the user.
  Revocation is final: no save racing it (another tab, a slow request) can bring it back;
- change ``data`` in the handler: it is written back after the handler, compare-and-set on the
  version read, only when it changed. When another request saved meanwhile, the keys this one
  changed are applied onto the newer value and written again (on its version), unless the
  other request changed one of the same keys: then the answer is 409 and nothing is written.

Every request is validated: STALE by default (served by the node the client reaches first)
and with ``touch`` (the idle deadline slides, a write at most once per touch interval); a
"not found" or "expired" from a STALE read is confirmed with the leader before the browser is
logged out. A cookie holding a superseded token (another tab rotated) is moved to the shared
successor with a Set-Cookie, so tabs racing each other converge on one token. A store that
cannot be reached answers 503, never a logout. No token is written to a log or a repr here.

The response is buffered until the session is saved, so a save that fails can still change
the status; keep responses of session-using handlers small (stream large ones elsewhere).
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie
from typing import Callable, List, Optional, Tuple

from sessiond_client import (
    LOGGED_OUT,
    Client,
    Expired,
    InvalidArgument,
    NotFound,
    Session,
    Unavailable,
    VersionConflict,
)

ENVIRON_KEY = "sessiond.session"

#: Compare-and-set rounds for one save before giving up with a 409.
SAVE_ROUNDS = 3

#: The answers that replace the handler's when the session could not be saved.
CONFLICT = ("409 Conflict", "the session was changed by another request\n")
UNAVAILABLE = ("503 Service Unavailable", "session store unavailable\n")


class DataConflict(Exception):
    """Another request changed the same keys of the session data since this one read it."""


def _canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _decode(raw: bytes) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_MISSING = object()


class RequestSession:
    """One request's view of its browser's session."""

    def __init__(self, client: Client):
        self._client = client
        self._token: Optional[str] = None
        self.session_id: Optional[str] = None
        self.user_id: Optional[str] = None
        self.version = 0
        self.data: dict = {}
        self._read: dict = {}  # the data as read (a deep copy), to find what the handler changed
        self.cookie_changed = False

    def __repr__(self) -> str:
        return f"RequestSession(id={self.session_id!r}, user={self.user_id!r}, version={self.version})"

    @property
    def logged_in(self) -> bool:
        return self._token is not None

    def _adopt(self, session: Session, token: str) -> None:
        self._token = token
        self.session_id = session.id
        self.user_id = session.user_id
        self.version = session.version
        self.data = _decode(session.data)
        self._read = json.loads(_canonical(self.data))

    def _forget(self) -> None:
        if self._token is not None or self.session_id is not None:
            self.cookie_changed = True
        self._token = self.session_id = self.user_id = None
        self.version = 0
        self.data = {}
        self._read = {}

    def _revoke(self, reason: str) -> None:
        if self.session_id is not None:
            try:
                self._client.revoke_session(session_id=self.session_id, reason=reason)
            except LOGGED_OUT:
                pass  # gone already

    def login(self, user_id: str, data: Optional[dict] = None) -> None:
        """Start a new session for ``user_id`` (revoking the browser's previous one)."""
        self._revoke("relogin")
        session, token = self._client.create_session(user_id, _canonical(data or {}).encode())
        self._adopt(session, token)
        self.cookie_changed = True

    def renew(self) -> None:
        """A new session and token for the same user and data, the old session revoked: at a
        privilege change (a token the browser held before is worth nothing afterwards)."""
        if self._token is None:
            raise RuntimeError("not logged in")
        user, data = self.user_id, self.data
        self._revoke("renewed")
        session, token = self._client.create_session(user, _canonical(data).encode())
        self._adopt(session, token)
        self.cookie_changed = True

    def rotate(self) -> None:
        """A new token for this session, on a schedule (the old one keeps working for the grace
        window). Inside the cluster's rotation interval the token stays as it is; use
        ``renew`` where a new token is a must."""
        if self._token is None:
            raise RuntimeError("not logged in")
        r = self._client.rotate_token(self._token)
        if r.session.version == self.version + 1:
            # Nothing but this rotation wrote since the read: the save may expect its version.
            self.version = r.session.version
        if r.token != self._token:
            self._token = r.token
            self.cookie_changed = True

    def logout(self) -> None:
        self._revoke("logout")
        self._forget()

    def logout_everywhere(self, reason: str = "logout everywhere") -> None:
        if self.user_id is not None:
            self._client.revoke_user_sessions(self.user_id, reason=reason)
        self._forget()

    def changed(self) -> bool:
        return self._token is not None and _canonical(self.data) != _canonical(self._read)

    def save(self) -> None:
        """Write ``data`` back if it changed (compare-and-set; see the module doc). Raises
        DataConflict, a LOGGED_OUT error (logged out meanwhile), or Unavailable."""
        if not self.changed():
            return
        new = json.loads(_canonical(self.data))
        changed = {
            k for k in set(new) | set(self._read) if new.get(k, _MISSING) != self._read.get(k, _MISSING)
        }
        base, version = self._read, self.version
        for _ in range(SAVE_ROUNDS):
            try:
                s = self._client.update_session(
                    session_id=self.session_id,
                    data=_canonical(new).encode(),
                    expected_version=version,
                )
                break
            except VersionConflict:
                # Another request wrote first: re-read and merge this request's changes onto it.
                fresh, _ = self._client.get_session(self._token, "linearizable")
                current = _decode(fresh.data)
                for k in changed:
                    if current.get(k, _MISSING) != base.get(k, _MISSING):
                        raise DataConflict(k) from None
                merged = json.loads(_canonical(current))
                for k in changed:
                    if k in new:
                        merged[k] = new[k]
                    else:
                        merged.pop(k, None)
                # The next round compares with what the others wrote, not with the merge.
                base, version, new = current, fresh.version, merged
        else:
            raise DataConflict("too many concurrent writers")
        self.version = s.version
        self.data = new
        self._read = json.loads(_canonical(new))


def _looks_like_token(value: str) -> bool:
    return value.startswith("sdt1_") and len(value) == 48


class CookieSessions:
    """The cookie and its validation, whatever the server interface: the settings of a
    middleware keeping a sessiond session per browser in the cookie ``cookie``."""

    def __init__(
        self,
        client: Client,
        cookie: str = "sid",
        secure: bool = True,
        same_site: str = "Lax",
        path: str = "/",
        consistency: str = "stale",
        touch: bool = True,
    ):
        self.client = client
        self.cookie = cookie
        self.secure = secure
        self.same_site = same_site
        self.path = path
        self.consistency = consistency
        self.touch = touch

    def set_cookie_header(self, token: Optional[str]) -> Tuple[str, str]:
        attrs = f"; Path={self.path}; HttpOnly; SameSite={self.same_site}"
        if self.secure:
            attrs += "; Secure"
        if token is None:
            return ("Set-Cookie", f"{self.cookie}=; Max-Age=0{attrs}")
        return ("Set-Cookie", f"{self.cookie}={token}{attrs}")

    def token_in(self, raw: str) -> Optional[str]:
        """The value of the session cookie in a ``Cookie`` header, if any."""
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(self.cookie)
        return morsel.value if morsel is not None and morsel.value else None

    def _validate(self, rs: RequestSession, token: str) -> None:
        """Validate the cookie's token into ``rs`` (see the module doc); raises Unavailable."""
        if not _looks_like_token(token):
            rs.cookie_changed = True  # not ours: clear it
            return
        try:
            try:
                session, superseded = self.client.get_session(token, self.consistency, self.touch)
            except (NotFound, Expired):
                if self.consistency == "linearizable":
                    raise
                # The node read may be behind the write that made this token (or slid the
                # deadline): ask the leader before logging anyone out.
                session, superseded = self.client.get_session(token, "linearizable", self.touch)
            if superseded:
                r = self.client.rotate_token(token)
                session, token = r.session, r.token
                rs.cookie_changed = True
        except (*LOGGED_OUT, InvalidArgument):
            rs._forget()
            rs.cookie_changed = True
            return
        rs._adopt(session, token)

    def _finish(self, rs: RequestSession) -> Optional[Tuple[str, str]]:
        """After the handler: write the data back. The status and text that replace the
        handler's answer when the save could not be made, else None."""
        try:
            rs.save()
        except DataConflict:
            return CONFLICT
        except LOGGED_OUT:
            rs._forget()  # logged out meanwhile: the logout wins, nothing is written back
        except Unavailable:
            return UNAVAILABLE
        return None


class SessionMiddleware(CookieSessions):
    """WSGI middleware keeping a sessiond session per browser in the cookie ``cookie``."""

    def __init__(self, app: Callable, client: Client, **settings):
        super().__init__(client, **settings)
        self.app = app

    def __call__(self, environ, start_response):
        rs = RequestSession(self.client)
        environ[ENVIRON_KEY] = rs
        token = self.token_in(environ.get("HTTP_COOKIE", ""))
        try:
            if token:
                self._validate(rs, token)
        except Unavailable:
            return _plain(start_response, *UNAVAILABLE)

        captured: dict = {}
        body: List[bytes] = []

        def start(status: str, headers: List[Tuple[str, str]], exc_info=None):
            captured["status"], captured["headers"] = status, list(headers)
            return body.append

        try:
            result = self.app(environ, start)
            try:
                for chunk in result:
                    body.append(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Unavailable:  # a login, rotation or logout in the handler could not be made
            return _plain(start_response, *UNAVAILABLE)
        status, headers = captured["status"], captured["headers"]
        failed = self._finish(rs)
        if failed is not None:
            status, headers, body = _error(*failed)
        if rs.cookie_changed:
            headers.append(self.set_cookie_header(rs._token))
            if not any(k.lower() == "cache-control" for k, _ in headers):
                headers.append(("Cache-Control", 'no-cache="Set-Cookie"'))
        start_response(status, headers)
        return body


def _error(status: str, text: str):
    data = text.encode()
    return status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))], [data]


def _plain(start_response, status: str, text: str):
    status, headers, body = _error(status, text)
    start_response(status, headers)
    return body
