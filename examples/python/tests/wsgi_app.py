"""The WSGI side of the middleware tests: an app behind ``wsgi_sessions`` on a threading
``wsgiref`` server, in a thread, on a free loopback port."""

import json
import threading
import urllib.parse
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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


def _serve(wsgi_app):
    httpd = make_server("127.0.0.1", 0, wsgi_app, server_class=ThreadingServer, handler_class=Quiet)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}"


def serve(client):
    """The app behind the middleware with ``client``: its URL and a function that stops it."""
    httpd, url = _serve(SessionMiddleware(app, client, secure=False))

    def stop():
        httpd.shutdown()
        httpd.server_close()

    return url, stop


def meet(name):
    """Two requests with ``wait=name`` will wait for each other before saving."""
    meeting[name] = threading.Barrier(2)
