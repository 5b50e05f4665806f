"""Bottle app factory: the dashboard page and the JSON API, reading through the Hub object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bottle

from actors.hub import Hub

HERE = Path(__file__).resolve().parent


def create_app(hub: Hub, node: str = "hub") -> bottle.Bottle:
    """Build the hub's web app around its in-process Hub."""
    app = bottle.Bottle()
    app.config["harvester.hub"] = hub

    def as_json(body: Any, status: int = 200) -> str:
        bottle.response.status = status
        bottle.response.content_type = "application/json"
        bottle.response.set_header("Cache-Control", "no-store")
        return json.dumps(body, allow_nan=False)

    @app.get("/api/readings")
    def readings() -> str:
        return as_json(hub.snapshot())

    @app.get("/api/nodes")
    def nodes() -> str:
        return as_json([{k: v for k, v in n.items() if k != "sensors"} for n in hub.snapshot()["nodes"]])

    @app.get("/healthz")
    def healthz() -> str:
        return as_json({"ok": True, "node": node, "nodes": len(hub.node_names())})

    @app.get("/")
    def index() -> Any:
        return bottle.static_file("index.html", root=str(HERE / "static"))

    @app.get("/static/<path:path>")
    def static(path: str) -> Any:
        return bottle.static_file(path, root=str(HERE / "static"))

    def error_json(err: bottle.HTTPError) -> str:
        bottle.response.content_type = "application/json"
        return json.dumps({"error": err.status_line, "message": err.body if isinstance(err.body, str) else ""})

    for code in (400, 401, 403, 404, 405, 413, 500):
        app.error(code)(error_json)
    return app
