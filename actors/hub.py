"""The hub's domain object (latest values, node registry, idempotent ingest) and its actor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.base import Actor, remote
from actors.config import NAME_RE, PROFILES, ROLES
from actors.errors import BadRequest
from hal.errors import ReadingError
from hal.readings import Reading

MAX_BATCHES_PER_CALL = 500
MAX_READINGS_PER_BATCH = 1000
ONLINE_INTERVALS = 3  # a node is online if it pushed within this many push intervals


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


def validate_batch(batch: Any) -> tuple[str, int, list[Reading]]:
    """Check one wire batch and rebuild its readings; raise BadRequest saying what is wrong."""
    if not isinstance(batch, dict):
        raise BadRequest(f"a batch must be an object, got {type(batch).__name__}")
    unknown = set(batch) - {"node", "seq", "readings"}
    if unknown:
        raise BadRequest(f"unknown batch field(s): {', '.join(sorted(map(str, unknown)))}")
    node, seq, readings = batch.get("node"), batch.get("seq"), batch.get("readings")
    if not isinstance(node, str) or not NAME_RE.match(node):
        raise BadRequest(f"batch 'node' must match [a-z0-9_-]{{1,32}}, got {node!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise BadRequest(f"batch 'seq' must be a positive integer, got {seq!r}")
    if not isinstance(readings, list):
        raise BadRequest("batch 'readings' must be a list")
    if len(readings) > MAX_READINGS_PER_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_READINGS_PER_BATCH} readings, got {len(readings)}")
    out = []
    for i, raw in enumerate(readings):
        if isinstance(raw, dict) and "node" not in raw:
            raw = {**raw, "node": node}
        try:
            r = Reading.from_dict(raw)
        except ReadingError as exc:
            raise BadRequest(f"batch {node}#{seq} reading {i}: {exc}") from None
        if r.node != node:
            raise BadRequest(f"batch {node}#{seq} reading {i} names node {r.node!r}")
        out.append(r)
    return node, seq, out


class Hub:
    """Latest value per node/sensor/quantity and each node's liveness; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeState] = {}
        self._latest: dict[str, dict[str, dict[str, Reading]]] = {}
        self.readings_stored = 0
        self.duplicates = 0

    def hello(self, info: dict[str, Any]) -> dict[str, Any]:
        """A node introduces itself (role, profile, push interval); returns its last acked seq."""
        name = info.get("node")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BadRequest(f"hello needs a valid 'node', got {name!r}")
        role, profile = info.get("role", "spoke"), info.get("profile", "wasm")
        if role not in ROLES or profile not in PROFILES:
            raise BadRequest(f"bad role/profile {role!r}/{profile!r}")
        interval = info.get("push_interval", 5.0)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 3600:
            raise BadRequest(f"bad push_interval {interval!r}")
        with self._lock:
            st = self._nodes.setdefault(name, NodeState(name))
            st.role, st.profile, st.push_interval = role, profile, float(interval)
            st.info = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, list, dict))}
            st.last_seen = self._clock()
            return {"last_seq": st.last_seq}

    def push(self, batches: Any) -> dict[str, Any]:
        """Store batches idempotently on (node, seq); returns the acknowledged sequence numbers."""
        if not isinstance(batches, list):
            batches = [batches]
        if len(batches) > MAX_BATCHES_PER_CALL:
            raise BadRequest(f"at most {MAX_BATCHES_PER_CALL} batches per push, got {len(batches)}")
        checked = [validate_batch(b) for b in batches]  # all or nothing
        acked: list[int] = []
        duplicates = 0
        unknown: set[str] = set()
        now = self._clock()
        with self._lock:
            for node, seq, readings in sorted(checked, key=lambda c: (c[0], c[1])):
                st = self._nodes.get(node)
                if st is None:
                    st = self._nodes[node] = NodeState(node)
                    unknown.add(node)
                st.last_seen = now
                if seq <= st.last_seq:
                    duplicates += 1
                else:
                    st.last_seq = seq
                    self._remember(node, readings)
                acked.append(seq)
            self.duplicates += duplicates
        return {"acked": acked, "duplicates": duplicates, "hello": sorted(unknown)}

    def ingest_local(self, node: str, readings: list[Reading]) -> None:
        """The hub's own readings, without a network hop."""
        with self._lock:
            st = self._nodes.setdefault(node, NodeState(node, role="hub"))
            st.last_seen = self._clock()
            self._remember(node, readings)

    def _remember(self, node: str, readings: list[Reading]) -> None:
        per_node = self._latest.setdefault(node, {})
        for r in readings:
            per_sensor = per_node.setdefault(r.sensor, {})
            old = per_sensor.get(r.quantity)
            # Keep a failed read visible, but never let it hide a newer good one.
            if old is None or r.ts >= old.ts:
                per_sensor[r.quantity] = r
        self.readings_stored += len(readings)

    def is_online(self, st: NodeState, now: float) -> bool:
        """Seen within ONLINE_INTERVALS push intervals."""
        return st.last_seen is not None and now - st.last_seen <= ONLINE_INTERVALS * st.push_interval

    def snapshot(self) -> dict[str, Any]:
        """Every node with liveness and each sensor's latest quantities (the /api/readings body)."""
        now = self._clock()
        nodes = []
        with self._lock:
            for name in sorted(self._nodes):
                st = self._nodes[name]
                sensors: dict[str, dict[str, Any]] = {}
                limits = st.info.get("stale_after") or {}
                for sensor, quantities in sorted(self._latest.get(name, {}).items()):
                    # A sensor's own limit (sent in hello); otherwise a push cycle's worth of slack.
                    limit = _limit_for(limits, sensor, ONLINE_INTERVALS * st.push_interval)
                    sensors[sensor] = {
                        q: {"value": r.value, "unit": r.unit, "ts": r.ts, "quality": r.quality,
                            "reason": r.reason, "stale": now - r.ts > limit}
                        for q, r in sorted(quantities.items())
                    }
                nodes.append({"name": name, "role": st.role, "profile": st.profile,
                              "online": self.is_online(st, now), "last_seen": st.last_seen,
                              "last_seq": st.last_seq, "sensors": sensors})
        return {"ts": now, "nodes": nodes}

    def node_names(self) -> list[str]:
        """Known nodes."""
        with self._lock:
            return sorted(self._nodes)


