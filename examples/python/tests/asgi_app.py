"""The ASGI side of the middleware tests: a Starlette app with async handlers behind
``asgi_sessions``, served by uvicorn in a thread on a free loopback port."""

import asyncio
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_sessions import SCOPE_KEY, SessionMiddleware

#: Requests of the `wait` parameter meet here after reading their session, before saving it,
#: so that both are sure to have read the same version (one event loop serves them all).
meetings = {}


def session(request: Request):
    return request.scope[SCOPE_KEY]


async def login(request: Request):
    await session(request).login(request.query_params["user"])
    return PlainTextResponse("welcome")


async def logout(request: Request):
    await session(request).logout()
    return PlainTextResponse("bye")


async def everywhere(request: Request):
    await session(request).logout_everywhere()
    return PlainTextResponse("bye everywhere")


def logged_in(handler):
    async def guarded(request: Request):
        if session(request).user_id is None:
            return PlainTextResponse("log in first", status_code=401)
        return await handler(request, session(request))

    return guarded


@logged_in
async def count(request, s):
    s.data["n"] = s.data.get("n", 0) + 1
    return PlainTextResponse(str(s.data["n"]))


@logged_in
async def set_key(request, s):
    q = request.query_params
    s.data[q["k"]] = q["v"]
    if "wait" in q:
        meeting = meetings[q["wait"]]
        meeting["arrived"] += 1
        if meeting["arrived"] == 2:
            meeting["event"].set()
        await asyncio.wait_for(meeting["event"].wait(), 10)
    return PlainTextResponse("ok")


@logged_in
async def rotate(request, s):
    s.data["rotated"] = True
    await s.rotate()
    return PlainTextResponse("rotated")


@logged_in
async def renew(request, s):
    s.data["renewed"] = True
    await s.renew()
    return PlainTextResponse("renewed")


@logged_in
async def me_route(request, s):
    return JSONResponse({"user": s.user_id, "data": s.data})


ROUTES = [
    Route("/login", login),
    Route("/logout", logout),
    Route("/everywhere", everywhere),
    Route("/count", count),
    Route("/set", set_key),
    Route("/rotate", rotate),
    Route("/renew", renew),
    Route("/me", me_route),
]


class Served:
    """uvicorn serving ``app`` on a free loopback port, in a thread, until ``stop``."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def starlette_app(client):
    return Starlette(routes=ROUTES, middleware=[Middleware(SessionMiddleware, client=client, secure=False)])


def serve(client):
    """The app behind the middleware with ``client``: its URL and a function that stops it."""
    served = Served(starlette_app(client))
    return served.url, served.stop


def meet(name):
    """Two requests with ``wait=name`` will wait for each other before saving (asyncio.Event
    binds to the loop that first waits on it: the server's)."""
    meetings[name] = {"arrived": 0, "event": asyncio.Event()}
