"""`harvester.<hub>.aggregator`: the remote face of the hub, where spokes push their batches."""

from __future__ import annotations

from typing import Any

from actors.base import Actor, CallGate, remote
from actors.hub.state import Hub
from nameserver.pyro import TypedCall
from nameserver.security import caller_identity


def _check_sender(*nodes: Any) -> None:
    """Under TLS, only a node certificate may push, and only as itself."""
    who = caller_identity()
    if who is None:  # plaintext: loopback-only by check_bind, no identities to compare
        return
    for node in nodes:
        if not who.is_node or who.name != node:
            raise PermissionError(f"{who} may not push or introduce itself as node {node!r}")


def _check_pusher(batches: Any) -> None:
    """_check_sender for each batch's node (the identity is looked up once per call)."""
    if caller_identity() is not None:
        _check_sender(*(batch.get("node") if isinstance(batch, dict) else getattr(batch, "node", None)
                        for batch in (batches if isinstance(batches, list) else [batches])))


class AggregatorActor(Actor):
    """`harvester.hub.aggregator`: where spokes push their batches."""

    kind = "aggregator"

    def __init__(self, node: str, hub: Hub, tags: set[str] | None = None) -> None:
        # Pushes from many spokes run side by side (Hub and Store lock what they share),
        # bounded so a flood cannot take every Pyro5 worker thread.
        super().__init__(node, "aggregator", role="hub", tags=tags,
                         gate=CallGate(concurrency=32, max_waiting=32))
        self.hub = hub

    def typed_calls(self) -> dict[str, TypedCall]:
        """push's batches decoded straight into typed structures (actors.hub.wire), where msgspec
        is installed: about half of a drained backlog's cost on the hub."""
        try:
            from actors.hub import wire
        except ImportError:  # a board without msgspec decodes pushes the usual way
            return {}
        return {"push": TypedCall(wire.decode_push, wire.REFUSED, wire.TYPED_FROM_BYTES)}

    @remote
    def push(self, batches: list[dict[str, Any]], sent_at: float | None = None) -> dict[str, Any]:
        """Store batches of readings; idempotent on (node, seq). Returns the acknowledged seqs.

        `sent_at` is the sender's clock, used to flag nodes whose clock is off."""
        _check_pusher(batches)
        return self.hub.push(batches, sent_at)

    @remote
    def hello(self, info: dict[str, Any], sent_at: float | None = None) -> dict[str, Any]:
        """Register a node's role/profile/push interval; returns the last seq the hub holds for it."""
        _check_sender(info.get("node") if isinstance(info, dict) else None)
        return self.hub.hello(info, sent_at)

    @remote
    def readings(self) -> dict[str, Any]:
        """The same body as GET /api/readings."""
        return self.hub.snapshot()

    @remote
    def nodes(self) -> list[dict[str, Any]]:
        """Every known node with role, profile, online and last_seen."""
        return [{k: v for k, v in n.items() if k != "sensors"} for n in self.hub.snapshot()["nodes"]]
