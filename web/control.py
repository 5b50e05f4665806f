"""Operator commands, forwarded once (never retried) to the spokes' actors: buzzer, LEDs, alert
acknowledgement, plugin reload; and the hub's own notification test message. Every route needs the
operator token."""

from __future__ import annotations

import logging
import re
from concurrent.futures import Future
from typing import Any

import bottle

from actors.devices.commands import buzzer_call, leds_call
from actors.hub.ingest import shown
from hal.names import NODE_NAME_RULE, is_node_name
from web.context import WebContext
from web.http import ApiError, api, read_json_object

log = logging.getLogger(__name__)
PLUGIN_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}\Z")  # as plugins.manifest; the node checks it again
MAX_CHANNEL_NAME = 64  # as the notify actor's test(channel)
NO_CHANNELS = "no notification channels are configured ([[notify]] in the hub's config)"


def optional_json_object(allowed: set[str]) -> dict[str, Any]:
    """Like read_json_object, but a request without a body is an empty object (`curl -X POST`)."""
    chunked = "chunked" in bottle.request.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if bottle.request.content_length <= 0 and not chunked:
        return {}
    return read_json_object(allowed)


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

    @app.post("/api/notify/test")
    @api
    def notify_test() -> dict[str, Any]:
        """A test message now, on one channel ({"channel": NAME}) or on each (no body, {} or a null channel).
        Sent while the request waits: each channel has its own timeout. A failed send is an outcome (200)."""
        auth.require_operator()
        body = optional_json_object({"channel"})
        channel = body.get("channel")
        if channel is not None and (not isinstance(channel, str) or not 0 < len(channel) <= MAX_CHANNEL_NAME):
            raise ApiError(400, f"'channel' must be a channel name (a string of 1 to {MAX_CHANNEL_NAME} characters) "
                                f"or absent for every channel, got {shown(channel)}")
        notifier = ctx.hub.notifier
        if notifier is None:
            raise ApiError(404, NO_CHANNELS)
        try:
            outcomes = notifier.test(channel)
        except KeyError as exc:  # an unknown channel: the message names the configured ones
            raise ApiError(404, str(exc.args[0]) if exc.args else f"no notification channel {channel!r}") from None
        for o in outcomes:
            log.info("notify %s: test message by the operator: %s (%s)", o["channel"], "sent" if o["ok"] else
                     "not sent", o["result"])
        return {"outcomes": outcomes}
