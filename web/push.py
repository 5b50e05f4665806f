"""POST /push: the hub's ingest for non-Python senders, the same contract as the aggregator's Pyro5 push."""

from __future__ import annotations

from typing import Any

import bottle

from actors.errors import StoreFull
from actors.hub.ingest import shown
from actors.hub.state import MAX_SENT_AT, plausible_sent_at
from web.context import WebContext
from web.http import ApiError, api, read_json_body


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add /push to the app."""

    @app.post("/push")
    @api
    def push() -> dict[str, Any]:
        sender = ctx.auth.require_node()
        try:
            body = read_json_body()
            sent = sent_at_header()
        except ApiError:
            # a body the hub cannot read is a malformed push like one it reads and refuses
            # (those Hub.push counts): every 400/413 from here counts once
            ctx.hub.count_rejected()
            raise
        batches = body if isinstance(body, list) else [body]
        for b in batches:
            if isinstance(b, dict) and b.get("node") != sender:
                raise ApiError(403, f"this token belongs to node {sender!r}, not {shown(b.get('node'))}")
        try:
            answer = ctx.hub.push(batches, sent_at=sent)
        except StoreFull as exc:
            raise ApiError(507, str(exc), {"Retry-After": "60"}) from None
        return {"acked": answer["acked"], "duplicates": answer["duplicates"]}


def sent_at_header() -> float | None:
    """X-Sent-At as epoch seconds (None when absent); 400 when it is not a plausible clock reading."""
    raw = bottle.request.get_header("X-Sent-At")
    if not raw:
        return None
    try:
        sent = plausible_sent_at(float(raw))
    except ValueError:
        sent = None
    if sent is None:
        raise ApiError(400, f"X-Sent-At must be epoch seconds between 0 and {MAX_SENT_AT:.0f}, got {shown(raw)}")
    return sent
