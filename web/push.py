"""POST /push: the hub's ingest for non-Python senders, the same contract as the aggregator's Pyro5 push."""

from __future__ import annotations

from typing import Any

import bottle

from actors.errors import StoreFull
from web.context import WebContext
from web.http import ApiError, api, read_json_body


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add /push to the app."""

    @app.post("/push")
    @api
    def push() -> dict[str, Any]:
        sender = ctx.auth.require_node()
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
            answer = ctx.hub.push(batches, sent_at=sent)
        except StoreFull as exc:
            raise ApiError(507, str(exc), {"Retry-After": "60"}) from None
        return {"acked": answer["acked"], "duplicates": answer["duplicates"]}
