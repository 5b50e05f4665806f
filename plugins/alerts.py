"""The node's alert book: which plugin alerts are active, which are acknowledged, and what happened.

Every change is an *event*, a plain dict handed to the node's sink (the agent forwards it
to the hub, which keeps the history):

    {"plugin": "room_temperature", "version": "1.0.0", "alert": "room_temperature.pi4.dht22",
     "state": "raised" | "cleared" | "acknowledged", "severity": "info" | "warning" | "critical",
     "message": "temperature 31.2 °C on pi4.dht22 above 30 for 30 s",
     "node": "pi4",            # the node the alert is about
     "raised_by": "pi4",       # the node whose plugin runner decided it
     "sensor": "dht22" | None, "quantity": "temperature" | None, "value": 31.2 | None,
     "ts": 1764201600.0,       # when this event happened (the runner's clock)
     "since": 1764201570.0}    # when the alert was raised

Raising an active alert again, or clearing one that is not active, is a no-op: a rule
may repeat itself every evaluation without flooding the hub. Acknowledging silences the
buzzer for that plugin until one of its alerts is raised anew.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hal.files import write_json_atomic

log = logging.getLogger(__name__)
HISTORY = 500


class AlertBook:
    """Active alerts of one node's plugins, persisted so a restart does not forget them."""

    def __init__(self, node: str, sink: Callable[[dict[str, Any]], None], clock: Callable[[], float],
                 path: Path | None = None, history: int = HISTORY) -> None:
        self.node = node
        self._sink = sink
        self._clock = clock
        self._path = path
        self._lock = threading.RLock()
        self._active: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._sink_failing = False
        self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            rows = json.loads(self._path.read_text(encoding="utf-8"))
            for row in rows:
                self._active[(row["plugin"], row["alert"])] = row
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("alert book %s unreadable (%s); starting with no active alerts", self._path, exc)

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            write_json_atomic(self._path, list(self._active.values()))
        except OSError as exc:
            log.warning("cannot save the alert book %s: %s", self._path, exc)

    def _emit(self, event: dict[str, Any]) -> dict[str, Any]:
        self._history.append(event)
        try:
            self._sink(event)
        except Exception as exc:  # the sink is the agent's; an alert must still be recorded here
            if not self._sink_failing:
                log.error("alert sink failed (%s: %s); events stay in the local history", type(exc).__name__, exc)
            self._sink_failing = True
        else:
            if self._sink_failing:
                log.info("alert sink works again")
            self._sink_failing = False
        return event

    def raise_alert(self, plugin: str, version: str, alert: dict[str, Any]) -> dict[str, Any] | None:
        """Record a raised alert; returns the event, or None if it was already active."""
        with self._lock:
            key = (plugin, alert["id"])
            if key in self._active:
                return None
            now = self._clock()
            event = {"plugin": plugin, "version": version, "alert": alert["id"], "state": "raised",
                     "severity": alert["severity"], "message": alert["message"],
                     "node": alert.get("node") or self.node, "raised_by": self.node,
                     "sensor": alert.get("sensor"), "quantity": alert.get("quantity"),
                     "value": alert.get("value"), "ts": now, "since": now}
            self._active[key] = {**event, "acknowledged": False}
            self._save()
            return self._emit(event)

    def clear_alert(self, plugin: str, version: str, alert_id: str, message: str,
                    value: float | None = None) -> dict[str, Any] | None:
        """Clear an active alert; returns the event, or None if it was not active."""
        with self._lock:
            row = self._active.pop((plugin, alert_id), None)
            if row is None:
                return None
            self._save()
            return self._emit(self._event(row, "cleared", version, message or f"{alert_id} cleared", value))

    def clear_plugin(self, plugin: str, reason: str) -> list[dict[str, Any]]:
        """Clear every active alert of a plugin (it was removed or disabled)."""
        with self._lock:
            keys = [k for k in self._active if k[0] == plugin]
            rows = [self._active.pop(k) for k in keys]
            if rows:
                self._save()
            return [self._emit(self._event(row, "cleared", row["version"], reason, None)) for row in rows]

    def acknowledge(self, alert_id: str | None = None, plugin: str | None = None) -> list[dict[str, Any]]:
        """Acknowledge active alerts matching id and/or plugin (both None: all); returns the events."""
        with self._lock:
            rows = [r for (p, a), r in self._active.items()
                    if not r["acknowledged"] and (alert_id is None or a == alert_id) and (plugin is None or p == plugin)]
            for row in rows:
                row["acknowledged"] = True
            if rows:
                self._save()
            return [self._emit(self._event(row, "acknowledged", row["version"], f"{row['alert']} acknowledged",
                                           row.get("value"))) for row in rows]

    def silenced(self, plugin: str) -> bool:
        """True while the plugin has active alerts and every one of them is acknowledged."""
        with self._lock:
            rows = [r for (p, _), r in self._active.items() if p == plugin]
            return bool(rows) and all(r["acknowledged"] for r in rows)

    def active(self, plugin: str | None = None) -> list[dict[str, Any]]:
        """Active alerts, oldest first."""
        with self._lock:
            rows = [dict(r) for (p, _), r in self._active.items() if plugin is None or p == plugin]
        return sorted(rows, key=lambda r: r["since"])

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent events, oldest first."""
        with self._lock:
            return list(self._history)[-limit:]

    def _event(self, row: dict[str, Any], state: str, version: str, message: str,
               value: float | None) -> dict[str, Any]:
        return {"plugin": row["plugin"], "version": version, "alert": row["alert"], "state": state,
                "severity": row["severity"], "message": message, "node": row["node"],
                "raised_by": self.node, "sensor": row.get("sensor"), "quantity": row.get("quantity"),
                "value": value, "ts": self._clock(), "since": row["since"]}
