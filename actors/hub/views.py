"""What the hub shows of each node: its state, its liveness, and the cached JSON view of it.

One computation of online and stale, used by /api/readings, the dashboard and /metrics alike."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from actors.hub.ingest import MAX_STALE_AFTER_S
from actors.hub.store import Row

ONLINE_INTERVALS = 3  # a node is online if it pushed within this many push intervals
CLOCK_SKEW_LIMIT = 30.0  # a node whose clock differs more than this is flagged
# A cached view is dropped this long before a flag of it would turn: far more than the rounding
# of `now - ts > limit` (about 1e-7 s at today's epoch), so a reused part never disagrees with a new one.
FLIP_MARGIN = 1e-3
# While someone reads the views (API clients, the dashboard), a push rebuilds and encodes its
# node's view at once, so that a request only assembles: with a thousand spokes pushing every
# second, the request that found a sixth of them changed spent 7 ms of CPU encoding them.
WATCHED_S = 10.0
# Latest rows of one node: sensor -> quantity -> row
Latest = dict[str, dict[str, Row]]


@dataclass
class NodeState:
    """What the hub knows about one node."""

    name: str
    role: str = "spoke"
    profile: str = "wasm"
    push_interval: float = 5.0
    last_seen: float | None = None
    last_seq: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    clock_offset: float | None = None
    reachable: bool | None = None  # from the hub's pings of the node's agent; None = not probed yet
    health: dict[str, Any] = field(default_factory=dict)  # actor -> {state, last_error}, from probes
    outbox: dict[str, Any] | None = None  # the spoke's outbox state, from probes
    restarts: int = 0  # boot ids changed since this hub started
    restarted_at: float | None = None
    version: int = 0  # bumped by every change (under the hub's lock): keys the JSON view's cache


def recent_until(st: NodeState) -> float:
    """Until when the node counts as having pushed recently (-inf if it never pushed)."""
    return -math.inf if st.last_seen is None else st.last_seen + ONLINE_INTERVALS * st.push_interval


def is_online(st: NodeState, now: float) -> bool:
    """Pushed within ONLINE_INTERVALS push intervals, and its agent did not just refuse a ping."""
    return now <= recent_until(st) and st.reachable is not False


def limit_for(limits: dict[str, Any], sensor: str, default: float) -> float:
    """The staleness limit of a sensor; network targets (`network-hub`) share their sensor's."""
    value = limits.get(sensor, limits.get(sensor.split("-", 1)[0]))
    # hello checks the limits; a row stored before it did may still hold anything
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_STALE_AFTER_S:
        return float(value)
    return default


def node_view(st: NodeState, latest: Latest, now: float) -> tuple[dict[str, Any], float]:
    """One node of the snapshot, and until when (at the latest) its time-dependent flags hold."""
    until = math.inf
    sensors: dict[str, dict[str, Any]] = {}
    limits = st.info.get("stale_after") or {}
    for sensor, quantities in sorted(latest.items()):
        # A sensor's own limit (sent in hello); otherwise a push cycle's worth of slack.
        limit = limit_for(limits, sensor, ONLINE_INTERVALS * st.push_interval)
        view = {}
        for q, r in sorted(quantities.items()):
            stale = now - r.ts > limit
            if not stale:  # turns stale once now passes ts + limit (kept short of it by FLIP_MARGIN)
                until = min(until, r.ts + limit - FLIP_MARGIN)
            view[q] = {"value": r.value, "unit": r.unit, "ts": r.ts, "quality": r.quality, "reason": r.reason,
                       "stale": stale}
        sensors[sensor] = view
    recent = recent_until(st)
    if now <= recent:  # the online flag turns when the node stops counting as recent
        until = min(until, recent - FLIP_MARGIN)
    return ({"name": st.name, "role": st.role, "profile": st.profile,
             "online": is_online(st, now), "last_seen": st.last_seen,
             "reachable": st.reachable, "actors": dict(st.health), "outbox": st.outbox,
             "last_seq": st.last_seq, "push_interval": st.push_interval,
             "clock_offset": st.clock_offset,
             "clock_ok": st.clock_offset is None or abs(st.clock_offset) <= CLOCK_SKEW_LIMIT,
             "clock_synced": st.info.get("clock_synced"),  # the node's kernel, from its hello
             "boot": st.info.get("boot"), "restarts": st.restarts, "restarted_at": st.restarted_at,
             "sensors": sensors}, until)


@dataclass(slots=True)
class CachedView:
    """A node's view, the state version and time window it holds for, and its JSON once encoded."""

    version: int
    built: float
    until: float
    view: dict[str, Any]
    text: str | None = None
    data: bytes | None = None

    def json(self) -> str:
        """The view as JSON, encoded once (a cached entry is replaced, never changed: no lock needed)."""
        if self.text is None:
            self.text = json.dumps(self.view, allow_nan=False, ensure_ascii=False)
        return self.text

    def json_bytes(self) -> bytes:
        """json() as UTF-8, encoded once."""
        if self.data is None:
            self.data = self.json().encode()
        return self.data


class ViewCache:
    """Each node's view, rebuilt only when the node changed or a flag of it turned.

    A node's view depends on its state and on the time (online and stale flags turn as it
    passes), so each cached view carries the node's version and the interval in which its
    flags hold. Pages and API clients poll every second or two while each node pushes every
    few seconds: most views are reused. Building and encoding every node on every request
    cost 33 ms at 800 spokes x 10 sensors, under the lock the pushes need."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedView] = {}
        self._order: list[str] = []  # node names sorted, rebuilt when a node is added
        self.read_at = -math.inf  # when views() last ran (the hub's clock)

    def views(self, nodes: dict[str, NodeState], latest: dict[str, Latest], now: float) -> list[CachedView]:
        """Every node's current view, in name order (call under the hub's lock)."""
        self.read_at = now
        if len(self._order) != len(nodes):
            self._order = sorted(nodes)
        return [self._current(name, nodes[name], latest, now) for name in self._order]

    def _current(self, name: str, st: NodeState, latest: dict[str, Latest], now: float) -> CachedView:
        e = self.entries.get(name)
        if e is None or e.version != st.version or not e.built <= now <= e.until:
            view, until = node_view(st, latest.get(name, {}), now)
            e = self.entries[name] = CachedView(st.version, now, until, view)
        return e

    def watched(self, now: float) -> bool:
        """Someone read the views within WATCHED_S."""
        return now - self.read_at < WATCHED_S

    def refresh(self, names: Iterable[str], nodes: dict[str, NodeState], latest: dict[str, Latest],
                now: float) -> list[CachedView]:
        """Rebuild these nodes' views now (call under the hub's lock; encode them after it)."""
        return [self._current(n, nodes[n], latest, now) for n in names if n in nodes]
