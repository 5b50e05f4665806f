"""The web app in-process, for the dashboard panel tests (test_web_cluster, test_web_export, test_web_notify).

A real Hub over a real Store behind the real app, a WSGI client that calls it without a server,
and readers of /metrics and /api/dashboard: the panels' tests set up the same app the same way,
so that setup lives here once."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from actors.hub.state import Hub
from actors.hub.store import Store
from actors.hub.tokens import Tokens
from web.app import create_app

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


class Client:
    """Calls the WSGI app in-process: (status, headers, text)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, path: str) -> tuple[int, dict[str, str], str]:
        environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        started: list[tuple[str, list]] = []
        body = b"".join(self.app(environ, lambda status, headers, exc_info=None: started.append((status, headers))))
        status, headers = started[0]
        return int(status.split()[0]), {k.lower(): v for k, v in headers}, body.decode()

    def post(self, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, str], str]:
        """POST `body` as JSON (or `raw` bytes as they are; neither: no body), with the bearer `token` if given."""
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        return self.call("POST", path, data, token)

    def call(self, method: str, path: str, data: bytes = b"", token: str | None = None) -> tuple[int, dict[str, str], str]:
        """Any request: `data` as the body (JSON), with the bearer `token` if given."""
        environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(data),
                                   "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": "application/json"}
        if token is not None:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        setup_testing_defaults(environ)
        started: list[tuple[str, list]] = []
        out = b"".join(self.app(environ, lambda status, headers, exc_info=None: started.append((status, headers))))
        status, headers = started[0]
        return int(status.split()[0]), {k.lower(): v for k, v in headers}, out.decode()

    def operator_token(self) -> str:
        """The app's operator token (from its token file)."""
        return self.app.config["harvester.context"].auth.tokens.data()["operator"]


@contextmanager
def serving(hub: Hub, tmp_path: Path, **options: Any) -> Iterator[Client]:
    """A client of the app on `hub` (create_app's keyword options); its live dashboard closed afterwards."""
    app = create_app(hub, Tokens(tmp_path / "tokens.json"), **options)
    try:
        yield Client(app)
    finally:
        app.config["harvester.context"].dashboard.live.close()


def app_fixtures(node: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The `hub` and `client` fixtures of a test module: `hub, client = app_fixtures("hub1")`."""

    @pytest.fixture
    def hub(tmp_path: Path) -> Iterator[Hub]:
        h = Hub(Store(tmp_path / "hub.sqlite3"))
        yield h
        h.store.close()

    @pytest.fixture
    def client(hub: Hub, tmp_path: Path) -> Iterator[Client]:
        with serving(hub, tmp_path, node=node) as c:
            yield c

    return hub, client


def metrics(client: Client) -> tuple[str, dict[tuple[str, str], str]]:
    """The exposition and its samples by (name, labels text); every sample's family has HELP and TYPE first."""
    status, headers, text = client.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples, declared = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif line.startswith("# HELP "):
            assert line.split()[2] not in declared, line  # HELP comes before TYPE
        else:
            m = SAMPLE.match(line)
            assert m and m.group(1) in declared, line
            samples[(m.group(1), m.group(2) or "")] = m.group(3)
    return text, samples


def dashboard(client: Client) -> dict[str, Any]:
    """GET /api/dashboard, parsed."""
    status, _, text = client.get("/api/dashboard")
    assert status == 200
    return json.loads(text)
