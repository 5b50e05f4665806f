"""A tiny HTTP client for the web tests: JSON in, (status, headers, body) out, loopback only."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from waitress.server import create_server

from tests.helpers import HOST


class Web:
    """Requests to one hub web server, optionally with a bearer token."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port, self.token = port, token

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        """Send one request; a JSON answer comes back parsed, anything else as text."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=15)
        headers = {}
        tok = token if token is not None else self.token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            text = res.read().decode("utf-8")
            hdrs = {k.lower(): v for k, v in res.getheaders()}
        finally:
            conn.close()
        payload: Any = json.loads(text) if hdrs.get("content-type", "").startswith("application/json") else text
        return res.status, hdrs, payload

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        """GET: (status, body)."""
        status, _, body = self.request("GET", path, **kw)
        return status, body

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """POST JSON: (status, body)."""
        status, _, payload = self.request("POST", path, body, **kw)
        return status, payload


@contextmanager
def serve(app: Any) -> Iterator[int]:
    """Serve a WSGI app on a free loopback port for the duration of a test; yields the port."""
    server = create_server(app, host=HOST, port=0, threads=4)
    closing = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:
            # close() pulls the sockets from under the loop's select(): EBADF is how that ends
            if not closing.is_set():
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        closing.set()
        server.close()
        thread.join(timeout=5)
