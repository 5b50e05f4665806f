"""The quantities each node declared, checked across the fleet.

A node's hello lists what it measures beyond the built-in table ([[quantities]] in its config,
its plugins' manifests). The hub keeps each node's list, validates that node's readings
against it (and the built-ins), and refuses a hello whose declaration would give a name a
second unit or device class: the dashboard, /metrics, the exports and Home Assistant show
one quantity one way across the fleet."""

from __future__ import annotations

import threading
from typing import Any

from actors.errors import BadRequest
from hal.errors import ReadingError
from hal.readings import MAX_DECLARED, QUANTITIES, Quantity, conflict, parse_quantity

Limits = dict[str, tuple[str, float, float]]  # name -> (unit, low, high), what check_fields takes


class FleetQuantities:
    """node -> its declared quantities, and the checks between nodes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[str, dict[str, Quantity]] = {}
        self._limits: dict[str, Limits] = {}

    def parse(self, node: str, raw: Any) -> dict[str, Quantity]:
        """A hello's `quantities` checked on their own and against every other node's; BadRequest
        naming the quantity (and the other node) when one cannot be taken. Changes nothing."""
        if raw is None:
            return {}
        if not isinstance(raw, list) or len(raw) > MAX_DECLARED:
            raise BadRequest(f"hello 'quantities' must be a list of at most {MAX_DECLARED} tables")
        out: dict[str, Quantity] = {}
        for i, item in enumerate(raw):
            try:
                q = parse_quantity(item, f"{node}'s quantities[{i}]")
            except ReadingError as exc:
                raise BadRequest(str(exc)) from None
            if q.name in QUANTITIES:
                if (problem := conflict(q, None)) is not None:
                    raise BadRequest(f"{node}: {problem}")
                continue  # a built-in with its own unit: nothing to add
            if q.name in out:
                raise BadRequest(f"{node} declares {q.name} twice")
            with self._lock:
                others = [(n, qs[q.name]) for n, qs in self._by_node.items() if n != node and q.name in qs]
            for other_node, other in others:
                if (problem := conflict(q, other)) is not None:
                    raise BadRequest(f"{node} and {other_node} declare {q.name} differently: {problem} "
                                     f"(by {other_node}); one name has one unit across the fleet: rename one")
            out[q.name] = q
        return out

    def set(self, node: str, quantities: dict[str, Quantity]) -> None:
        """Take a node's (checked) declarations, replacing what it declared before."""
        with self._lock:
            self._by_node[node] = dict(quantities)
            self._limits[node] = {q.name: (q.unit, q.low, q.high) for q in quantities.values()}

    def limits(self, node: str) -> Limits:
        """The node's declared quantities as check_fields takes them (empty: built-ins only)."""
        return self._limits.get(node, {})

    def lookup(self, name: str, node: str | None = None) -> Quantity | None:
        """A quantity by name: built in, declared by `node`, or declared by any node."""
        q = QUANTITIES.get(name)
        if q is not None:
            return q
        with self._lock:
            if node is not None and name in self._by_node.get(node, {}):
                return self._by_node[node][name]
            return next((qs[name] for qs in self._by_node.values() if name in qs), None)

    def declared(self) -> dict[str, Quantity]:
        """Every quantity some node declared (not the built-ins)."""
        with self._lock:
            return {name: q for qs in self._by_node.values() for name, q in qs.items()}