def _limit_for(limits: dict[str, Any], sensor: str, default: float) -> float:
    """The staleness limit of a sensor; network targets (`network-hub`) share their sensor's."""
    value = limits.get(sensor, limits.get(sensor.split("-", 1)[0]))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


class AggregatorActor(Actor):
    """`harvester.hub.aggregator`: where spokes push their batches."""

    kind = "aggregator"

    def __init__(self, node: str, hub: Hub) -> None:
        super().__init__(node, "aggregator", role="hub")
        self.hub = hub
        # Pushes from many spokes must not queue behind each other: the Hub has its own lock.
        self._gate = _NoGate()

    @remote
    def push(self, batches: list[dict[str, Any]]) -> dict[str, Any]:
        """Store batches of readings; idempotent on (node, seq). Returns the acknowledged seqs."""
        return self.hub.push(batches)

    @remote
    def hello(self, info: dict[str, Any]) -> dict[str, Any]:
        """Register a node's role/profile/push interval; returns the last seq the hub holds for it."""
        return self.hub.hello(info)

    @remote
    def readings(self) -> dict[str, Any]:
        """The same body as GET /api/readings."""
        return self.hub.snapshot()

    @remote
    def nodes(self) -> list[dict[str, Any]]:
        """Every known node with role, profile, online and last_seen."""
        return [{k: v for k, v in n.items() if k != "sensors"} for n in self.hub.snapshot()["nodes"]]


class _NoGate:
    """A stand-in lock for actors whose domain object does its own locking."""

    def acquire(self, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None
