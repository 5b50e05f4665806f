"""The app refuses a body on its declared Content-Length without reading any of it (under any
WSGI server; under waitress, web.server's cap refuses it even earlier)."""

from __future__ import annotations

import io
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

from actors.hub.state import Hub
from actors.hub.store import Store
from actors.hub.tokens import Tokens
from web.app import create_app
from web.http import MAX_BODY


class Untouchable(io.RawIOBase):
    """A wsgi.input that fails the test when read."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")

    readline = read


def call(app: Any, environ: dict[str, Any]) -> tuple[str, dict]:
    setup_testing_defaults(environ)
    started: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: started.append(status)))
    return started[0], json.loads(body)


def test_app_refuses_a_declared_length_over_the_limit_before_reading(tmp_path):
    hub = Hub(Store(tmp_path / "hub.sqlite3"))
    tokens = Tokens(tmp_path / "tokens.json")
    token = tokens.ensure_node("probe")
    app = create_app(hub, tokens)
    status, body = call(app, {"REQUEST_METHOD": "POST", "PATH_INFO": "/push", "CONTENT_LENGTH": "314572800",
                              "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {token}",
                              "wsgi.input": Untouchable()})
    assert status.startswith("413") and body == {
        "error": f"body of 314572800 bytes exceeds the {MAX_BODY}-byte limit; send at most {MAX_BODY} bytes"}
    assert hub.rejected == 1 and hub.node_names() == []
    hub.store.close()
