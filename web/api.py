"""The read-only JSON API: readings, nodes, history, alerts, actuator states, health, who am I."""

from __future__ import annotations

import re
from typing import Any

import bottle

from web.context import WebContext
from web.http import ApiError, RawJson, api, float_param

MAX_POINTS = 10_000
MAX_ALERTS = 1000


def require_series(ctx: WebContext, node: str, sensor: str | None = None, quantity: str | None = None) -> None:
    """404 naming the first unknown part of node/sensor/quantity."""
    if not ctx.hub.has_series(node):
        raise ApiError(404, f"unknown node {node!r}; known: {', '.join(ctx.hub.node_names()) or 'none'}")
    if sensor is not None and not ctx.hub.has_series(node, sensor):
        raise ApiError(404, f"node {node!r} has no sensor {sensor!r}")
    if quantity is not None and not ctx.hub.has_series(node, sensor, quantity):
        raise ApiError(404, f"sensor {node}/{sensor} has no quantity {quantity!r}")


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add the read routes to the app."""
    hub, auth = ctx.hub, ctx.auth

    @app.get("/api/readings")
    @api
    def readings() -> RawJson:
        auth.require_reader()
        return RawJson(hub.snapshot_json())

    @app.get("/api/nodes")
    @api
    def nodes() -> list[dict[str, Any]]:
        auth.require_reader()
        return [{k: v for k, v in n.items() if k != "sensors"} for n in hub.snapshot()["nodes"]]

    @app.get("/api/history")
    @api
    def history() -> dict[str, Any]:
        auth.require_reader()
        q = bottle.request.query
        node, sensor, quantity = q.get("node"), q.get("sensor"), q.get("quantity")
        if not node or not sensor or not quantity:
            raise ApiError(400, "node, sensor and quantity are required query parameters")
        now = ctx.clock()
        until = float_param("until", now)
        since = float_param("since", until - 3600)
        if since >= until:
            raise ApiError(400, f"since ({since}) must be before until ({until})")
        step = q.get("step") or "auto"
        if step == "auto":
            span = until - since
            step = "raw" if span <= 2 * 3600 else "1m" if span <= 2 * 86400 else "1h"
        if step not in ("raw", "1m", "1h"):
            raise ApiError(400, f"step must be raw, 1m, 1h or auto, got {step!r}")
        require_series(ctx, node, sensor, quantity)
        points = hub.history(node, sensor, quantity, since, until, step, MAX_POINTS)
        columns = ["ts", "value"] if step == "raw" else ["ts", "min", "mean", "max"]
        return {"node": node, "sensor": sensor, "quantity": quantity, "step": step, "since": since,
                "until": until, "columns": columns, "points": points, "truncated": len(points) >= MAX_POINTS}

    @app.get("/api/alerts")
    @api
    def alerts() -> dict[str, Any]:
        auth.require_reader()
        state = bottle.request.query.get("state") or "active"
        if state not in ("active", "all"):
            raise ApiError(400, f"state must be active or all, got {state!r}")
        return {"ts": ctx.clock(), "alerts": hub.alerts(active_only=state == "active", limit=MAX_ALERTS)}

    @app.get("/api/jobs")
    @api
    def jobs() -> dict[str, Any]:
        auth.require_reader()
        polled = ctx.dashboard.jobs_raw()
        return {"ts": ctx.clock(), "nodes": {n: r["value"] if r["ok"] else {"error": r["error"]}
                                             for n, r in sorted(polled.items())}}

    @app.get("/api/summaries")
    @api
    def summaries() -> dict[str, Any]:
        auth.require_reader()
        day = bottle.request.query.get("day") or None
        if day is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise ApiError(400, f"day must be YYYY-MM-DD, got {day!r}")
        return {"day": day, "summaries": hub.summaries(day)}

    @app.get("/api/actuators")
    @api
    def actuators() -> dict[str, Any]:
        auth.require_reader()
        return ctx.dashboard.actuators()

    @app.get("/api/whoami")
    @api
    def whoami() -> dict[str, Any]:
        return {"role": auth.role(), "public_read": auth.public_read}

    @app.get("/healthz")
    @api
    def healthz() -> dict[str, Any]:
        return {"ok": True, "node": ctx.node, "nodes": len(hub.node_names())}
