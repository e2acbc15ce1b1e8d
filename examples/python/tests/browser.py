"""A browser for the middleware tests: urllib with a cookie jar (several tabs share one)."""

import http.cookiejar
import urllib.error
import urllib.request


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
