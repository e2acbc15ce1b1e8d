"""An HTTPS endpoint that stands in for a node: it records every request and answers as a test
scripts it — an error, a dropped connection, or the answer of a real node it forwards to (and
then perhaps throws away, like a network that loses answers)."""

import http.client
import http.server
import json
import ssl
import threading
from typing import Callable, List, Optional, Tuple

#: What a script returns: (status, headers, body) to answer (body a list of chunks: a stream
#: ended by closing the connection), (status, headers, body, "close") to answer and then close
#: the kept-alive connection silently, or DROP to close the connection without an answer.
DROP = None


class Recorded:
    def __init__(self, path: str, headers, body: bytes):
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}


class FakeNode:
    def __init__(self, cert: str, key: str, script: Callable[["FakeNode", Recorded], Optional[Tuple]]):
        self.requests: List[Recorded] = []
        self.script = script
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                rec = Recorded(self.path, self.headers, self.rfile.read(n))
                node.requests.append(rec)
                answer = node.script(node, rec)
                if answer is DROP:
                    self.close_connection = True
                    return
                status, headers, body = answer[:3]
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if isinstance(body, (list, tuple)):
                    # A stream: no length, it ends when the connection closes.
                    self.end_headers()
                    for chunk in body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if len(answer) > 3 and answer[3] == "close":
                    # Close a kept-alive connection without saying so (an idle timeout).
                    self.close_connection = True

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.endpoint = f"127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def answer(status: int, body, headers=()) -> Tuple:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return status, [("Content-Type", "application/json"), *headers], data


def forward(endpoint: str, ctx: ssl.SSLContext, rec: Recorded) -> Tuple[int, list, bytes]:
    """Send the recorded request to a real node; its answer."""
    host, _, port = endpoint.rpartition(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.request("POST", rec.path, body=rec.body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, [("Content-Type", "application/json")], r.read()
    finally:
        conn.close()
