"""Bottle app factory: wires the hub, the token checks and the fleet client into the route modules.

Routes by file: push.py (/push), api.py (GET /api/..., /healthz), control.py (operator
commands), metrics.py (/metrics), pages.py (the dashboard, its fragments, /static)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import bottle

from actors.client import Fleet
from actors.hub.state import Hub
from actors.hub.tokens import Tokens
from web import api, control, metrics, pages, push
from web.auth import Auth
from web.context import WebContext
from web.dashboard import Dashboard
from web.upstream import Upstream

log = logging.getLogger(__name__)


def create_app(hub: Hub, tokens: Tokens, node: str = "hub", clock: Callable[[], float] = time.time,
               fleet: Fleet | None = None, public_read: bool = True,
               local_actors: frozenset[str] = frozenset(), upstream: Upstream | None = None) -> bottle.Bottle:
    """Build the hub's web app around its in-process Hub; `fleet` reaches the spokes' actors for control."""
    app = bottle.Bottle()
    upstream = upstream or Upstream(fleet)
    ctx = WebContext(hub=hub, auth=Auth(tokens, public_read), upstream=upstream,
                     dashboard=Dashboard(hub, upstream, node, local_actors, clock), node=node, clock=clock)
    app.config["harvester.hub"] = hub
    app.config["harvester.context"] = ctx
    for module in (push, api, control, metrics, pages):
        module.install(app, ctx)

    @app.hook("after_request")
    def security_headers() -> None:
        bottle.response.set_header("X-Content-Type-Options", "nosniff")
        bottle.response.set_header("Referrer-Policy", "no-referrer")
        bottle.response.set_header("X-Frame-Options", "DENY")

    def error_json(err: bottle.HTTPError) -> str:
        bottle.response.content_type = "application/json"
        if err.status_code >= 500 and err.exception is not None:
            log.error("unhandled error in %s %s: %r", bottle.request.method, bottle.request.path, err.exception)
        return json.dumps({"error": err.status_line if err.status_code != 404 else
                           f"no such page or endpoint: {bottle.request.method} {bottle.request.path}"})

    for code in (400, 401, 403, 404, 405, 413, 500):
        app.error(code)(error_json)
    return app
