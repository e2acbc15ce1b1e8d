"""A client of sessiond's HTTP/JSON API, with the standard library only (Python 3.8+).

Every call is a POST of the gRPC request message in canonical proto3 JSON to any node
(docs/http-api.md); the answer is the response message, with fields at their default value left
out. Writes carry a request id drawn once per call and sent again on every retry, to whichever
node is tried next, so a retried create or rotation returns the same token and a retried update
is applied once. A node that cannot answer (503/504, a refused, dropped or timed-out
connection) is skipped for the next one; the leader named in answers is tried first for
writes and linearizable reads.

Tokens are secrets: no exception text or repr made here contains one.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

__all__ = [
    "Client",
    "Session",
    "Created",
    "Rotated",
    "Revocation",
    "SessiondError",
    "NotFound",
    "Expired",
    "Revoked",
    "TokenReused",
    "VersionConflict",
    "InvalidArgument",
    "ResourceExhausted",
    "Unavailable",
    "Unauthenticated",
    "PermissionDenied",
    "TlsError",
    "LOGGED_OUT",
    "request_id",
]

#: Environment variables of `Client.from_env` (the ones `sessiond dev` prints).
ENV_ENDPOINTS = "SESSIOND_ENDPOINTS"
ENV_CA = "SESSIOND_CA"
ENV_CERT = "SESSIOND_CERT"
ENV_KEY = "SESSIOND_KEY"
ENV_TOKEN_FILE = "SESSIOND_TOKEN_FILE"

#: The largest JSON body a node reads (a 16 MiB message in base64, plus room for the rest).
#: A node refuses a larger one by closing the connection while it is being sent, so the
#: client refuses it itself, as RESOURCE_EXHAUSTED, instead of retrying it.
MAX_BODY_BYTES = 16 * 1024 * 1024 // 3 * 4 + 64 * 1024

_TOKEN = re.compile(r"sdt1_[A-Za-z0-9_-]+")


def _scrub(text: str) -> str:
    """``text`` with anything shaped like a token replaced (defence in depth: the nodes never
    put one in a message, but a proxy in between might echo a body)."""
    return _TOKEN.sub("sdt1_<redacted>", text)


# -- errors ---------------------------------------------------------------------------------


class SessiondError(Exception):
    """A call the store refused. ``code`` is the ErrorDetail code to match on (also as the
    subclass), ``status`` the HTTP status (0 when none came), ``detail`` the ErrorDetail."""

    code = "ERROR_CODE_UNSPECIFIED"

    def __init__(self, message: str, detail: Optional[dict] = None, status: int = 0):
        message = _scrub(message)
        super().__init__(message)
        self.message = message
        self.detail = dict(detail or {})
        if "message" in self.detail:
            self.detail["message"] = _scrub(str(self.detail["message"]))
        code = self.detail.get("code")
        if code and type(self) is SessiondError:
            self.code = str(code)  # a code this client does not know yet
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class NotFound(SessiondError):
    """Unknown token or session (never issued, swept after expiry): log in again."""

    code = "NOT_FOUND"


class Expired(SessiondError):
    """The session's deadline has passed: log in again."""

    code = "EXPIRED"


class Revoked(SessiondError):
    """The session was revoked (logout, log out everywhere, eviction, reuse): log in again."""

    code = "REVOKED"

    @property
    def reason(self) -> str:
        return str(self.detail.get("revokedReason", ""))


class TokenReused(SessiondError):
    """A rotated-away token came back after its grace window (by default the session is
    revoked too): log in again."""

    code = "TOKEN_REUSED"


class VersionConflict(SessiondError):
    """A compare-and-set lost: re-read, re-apply the change, write with ``current_version``."""

    code = "VERSION_CONFLICT"

    @property
    def current_version(self) -> int:
        return int(self.detail.get("currentVersion", 0))


class InvalidArgument(SessiondError):
    """Malformed or out-of-limit input (or a request id reused for another request)."""

    code = "INVALID_ARGUMENT"


