"""Checking what a plugin hands back, and timing its calls.

A plugin controls its whole interpreter (it can replace json.dumps), so nothing it
returns is trusted: evaluate results are re-parsed and bounded here, and polled readings
are rebuilt as hal Readings, which validate quantity, unit, range and quality.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

from hal.errors import ReadingError
from hal.readings import Reading, unit_of
from plugins.errors import PluginResultError

MAX_RESULT_BYTES = 16 * 1024
MAX_DEPTH = 8
MAX_POLLED = 32


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a finite number")


def _too_deep(value: Any) -> bool:
    """True if containers nest deeper than MAX_DEPTH (iterative: a hostile result cannot recurse us)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_result(text: Any) -> dict[str, Any] | None:
    """Parse and bound an evaluate result: a JSON object or null, at most 16 KiB, 8 levels deep."""
    if not isinstance(text, str):
        raise PluginResultError(f"a result must be JSON text, got {type(text).__name__}")
    if len(text) > MAX_RESULT_BYTES:
        raise PluginResultError(f"result is {len(text)} bytes; the limit is {MAX_RESULT_BYTES}")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise PluginResultError(f"result is not valid JSON: {exc}") from None
    if value is not None and not isinstance(value, dict):
        raise PluginResultError(f"a result must be a JSON object or null, got {type(value).__name__}")
    if value is not None and _too_deep(value):
        raise PluginResultError(f"result nests deeper than {MAX_DEPTH} levels")
    return value


def parse_polled(text: Any, node: str, sensor: str, quantities: tuple[str, ...]) -> list[Reading]:
    """Turn a poll's JSON into validated readings of this node, this plugin's sensor, declared quantities."""
    if not isinstance(text, str) or len(text) > MAX_RESULT_BYTES:
        raise PluginResultError("poll must return JSON text of at most 16 KiB")
    try:
        rows = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise PluginResultError(f"poll result is not valid JSON: {exc}") from None
    if not isinstance(rows, list) or len(rows) > MAX_POLLED:
        raise PluginResultError(f"poll must return a list of at most {MAX_POLLED} readings")
    out = []
    for row in rows:
        if not isinstance(row, dict):
            raise PluginResultError(f"a polled reading must be an object, got {type(row).__name__}")
        row = dict(row)
        # The node and sensor are the host's to say: a plugin cannot report for another node.
        for key, expected in (("node", node), ("sensor", sensor)):
            if row.setdefault(key, expected) != expected:
                raise PluginResultError(f"a polled reading's {key} must be {expected!r}, got {row[key]!r}")
        quantity = row.get("quantity")
        if quantity not in quantities:
            raise PluginResultError(f"quantity {quantity!r} is not declared in the manifest's [sensor] table")
        try:
            row.setdefault("unit", unit_of(quantity))
        except ReadingError as exc:
            raise PluginResultError(str(exc)) from None
        try:
            out.append(Reading.from_dict(row))
        except ReadingError as exc:
            raise PluginResultError(f"invalid polled reading: {exc}") from None
    return out


class CallTimes:
    """The last `size` call durations, for p50/p99."""

    def __init__(self, size: int = 1024) -> None:
        self._times: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one call."""
        with self._lock:
            self._times.append(seconds)

    def percentiles(self) -> dict[str, float | None]:
        """p50 and p99 in milliseconds over the recorded calls (None before the first)."""
        with self._lock:
            times = sorted(self._times)
        if not times:
            return {"p50_ms": None, "p99_ms": None}

        def pick(q: float) -> float:
            return round(1000 * times[min(len(times) - 1, int(q * len(times)))], 3)

        return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}
