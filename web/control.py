"""Operator commands, forwarded once (never retried) to the spokes' actors: buzzer, LEDs, alert
acknowledgement, plugin reload. Every route needs the operator token."""

from __future__ import annotations

import logging
import re
from concurrent.futures import Future
from typing import Any

import bottle

from actors.devices.commands import buzzer_call, leds_call
from hal.names import NODE_NAME_RULE, is_node_name
from web.context import WebContext
from web.http import ApiError, api, read_json_object

log = logging.getLogger(__name__)
PLUGIN_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}\Z")  # as plugins.manifest; the node checks it again


def known_node(ctx: WebContext, body: dict[str, Any]) -> str:
    """The body's `node`, checked: 400 when malformed, 404 when the hub has never heard of it."""
    node = body.get("node")
    if not is_node_name(node):
        raise ApiError(400, f"'node' must be a node name ({NODE_NAME_RULE}), got {node!r}")
    if node not in ctx.hub.node_names():
        raise ApiError(404, f"unknown node {node!r}; known: {', '.join(ctx.hub.node_names()) or 'none'}")
    return node


def _forward(ctx: WebContext, futures: dict[str, tuple[Future, str, str]]) -> dict[str, Any]:
    """Wait (bounded) for forwarded calls; report each outcome in words, never raise."""
    out: dict[str, Any] = {}
    for what, (future, node, actor) in futures.items():
        try:
            out[what] = {"ok": True, "result": ctx.upstream.result(future, node, actor)}
        except ApiError as exc:
            out[what] = {"ok": False, "status": exc.status, "error": exc.message}
    return out


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add the control routes to the app."""
    auth, upstream, dashboard = ctx.auth, ctx.upstream, ctx.dashboard

    @app.post("/api/buzzer/control")
    @api
    def buzzer() -> dict[str, Any]:
        auth.require_operator()
        body = read_json_object({"node", "action", "duration_ms", "count"})
        node = known_node(ctx, body)
        method, args = buzzer_call(body)
        state = upstream.call(node, "buzzer", method, *args)
        dashboard.buzzer.put(node, {k: v for k, v in state.items() if k not in ("sounded", "reason")})
        dashboard.live.changed()
        return {"node": node, "action": body["action"], "state": state}

    @app.post("/api/leds/control")
    @api
    def leds() -> dict[str, Any]:
        auth.require_operator()
        body = read_json_object({"node", "action", "index", "rgb", "colour", "value"})
        node = known_node(ctx, body)
        method, args = leds_call(body)
        result = upstream.call(node, "leds", method, *args)
        if method == "brightness":  # answers the new brightness; the page wants the whole strip
            result = upstream.call(node, "leds", "state")
        dashboard.leds.put(node, result)
        dashboard.live.changed()
        return {"node": node, "action": method, "state": result}

    @app.post("/api/alerts/<alert_id>/ack")
    @api
    def acknowledge(alert_id: str) -> dict[str, Any]:
        auth.require_operator()
        if not alert_id.isdigit() or len(alert_id) > 18:
            raise ApiError(400, f"alert id must be a positive integer, got {alert_id!r}")
        alert = ctx.hub.acknowledge(int(alert_id), by="operator")
        if alert is None:
            raise ApiError(404, f"no active alert with id {alert_id}")
        dashboard.live.changed()
        node = alert["raised_by"]
        # The hub has recorded it; now tell the node that raised it, so its plugin stops
        # re-alerting and its buzzer stops. Each is best effort and reported, never fatal.
        futures: dict[str, tuple[Future, str, str]] = {}
        for what, actor, method, args in (("plugins", "plugins", "acknowledge", (alert["alert"], alert["plugin"])),
                                          ("buzzer", "buzzer", "silence", ())):
            try:
                futures[what] = (upstream.submit(node, actor, method, *args), node, actor)
            except ApiError as exc:
                log.info("alert %s acknowledged at the hub only: %s", alert_id, exc.message)
        return {"alert": alert, "forwarded": _forward(ctx, futures)}

    @app.post("/api/plugins/<node>/<name>/reload")
    @api
    def reload_plugin(node: str, name: str) -> dict[str, Any]:
        auth.require_operator()
        node = known_node(ctx, {"node": node})
        if not PLUGIN_NAME_RE.match(name):
            raise ApiError(400, f"plugin names are [a-z][a-z0-9_]{{0,47}}, got {name!r}")
        plugins = upstream.call(node, "plugins", "list")
        names = sorted(p.get("name") for p in plugins if isinstance(p, dict))
        if name not in names:
            raise ApiError(404, f"node {node!r} has no plugin {name!r}; known: {', '.join(names) or 'none'}")
        return {"node": node, "plugin": name, "report": upstream.call(node, "plugins", "reload", name)}
