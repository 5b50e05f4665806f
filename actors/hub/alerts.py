"""Alert events on their way to the hub: the wire format check, shared by Pyro5 and HTTP pushes.

An event comes from a node's plugin runner (plugins/alerts.py documents the fields):
raised, cleared or acknowledged, about a node/sensor/quantity, at a time."""

from __future__ import annotations

import math
import re
from typing import Any

from actors.errors import BadRequest
from hal.names import is_node_name

ALERT_ID_RE = re.compile(r"^[a-z0-9_.:-]{1,64}\Z")
STATES = ("raised", "cleared", "acknowledged")
SEVERITIES = ("info", "warning", "critical")
FIELDS = frozenset({"plugin", "version", "alert", "state", "severity", "message", "node", "raised_by",
                    "sensor", "quantity", "value", "ts", "since"})
MAX_ALERTS_PER_BATCH = 100


def _short(v: Any, limit: int = 64) -> bool:
    return isinstance(v, str) and 0 < len(v) <= limit


def _time(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_alert(event: Any, sender: str, where: str) -> dict[str, Any]:
    """Check one alert event from node `sender`; return it normalised or raise BadRequest."""
    if not isinstance(event, dict):
        raise BadRequest(f"{where}: an alert event must be an object")
    extra = set(event) - FIELDS
    if extra:
        raise BadRequest(f"{where}: unknown alert field(s): {', '.join(sorted(map(str, extra)))}")
    checks = [
        ("plugin", _short(event.get("plugin"))),
        ("version", _short(event.get("version"), 32)),
        ("alert", isinstance(event.get("alert"), str) and bool(ALERT_ID_RE.match(event["alert"]))),
        ("state", event.get("state") in STATES),
        ("severity", event.get("severity") in SEVERITIES),
        ("message", isinstance(event.get("message"), str) and len(event["message"]) <= 500),
        ("node", is_node_name(event.get("node"))),
        ("raised_by", event.get("raised_by") in (None, sender)),
        ("sensor", event.get("sensor") is None or _short(event["sensor"])),
        ("quantity", event.get("quantity") is None or _short(event["quantity"])),
        ("value", event.get("value") is None or _time(event["value"])),
        ("ts", _time(event.get("ts"))),
        ("since", event.get("since") is None or _time(event["since"])),
    ]
    for field, ok in checks:
        if not ok:
            raise BadRequest(f"{where}: bad alert field {field!r}: {event.get(field)!r}")
    return {**{k: event.get(k) for k in FIELDS}, "raised_by": sender, "since": event.get("since") or event["ts"]}