class ResourceExhausted(SessiondError):
    """The per-user cap under the ``refuse`` policy, or a body past the size limit."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(SessiondError):
    """No node answered before the deadline. The outcome of a write is unknown: call it again
    with the same ``rid`` and it is applied at most once."""

    code = "UNAVAILABLE"


class Unauthenticated(SessiondError):
    """No valid credential (client certificate or bearer secret)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(SessiondError):
    """The credential lacks the role for the call (``app``, or ``watch`` for revocations)."""

    code = "PERMISSION_DENIED"


class TlsError(SessiondError):
    """The TLS handshake failed for good: the server's certificate does not verify against the
    CA (or names another host), or the node refused the client certificate. Never retried."""

    code = "TLS"


_ERRORS = {
    cls.code: cls
    for cls in (
        NotFound,
        Expired,
        Revoked,
        TokenReused,
        VersionConflict,
        InvalidArgument,
        ResourceExhausted,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
    )
}

#: What a status means when an answer carries no ErrorDetail (refused before the API: a body
#: past the limit, a mistyped route, a proxy). A route that does not exist is deliberately not
#: NOT_FOUND.
_BY_STATUS = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    413: ResourceExhausted,
    429: ResourceExhausted,
    431: ResourceExhausted,
}

#: Answers after which another node may do better: the call is sent again.
_RETRY_STATUS = (502, 503, 504)
_RETRY_CODES = ("UNAVAILABLE", "NOT_LEADER")

#: Answers that mean "this cookie holds no session (any more)": log in again.
LOGGED_OUT = (NotFound, Expired, Revoked, TokenReused)


def error_from_answer(status: int, body: bytes) -> SessiondError:
    """The exception for a refused call: its ErrorDetail ``code`` decides the class; the
    status only when the body holds none."""
    try:
        detail = json.loads(body) if body else {}
        if not isinstance(detail, dict):
            detail = {}
    except ValueError:
        detail = {}
    code = detail.get("code")
    if code:
        cls = _ERRORS.get(code, SessiondError)
        return cls(str(detail.get("message") or code), detail, status)
    cls = _BY_STATUS.get(status, SessiondError)
    return cls(str(detail.get("message") or f"HTTP {status}"), detail, status)


# -- messages -------------------------------------------------------------------------------


def request_id() -> str:
    """16 random bytes, base64: one per logical write, reused on its retries."""
    return base64.b64encode(os.urandom(16)).decode()


def _u64(value) -> int:
    """A uint64 of an answer (a JSON string, or absent for 0)."""
    return int(value or 0)


def _b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


@dataclass
class Session:
    """A session as the store shows it (never a token). ``replayed`` is set on the answer to a
    write that repeated an earlier request id: the first outcome, sent again."""

    id: str
    user_id: str
    generation: int = 0
    version: int = 0
    data: bytes = b""
    attributes: Dict[str, str] = field(default_factory=dict)
    created_at_ms: int = 0
    last_active_at_ms: int = 0
    idle_timeout_ms: int = 0
    absolute_expires_at_ms: int = 0
    expires_at_ms: int = 0
    replayed: bool = False

    @classmethod
    def from_json(cls, s: Optional[dict], replayed: bool = False) -> "Session":
        s = s or {}
        return cls(
            id=s.get("id", ""),
            user_id=s.get("userId", ""),
            generation=_u64(s.get("generation")),
            version=_u64(s.get("version")),
            data=base64.b64decode(s.get("data", "")),
            attributes=dict(s.get("attributes") or {}),
            created_at_ms=_u64(s.get("createdAtMs")),
            last_active_at_ms=_u64(s.get("lastActiveAtMs")),
            idle_timeout_ms=_u64(s.get("idleTimeoutMs")),
            absolute_expires_at_ms=_u64(s.get("absoluteExpiresAtMs")),
            expires_at_ms=_u64(s.get("expiresAtMs")),
            replayed=replayed,
        )


