"""Bottle app factory: the dashboard page and the JSON API, reading through the Hub object."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bottle

from actors.errors import BadRequest, StoreFull
from actors.hub import Hub
from actors.tokens import Tokens

HERE = Path(__file__).resolve().parent
MAX_BODY = 1024 * 1024  # bytes; larger pushes get 413
MAX_POINTS = 10_000
log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with a JSON body: status code and a message saying what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json_body(max_bytes: int = MAX_BODY) -> Any:
    """The request body as JSON, size-limited and strict (no NaN/Infinity); ApiError otherwise."""
    length = bottle.request.content_length
    if length > max_bytes:
        raise ApiError(413, f"body of {length} bytes exceeds the {max_bytes}-byte limit")
    raw = bottle.request.body.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"body exceeds the {max_bytes}-byte limit")
    if not raw:
        raise ApiError(400, "empty body; expected JSON")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"body is not UTF-8: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


def bearer_token() -> str | None:
    """The token from `Authorization: Bearer ...`, or None."""
    header = bottle.request.get_header("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _float_param(name: str, default: float) -> float:
    raw = bottle.request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be a number (epoch seconds), got {raw!r}") from None
    if not math.isfinite(value):
        raise ApiError(400, f"query parameter {name!r} must be finite")
    return value


def create_app(hub: Hub, tokens: Tokens, node: str = "hub", clock: Callable[[], float] = time.time) -> bottle.Bottle:
    """Build the hub's web app around its in-process Hub."""
    app = bottle.Bottle()
    app.config["harvester.hub"] = hub

    def as_json(body: Any, status: int = 200) -> str:
        bottle.response.status = status
        bottle.response.content_type = "application/json"
        bottle.response.set_header("Cache-Control", "no-store")
        return json.dumps(body, allow_nan=False, ensure_ascii=False)

    def api(fn: Callable[..., Any]) -> Callable[..., str]:
        """Turn ApiError (and BadRequest from the hub) into a JSON error response."""
        def wrapper(*args: Any, **kwargs: Any) -> str:
            try:
                return as_json(fn(*args, **kwargs))
            except ApiError as exc:
                if exc.status == 401:
                    bottle.response.set_header("WWW-Authenticate", 'Bearer realm="harvester"')
                return as_json({"error": exc.message}, exc.status)
            except BadRequest as exc:
                return as_json({"error": str(exc)}, 400)
        wrapper.__name__ = fn.__name__
        return wrapper

    @app.post("/push")
    @api
    def push() -> dict[str, Any]:
        token = bearer_token()
        if token is None:
            raise ApiError(401, "missing 'Authorization: Bearer <node token>' header")
        sender = tokens.node_for(token)
        if sender is None:
            raise ApiError(403, "unknown node token")
        body = read_json_body()
        batches = body if isinstance(body, list) else [body]
        for b in batches:
            if isinstance(b, dict) and b.get("node") != sender:
                raise ApiError(403, f"this token belongs to node {sender!r}, not {b.get('node')!r}")
        sent_at = bottle.request.get_header("X-Sent-At")
        try:
            sent = float(sent_at) if sent_at else None
        except ValueError:
            raise ApiError(400, f"X-Sent-At must be epoch seconds, got {sent_at!r}") from None
        try:
            answer = hub.push(batches, sent_at=sent)
        except StoreFull as exc:
            bottle.response.set_header("Retry-After", "60")
            raise ApiError(507, str(exc)) from None
        return {"acked": answer["acked"], "duplicates": answer["duplicates"]}

    @app.get("/api/readings")
    @api
    def readings() -> dict[str, Any]:
        return hub.snapshot()

    @app.get("/api/nodes")
    @api
    def nodes() -> list[dict[str, Any]]:
        return [{k: v for k, v in n.items() if k != "sensors"} for n in hub.snapshot()["nodes"]]

    @app.get("/api/history")
    @api
    def history() -> dict[str, Any]:
        q = bottle.request.query
        node_, sensor, quantity = q.get("node"), q.get("sensor"), q.get("quantity")
        if not node_ or not sensor or not quantity:
            raise ApiError(400, "node, sensor and quantity are required query parameters")
        now = clock()
        until = _float_param("until", now)
        since = _float_param("since", until - 3600)
        if since >= until:
            raise ApiError(400, f"since ({since}) must be before until ({until})")
        step = q.get("step") or "auto"
        if step == "auto":
            span = until - since
            step = "raw" if span <= 2 * 3600 else "1m" if span <= 2 * 86400 else "1h"
        if step not in ("raw", "1m", "1h"):
            raise ApiError(400, f"step must be raw, 1m, 1h or auto, got {step!r}")
        if not hub.has_series(node_, sensor, quantity):
            raise ApiError(404, f"no series {node_}/{sensor}/{quantity}")
        points = hub.store.history(node_, sensor, quantity, since, until, step, MAX_POINTS)
        columns = ["ts", "value"] if step == "raw" else ["ts", "min", "mean", "max"]
        return {"node": node_, "sensor": sensor, "quantity": quantity, "step": step, "since": since,
                "until": until, "columns": columns, "points": points, "truncated": len(points) >= MAX_POINTS}

    @app.get("/healthz")
    @api
    def healthz() -> dict[str, Any]:
        return {"ok": True, "node": node, "nodes": len(hub.node_names())}

    @app.get("/")
    def index() -> Any:
        return bottle.static_file("index.html", root=str(HERE / "static"))

    @app.get("/static/<path:path>")
    def static(path: str) -> Any:
        return bottle.static_file(path, root=str(HERE / "static"))

    def error_json(err: bottle.HTTPError) -> str:
        bottle.response.content_type = "application/json"
        if err.status_code >= 500 and err.exception is not None:
            log.error("unhandled error in %s %s: %r", bottle.request.method, bottle.request.path, err.exception)
        return json.dumps({"error": err.status_line})

    for code in (400, 401, 403, 404, 405, 413, 500):
        app.error(code)(error_json)
    return app
