"""The read-only JSON API: readings, nodes, history, alerts, actuator states, hubs, exports, notification
channels, health, who am I."""

from __future__ import annotations

import datetime
import re
from typing import Any

import bottle

from actors.hub.ingest import shown
from web.context import WebContext
from web.http import ApiError, Csv, RawJsonBytes, api, float_param, query_param

MAX_POINTS = 10_000
MAX_ALERTS = 1000


def require_series(ctx: WebContext, node: str, sensor: str | None = None, quantity: str | None = None) -> None:
    """404 naming the first unknown part of node/sensor/quantity."""
    if not ctx.hub.has_series(node):
        raise ApiError(404, f"unknown node {shown(node)}; known: {', '.join(ctx.hub.node_names()) or 'none'}")
    if sensor is not None and not ctx.hub.has_series(node, sensor):
        raise ApiError(404, f"node {node!r} has no sensor {shown(sensor)}")
    if quantity is not None and not ctx.hub.has_series(node, sensor, quantity):
        raise ApiError(404, f"sensor {node}/{sensor} has no quantity {shown(quantity)}")


def check_day(day: str) -> None:
    """400 unless `day` is a calendar date written YYYY-MM-DD."""
    # ASCII digits only: \d would take any script's digits, and fromisoformat alone takes 20240101 too
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", day):
        raise ApiError(400, f"day must be a date written YYYY-MM-DD, got {shown(day)}")
    try:
        datetime.date.fromisoformat(day)
    except ValueError as exc:
        raise ApiError(400, f"day {day!r} is not a calendar date ({exc}); expected YYYY-MM-DD") from None


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add the read routes to the app."""
    hub, auth = ctx.hub, ctx.auth

    @app.get("/api/readings")
    @api
    def readings() -> RawJsonBytes:
        auth.require_reader()
        return RawJsonBytes(hub.snapshot_bytes())

    @app.get("/api/cluster")
    @api
    def cluster() -> dict[str, Any]:
        auth.require_reader()
        return hub.cluster_view(ctx.node)

    @app.get("/api/exports")
    @api
    def exports() -> dict[str, Any]:
        auth.require_reader()
        return {"exports": ctx.dashboard.exports()}

    @app.get("/api/notify")
    @api
    def notify() -> dict[str, Any]:
        auth.require_reader()
        return {"channels": ctx.dashboard.notifications()}

    @app.get("/api/nodes")
    @api
    def nodes() -> list[dict[str, Any]]:
        auth.require_reader()
        return [{k: v for k, v in n.items() if k != "sensors"} for n in hub.snapshot()["nodes"]]

    @app.get("/api/history")
    @api
    def history() -> dict[str, Any] | Csv:
        auth.require_reader()
        node, sensor, quantity = query_param("node"), query_param("sensor"), query_param("quantity")
        if not node or not sensor or not quantity:
            raise ApiError(400, "node, sensor and quantity are required query parameters")
        now = ctx.clock()
        until = float_param("until", now)
        since = float_param("since", until - 3600)
        if since >= until:
            raise ApiError(400, f"since ({since}) must be before until ({until})")
        step = query_param("step") or "auto"
        if step == "auto":
            span = until - since
            step = "raw" if span <= 2 * 3600 else "1m" if span <= 2 * 86400 else "1h"
        if step not in ("raw", "1m", "1h"):
            raise ApiError(400, f"step must be raw, 1m, 1h or auto, got {shown(step)}")
        require_series(ctx, node, sensor, quantity)
        fmt = query_param("format") or "json"
        if fmt not in ("json", "csv"):
            raise ApiError(400, f"format must be json or csv, got {shown(fmt)}")
        points = hub.history(node, sensor, quantity, since, until, step, MAX_POINTS)
        columns = ["ts", "value"] if step == "raw" else ["ts", "min", "mean", "max"]
        if fmt == "csv":  # the unit in the header: a spreadsheet has nowhere else to keep it
            known = hub.quantities.lookup(quantity, node)
            unit = f" ({known.unit})" if known is not None and known.unit else ""
            head = [f"{quantity}{unit}"] if step == "raw" else [f"{c}{unit}" for c in columns[1:]]
            lines = [",".join(["ts", *head]), *(",".join(repr(float(v)) for v in row) for row in points)]
            return Csv("\n".join(lines) + "\n")
        return {"node": node, "sensor": sensor, "quantity": quantity, "step": step, "since": since,
                "until": until, "columns": columns, "points": points, "truncated": len(points) >= MAX_POINTS}

    @app.get("/api/alerts")
    @api
    def alerts() -> dict[str, Any]:
        auth.require_reader()
        state = query_param("state") or "active"
        if state not in ("active", "all"):
            raise ApiError(400, f"state must be active or all, got {shown(state)}")
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
        day = query_param("day") or None
        if day is not None:
            check_day(day)
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