class Created(tuple):
    """The answer to a create: a ``(session, token)`` pair (``session, token = ...``) that
    also tells whether it was ``replayed``. Its repr leaves the token out."""

    def __new__(cls, session: Session, token: str, replayed: bool = False):
        self = super().__new__(cls, (session, token))
        self.replayed = replayed
        return self

    @property
    def session(self) -> Session:
        return self[0]

    @property
    def token(self) -> str:
        return self[1]

    def __repr__(self) -> str:
        return f"Created(session={self.session!r}, token=<redacted>, replayed={self.replayed})"

    __str__ = __repr__


@dataclass
class Rotated:
    """The answer to a rotation."""

    session: Session
    #: The token to hold from now on (the presented one when no rotation happened).
    token: str = field(repr=False)
    #: A new generation exists for the presented token (made by this call or a racing one).
    rotated: bool = False
    #: The rotation had been applied before: a retry or a racing call got the same successor.
    replayed: bool = False


@dataclass
class Revocation:
    """One event of the revocation feed."""

    index: int
    session_id: str
    user_id: str
    reason: str
    revoked_at_ms: int

    @classmethod
    def from_json(cls, e: dict) -> "Revocation":
        return cls(
            index=_u64(e.get("index")),
            session_id=e.get("sessionId", ""),
            user_id=e.get("userId", ""),
            reason=e.get("reason", ""),
            revoked_at_ms=_u64(e.get("revokedAtMs")),
        )


#: A session named by a token (a ``str``), by a ``Session`` (its id), or by the JSON
#: ``SessionRef`` itself (``{"token": ...}`` or ``{"id": ...}``).
Ref = Union[str, Session, Mapping[str, str]]


def session_ref(
    ref: Optional[Ref] = None, token: Optional[str] = None, session_id: Optional[str] = None
) -> dict:
    """The ``SessionRef`` JSON for exactly one of ``ref``, ``token`` or ``session_id``."""
    given = [x for x in (ref, token, session_id) if x is not None]
    if len(given) != 1:
        raise ValueError("name the session by exactly one of ref, token or session_id")
    if token is not None:
        return {"token": token}
    if session_id is not None:
        return {"id": session_id}
    if isinstance(ref, str):
        return {"token": ref}
    if isinstance(ref, Session):
        return {"id": ref.id}
    if isinstance(ref, Mapping) and len(ref) == 1 and set(ref) <= {"token", "id"}:
        return dict(ref)
    raise ValueError("a session ref is a token, a Session, or {'token': ...} / {'id': ...}")


def consistency_name(c: str) -> str:
    """``'stale'`` / ``'linearizable'`` (or the enum names) as the proto enum name."""
    names = {
        "stale": "CONSISTENCY_STALE",
        "linearizable": "CONSISTENCY_LINEARIZABLE",
        "CONSISTENCY_STALE": "CONSISTENCY_STALE",
        "CONSISTENCY_LINEARIZABLE": "CONSISTENCY_LINEARIZABLE",
    }
    if c not in names:
        raise ValueError("consistency is 'linearizable' or 'stale'")
    return names[c]


def parse_endpoints(value: str) -> List[str]:
    """``host:port,host:port`` (an ``https://`` prefix is allowed) as a list of host:port."""
    out = []
    for e in value.split(","):
        e = e.strip()
        for scheme in ("https://", "http://"):
            if e.startswith(scheme):
                e = e[len(scheme) :]
        e = e.rstrip("/")
        if not e:
            continue
        host, sep, port = e.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"endpoint {e!r} is not host:port")
        out.append(e)
    return out


# -- the client -----------------------------------------------------------------------------


class _Failed(Exception):
    """One attempt on one endpoint that another endpoint may answer."""

    def __init__(
        self,
        why: str,
        leader_id: Optional[int] = None,
        leader_addr: str = "",
        closed_after_handshake: bool = False,
    ):
        super().__init__(why)
        self.why = why
        self.leader_id = leader_id
        self.leader_addr = leader_addr
        #: A new connection closed by the node right after a TLS handshake, before any answer.
        self.closed_after_handshake = closed_after_handshake


#: What sending on a kept-alive connection that the node closed meanwhile raises.
_CLOSED_WHILE_IDLE = (
    http.client.RemoteDisconnected,
    http.client.ImproperConnectionState,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


def _fatal_tls(e: Exception) -> bool:
    """A handshake failure that another attempt cannot fix (as opposed to a connection that a
    restarting node dropped mid-handshake)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return True
    if isinstance(e, ssl.SSLError):
        reason = (getattr(e, "reason", None) or "").upper()
        return "ALERT" in reason and "CLOSE_NOTIFY" not in reason
    return False


class Client:
    """A client of the nodes at ``endpoints`` (their client ports, ``host:port``).

    ``ca_file`` is the cluster CA that must verify the nodes (None: the system's roots).
    Authenticate with a client certificate (``cert_file`` + ``key_file``) or a bearer secret.
    ``timeout`` bounds one attempt, ``deadline`` a whole call with its retries. Safe to share
    between threads (each thread keeps its own connections).
    """

    def __init__(
        self,
        endpoints: List[str],
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        bearer_token: Optional[str] = None,
        timeout: float = 3.0,
        deadline: float = 15.0,
        max_attempts: int = 30,
    ):
        if isinstance(endpoints, str):
            endpoints = parse_endpoints(endpoints)
        self._endpoints = parse_endpoints(",".join(endpoints))
        if not self._endpoints:
            raise ValueError("no endpoints")
        if bool(cert_file) != bool(key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")
        if cert_file and bearer_token:
            # The nodes refuse a call that presents both.
            raise ValueError("give a client certificate or a bearer token, not both")
        self._ctx = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            self._ctx.load_cert_chain(cert_file, key_file)
        self._ctx.set_alpn_protocols(["http/1.1"])
        self._bearer = bearer_token
        self._auth = "bearer" if bearer_token else ("certificate" if cert_file else "none")
        self._timeout = timeout
        self._deadline = deadline
        self._max_attempts = max(1, max_attempts)
        self._lock = threading.Lock()
        self._node_of: Dict[str, int] = {}  # endpoint -> node id (`sessiond-node` header)
        self._leader: Optional[int] = None
        self._down_until: Dict[str, float] = {}
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Client(endpoints={self._endpoints!r}, auth={self._auth!r})"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **kw) -> "Client":
        """A client configured like the Rust client's ``Client::from_env()``:
        SESSIOND_ENDPOINTS (``host:port,...``), SESSIOND_CA (the cluster CA; unset: the system
        roots), and SESSIOND_CERT + SESSIOND_KEY (client certificate) or SESSIOND_TOKEN_FILE
        (a file holding a bearer secret). Empty values count as unset."""
        env = os.environ if environ is None else environ

        def var(name: str) -> Optional[str]:
            v = env.get(name)
            return v if v else None

        endpoints = parse_endpoints(var(ENV_ENDPOINTS) or "")
        if not endpoints:
            raise ValueError(
                f"{ENV_ENDPOINTS} is not set or empty (the nodes' client addresses, host:port,host:port)"
            )
        cert, key = var(ENV_CERT), var(ENV_KEY)
        if bool(cert) != bool(key):
            raise ValueError(f"{ENV_CERT} and {ENV_KEY} go together (a client certificate and its key)")
        bearer = None
        if var(ENV_TOKEN_FILE):
            with open(var(ENV_TOKEN_FILE)) as f:
                bearer = f.read().strip()
            if not bearer:
                raise ValueError(f"{ENV_TOKEN_FILE} names an empty file")
        return cls(
            endpoints,
            ca_file=var(ENV_CA),
            cert_file=cert,
            key_file=key,
            bearer_token=bearer,
            **kw,
        )

    @property
    def endpoints(self) -> List[str]:
        return list(self._endpoints)

    # -- transport -------------------------------------------------------------------------

    def _headers(self) -> Dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._bearer:
            h["Authorization"] = f"Bearer {self._bearer}"
        return h

    def _new_connection(self, endpoint: str, timeout: Optional[float]) -> http.client.HTTPSConnection:
        host, _, port = endpoint.rpartition(":")
        return http.client.HTTPSConnection(host, int(port), context=self._ctx, timeout=timeout)

    def _connection(self, endpoint: str, timeout: float) -> Tuple[http.client.HTTPSConnection, bool]:
        """This thread's connection to ``endpoint`` and whether it was used before."""
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(endpoint)
        reused = conn is not None and conn.sock is not None
        if conn is None:
            conn = conns[endpoint] = self._new_connection(endpoint, timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def _drop(self, endpoint: str) -> None:
        conn = getattr(self._local, "conns", {}).pop(endpoint, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close this thread's connections (others close when their threads end)."""
        for endpoint in list(getattr(self._local, "conns", {})):
            self._drop(endpoint)

    def _order(self, prefer_leader: bool) -> List[str]:
        """Endpoints in the order to try them: the leader's first when known (if asked), the
        ones that failed lately last, otherwise as configured."""
        now = time.monotonic()
        with self._lock:
            leader = self._leader
            node_of = dict(self._node_of)
            down = dict(self._down_until)

        def key(e: str):
            is_leader = prefer_leader and leader is not None and node_of.get(e) == leader
            return (down.get(e, 0) > now, not is_leader)

        return sorted(self._endpoints, key=key)

    def _learn(self, endpoint: str, node: Optional[str], leader_id, leader_addr: str = "") -> None:
        with self._lock:
            if node and str(node).isdigit():
                self._node_of[endpoint] = int(node)
            if leader_id and str(leader_id).isdigit():
                self._leader = int(leader_id)
                # Endpoints may name the nodes differently from the addresses they advertise;
                # the address only tells which endpoint is the leader until its id is known.
                if leader_addr in self._endpoints and leader_addr not in self._node_of:
                    self._node_of[leader_addr] = int(leader_id)

    def _mark_down(self, endpoint: str) -> None:
        with self._lock:
            self._down_until[endpoint] = time.monotonic() + 2.0

    def _attempt(self, endpoint: str, route: str, body: bytes, timeout: float) -> Tuple[int, bytes]:
        """One POST to one endpoint: its status and body, or _Failed / a fatal error."""
        for fresh_try in (False, True):
            conn, reused = self._connection(endpoint, timeout)
            handshake_done = False
            try:
                if conn.sock is None:
                    conn.connect()  # TCP and the TLS handshake
                handshake_done = True
                conn.request("POST", route, body=body, headers=self._headers())
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self._drop(endpoint)
                if _fatal_tls(e):
                    why = getattr(e, "reason", None) or e
                    raise TlsError(f"TLS with {endpoint} failed: {type(e).__name__}: {why}") from None
                stale_keepalive = isinstance(e, _CLOSED_WHILE_IDLE)
                if reused and stale_keepalive and not fresh_try:
                    continue  # the node closed an idle connection: once more on a new one
                raise _Failed(
                    f"{endpoint}: {type(e).__name__}",
                    closed_after_handshake=handshake_done and not reused and isinstance(e, _CLOSED_WHILE_IDLE),
                ) from None
            if resp.will_close:
                self._drop(endpoint)
            self._learn(
                endpoint,
                resp.getheader("sessiond-node"),
                resp.getheader("sessiond-leader-id"),
                resp.getheader("sessiond-leader") or "",
            )
            return resp.status, data
        raise AssertionError("unreachable")

    def _call(self, route: str, message: dict, prefer_leader: bool = True) -> dict:
        """POST ``message`` to ``route`` on the first node that can answer; retries other
        nodes (the same body, so the same request id) until ``deadline``."""
        body = json.dumps(message, separators=(",", ":")).encode()
        if len(body) > MAX_BODY_BYTES:
            raise ResourceExhausted(
                f"the request is {len(body)} bytes of JSON; a node reads at most {MAX_BODY_BYTES}"
            )
        start = time.monotonic()
        deadline = start + self._deadline
        last = "no attempt"
        backoff = 0.05
        tried: List[str] = []  # this round's endpoints: every endpoint once before any twice
        attempts = 0
        # Under TLS 1.3 a node that refuses the client certificate does so after the client
        # has finished its handshake, and mostly just closes the connection: that, on every
        # node twice in a row, is a refused certificate rather than an outage.
        closed_after_handshake = 0
        while attempts < self._max_attempts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            order = [e for e in self._order(prefer_leader) if e not in tried]
            if not order:
                # Every node failed once: wait a little before the next round.
                tried = []
                pause = min(backoff * (0.5 + random.random()), remaining)
                time.sleep(pause)
                backoff = min(backoff * 2, 1.0)
                continue
            endpoint = order[0]
            tried.append(endpoint)
            attempts += 1
            try:
                status, data = self._attempt(endpoint, route, body, min(self._timeout, remaining))
                if 200 <= status < 300:
                    return json.loads(data) if data.strip() else {}
                err = error_from_answer(status, data)
                if err.code in _RETRY_CODES or (status in _RETRY_STATUS and type(err) is SessiondError):
                    raise _Failed(
                        f"{endpoint}: {err.code} {err.message}",
                        err.detail.get("leaderId"),
                        err.detail.get("leaderAddr", ""),
                    )
                raise err
            except _Failed as f:
                last = f.why
                closed_after_handshake = closed_after_handshake + 1 if f.closed_after_handshake else 0
                if self._auth == "certificate" and closed_after_handshake >= 2 * len(self._endpoints):
                    raise TlsError(
                        f"every node closed the connection right after the TLS handshake "
                        f"({closed_after_handshake} times): is the client certificate one of "
                        f"the cluster CA's, and valid?"
                    ) from None
                if f.leader_id:
                    # A follower that names the leader: ask the leader next.
                    self._learn(endpoint, None, f.leader_id, f.leader_addr)
                else:
                    # Unreachable, or no leader it knows of: skip it for a while.
                    self._mark_down(endpoint)
        raise Unavailable(
            _scrub(
                f"no node answered in {time.monotonic() - start:.1f}s ({attempts} attempts); last: {last}"
            )
        )

    # -- the API -------------------------------------------------------------------------

    def create_session(
        self,
        user_id: str,
        data: bytes = b"",
        attributes: Optional[Dict[str, str]] = None,
        idle_timeout_ms: int = 0,
        absolute_timeout_ms: int = 0,
        rid: Optional[str] = None,
    ) -> Created:
        """A new session and its token (for the cookie): ``session, token = ...``. Timeouts of
        0 take the cluster's defaults."""
        msg: dict = {"userId": user_id, "requestId": rid or request_id()}
        if data:
            msg["data"] = _b64(data)
        if attributes:
            msg["attributes"] = dict(attributes)
        if idle_timeout_ms:
            msg["idleTimeoutMs"] = str(idle_timeout_ms)
        if absolute_timeout_ms:
            msg["absoluteTimeoutMs"] = str(absolute_timeout_ms)
        r = self._call("/v1/sessions/create", msg)
        replayed = bool(r.get("replayed", False))
        return Created(Session.from_json(r.get("session"), replayed), r.get("token", ""), replayed)

    def get_session(
        self, token: str, consistency: str = "linearizable", touch: bool = False
    ) -> Tuple[Session, bool]:
        """Validate a token: the session, and whether the token is *superseded* (another holder
        rotated it; it works for the grace window: move to the successor with
        ``rotate_or_current``). ``'stale'`` is served by the node reached (list the nearest
        first); ``touch`` slides the idle deadline (a write only when one is due)."""
        msg: dict = {"token": token, "consistency": consistency_name(consistency)}
        if touch:
            msg["touch"] = True
        r = self._call(
            "/v1/sessions/get", msg, prefer_leader=consistency_name(consistency) != "CONSISTENCY_STALE"
        )
        return Session.from_json(r.get("session")), bool(r.get("superseded", False))

    def rotate_token(self, token: str, rid: Optional[str] = None) -> Rotated:
        """Rotate: the token to hold from now on. Rotating a superseded token returns the
        successor its first rotation made; inside the rotation interval the current token
        comes back unchanged (``rotated`` false)."""
        r = self._call("/v1/sessions/rotate", {"token": token, "requestId": rid or request_id()})
        replayed = bool(r.get("replayed", False))
        return Rotated(
            Session.from_json(r.get("session"), replayed),
            r.get("token", ""),
            bool(r.get("rotated", False)),
            replayed,
        )

    def rotate_or_current(self, token: str) -> str:
        """The token to hold from now on, whether this call, a racing one or an earlier one
        rotated: what a request presenting a superseded token switches its cookie to."""
        return self.rotate_token(token).token

    def update_session(
        self,
        ref: Optional[Ref] = None,
        data: Optional[bytes] = None,
        attributes: Optional[Dict[str, str]] = None,
        expected_version: int = 0,
        *,
        token: Optional[str] = None,
        session_id: Optional[str] = None,
        rid: Optional[str] = None,
    ) -> Session:
        """Compare-and-set write: applied only if the session is at ``expected_version`` (0:
        unconditionally), else ``VersionConflict`` with the current version. Given ``data``
        replaces the data, given ``attributes`` replace all attributes; None keeps them."""
        msg: dict = {
            "session": session_ref(ref, token, session_id),
            "requestId": rid or request_id(),
        }
        if expected_version:
            msg["expectedVersion"] = str(expected_version)
        if data is not None:
            msg["data"] = _b64(data)
        if attributes is not None:
            msg["attributes"] = {"entries": dict(attributes)}
        r = self._call("/v1/sessions/update", msg)
        return Session.from_json(r.get("session"), bool(r.get("replayed", False)))

    def touch_session(self, token: str) -> Tuple[Session, bool]:
        """Slide the idle deadline (``get_session`` with ``touch``, through the leader)."""
        r = self._call("/v1/sessions/touch", {"token": token})
        return Session.from_json(r.get("session")), bool(r.get("superseded", False))

    def revoke_session(
        self,
        ref: Optional[Ref] = None,
        reason: str = "",
        *,
        token: Optional[str] = None,
        session_id: Optional[str] = None,
        rid: Optional[str] = None,
    ) -> bool:
        """Log out (final: nothing can write the session again). True when it was already
        revoked. Revoking by a rotated-away token is reuse: ``TokenReused``."""
        msg: dict = {"session": session_ref(ref, token, session_id), "requestId": rid or request_id()}
        if reason:
            msg["reason"] = reason
        r = self._call("/v1/sessions/revoke", msg)
        return bool(r.get("alreadyRevoked", False))

    def revoke_user_sessions(
        self, user_id: str, except_id: str = "", reason: str = "", rid: Optional[str] = None
    ) -> List[str]:
        """Log the user out everywhere but ``except_id``: the ids revoked."""
        msg: dict = {"userId": user_id, "requestId": rid or request_id()}
        if except_id:
            msg["exceptId"] = except_id
        if reason:
            msg["reason"] = reason
        r = self._call("/v1/users/revoke", msg)
        return list(r.get("revokedIds", []))

    def list_user_sessions_page(
        self,
        user_id: str,
        consistency: str = "linearizable",
        page_size: int = 0,
        page_token: str = "",
    ) -> Tuple[List[Session], str]:
        """One page of the user's live sessions (oldest first) and the next page's token
        (empty on the last page)."""
        msg: dict = {"userId": user_id, "consistency": consistency_name(consistency)}
        if page_size:
            msg["pageSize"] = page_size
        if page_token:
            msg["pageToken"] = page_token
        r = self._call(
            "/v1/users/list", msg, prefer_leader=consistency_name(consistency) != "CONSISTENCY_STALE"
        )
        return [Session.from_json(s) for s in r.get("sessions", [])], r.get("nextPageToken", "")

    def list_user_sessions(
        self, user_id: str, consistency: str = "linearizable", page_size: int = 0
    ) -> Iterator[Session]:
        """Every live session of the user, oldest first, fetched page by page as iterated (each
        page is its own read, not one snapshot)."""
        page = ""
        while True:
            sessions, page = self.list_user_sessions_page(user_id, consistency, page_size, page)
            yield from sessions
            if not page:
                return

    def watch_revocations(
        self, from_index: int = 0, timeout: Optional[float] = None, resume: bool = True
    ) -> Iterator[Revocation]:
        """Revocations as a node applies them (needs the ``watch`` role), until the caller
        stops iterating. ``from_index`` 0 starts with the next one; a reader that comes back
        later passes the last ``index`` it saw + 1. ``timeout`` (None: for ever) is how long to
        wait for the next event before ``TimeoutError``. When the feed breaks (the node stops,
        its storage fails) it is resumed on another node after the last event seen (with
        ``resume``; else ``Unavailable`` is raised), within the client's deadline."""
        next_index = from_index
        last = "no attempt"
        backoff = 0.05
        deadline: Optional[float] = None
        while True:
            for endpoint in self._order(prefer_leader=False):
                body = json.dumps({"fromIndex": str(next_index)}).encode()
                conn = self._new_connection(endpoint, self._timeout)
                try:
                    try:
                        conn.request("POST", "/v1/revocations/watch", body=body, headers=self._headers())
                        resp = conn.getresponse()
                    except (OSError, http.client.HTTPException) as e:
                        if _fatal_tls(e):
                            raise TlsError(f"TLS with {endpoint} failed: {type(e).__name__}") from None
                        last = f"{endpoint}: {type(e).__name__}"
                        self._mark_down(endpoint)
                        continue
                    if resp.status != 200:
                        err = error_from_answer(resp.status, resp.read())
                        if err.code in _RETRY_CODES or (
                            resp.status in _RETRY_STATUS and type(err) is SessiondError
                        ):
                            last = f"{endpoint}: {err.code}"
                            self._mark_down(endpoint)
                            continue
                        raise err
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                    try:
                        for event in _ndjson(resp.readline):
                            deadline = None
                            next_index = event.index + 1
                            yield event
                        last = f"{endpoint}: the feed ended"
                    except socket.timeout:
                        raise TimeoutError(f"no revocation within {timeout}s") from None
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        last = f"{endpoint}: the feed broke ({type(e).__name__})"
                    except SessiondError as e:
                        if e.code not in _RETRY_CODES:
                            raise
                        last = f"{endpoint}: the feed failed ({e.code})"
                    if not resume:
                        raise Unavailable(last)
                    self._mark_down(endpoint)
                finally:
                    conn.close()
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._deadline
            if now >= deadline:
                raise Unavailable(f"no node served the revocation feed; last: {last}")
            time.sleep(min(backoff * (0.5 + random.random()), max(0.0, deadline - now)))
            backoff = min(backoff * 2, 1.0)


def _ndjson(readline) -> Iterator[Revocation]:
    """The events of an NDJSON feed read by ``readline``; a ``{"error": ErrorDetail}`` line is
    raised as its exception."""
    while True:
        line = readline()
        if not line:
            return
        if not line.strip():
            continue
        event = json.loads(line)
        if "error" in event:
            raise error_from_answer(0, json.dumps(event["error"]).encode())
        yield Revocation.from_json(event)


def parse_ndjson(lines: Iterable[bytes]) -> Iterator[Revocation]:
    """The events of NDJSON ``lines``, read as ``watch_revocations`` reads the feed."""
    return _ndjson(functools.partial(next, iter(lines), b""))
