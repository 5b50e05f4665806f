"""The hub asks a spoke's agent how it is when the spoke goes quiet, and now and then for its health.

A spoke that pushes is alive: its pushes (and hellos, which carry a boot id that changes when
the node restarts) are its liveness, so a fleet that pushes costs the hub no outbound calls for
it. A spoke heard from less than QUIET_AFTER push intervals ago is left alone; a quiet one is
probed every PROBE_INTERVAL, so a crashed node shows offline within about one push interval
plus a probe (its agent refuses the connection) instead of after ONLINE_INTERVALS of silence.
The agent's answer also carries its actors' states and the outbox, which the dashboard, /metrics
and Home Assistant show: each node is asked for them when first seen, after a restart, and
every HEALTH_INTERVAL."""

from __future__ import annotations

import time
from concurrent import futures
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5.api import Proxy

from actors.hub.state import Hub
from hal.names import object_name
from nameserver.pyro import disown, release

PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 1.0
PROBE_THREADS = 16
# Quiet: not heard from for this many push intervals (a push run that takes a while, or a
# scheduler a little late, is not silence).
QUIET_AFTER = 1.5
# Actor states and the outbox of a node that keeps pushing: a thousand spokes cost 33 calls a
# second at this rate, against 500 when every node was asked every probe run.
HEALTH_INTERVAL = 30.0
# A spoke without an agent the hub could reach (an HTTP-only sender) is not looked up again
# while it pushes, and only this often once quiet: each failed lookup costs the hub's name
# server a formatted traceback. A node that was reachable once is probed every PROBE_INTERVAL
# while quiet, so a restarted one shows online as soon as it registers.
NAMELESS_RECHECK = 30.0


class SpokeProber:
    """Probes run side by side: a partitioned fleet costs one timeout per run, not one per node.

    Only a refused or failed connection marks a node unreachable; a node that never
    registered (an HTTP-only sender) keeps its push-based liveness."""

    def __init__(self, hub: Hub, ns_host: str, ns_port: int) -> None:
        self.hub = hub
        self._ns = f"{ns_host}:{ns_port}"
        self._probes: dict[str, Proxy] = {}  # one per spoke; a probe run uses each from one thread
        self._boots: dict[str, Any] = {}  # spoke -> the boot id its kept proxy was made for
        self._asked: dict[str, float] = {}  # spoke -> when its agent last answered (monotonic)
        self._nameless: dict[str, tuple[float, Any]] = {}  # spoke -> when its agent was found missing, boot
        self._pool: futures.ThreadPoolExecutor | None = None

    def due(self) -> list[tuple[str, Any]]:
        """The spokes to probe now, with their boot ids."""
        now = time.monotonic()
        out = []
        for node, silent_for, reachable, boot in self.hub.liveness():
            quiet = silent_for > QUIET_AFTER or reachable is False
            missing = self._nameless.get(node)
            # a sender without an agent that keeps pushing is alive: nothing to look up
            if missing is not None and missing[1] == boot and reachable is None \
                    and (not quiet or now - missing[0] < NAMELESS_RECHECK):
                continue
            asked = self._asked.get(node)
            if quiet or reachable is None or asked is None or now - asked >= HEALTH_INTERVAL \
                    or self._boots.get(node, boot) != boot:
                out.append((node, boot))
        return out

    def run(self) -> None:
        """Probe every spoke that is due."""
        due = self.due()
        if not due:
            return
        if self._pool is None:
            self._pool = futures.ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")
        list(self._pool.map(self._probe_one, due))

    def _probe_one(self, item: tuple[str, Any]) -> None:
        node, boot = item
        proxy = self._probes.get(node)
        if proxy is not None and self._boots.get(node) != boot:  # a restarted agent listens elsewhere
            self._drop(node)
            proxy = None
        if proxy is None:
            proxy = Proxy(f"PYRONAME:{object_name(node, 'agent')}@{self._ns}")
            proxy._pyroTimeout = PROBE_TIMEOUT
            self._probes[node], self._boots[node] = proxy, boot
        proxy._pyroClaimOwnership()
        try:
            health = proxy.fleet_health()
        except pyro_errors.NamingError:
            self._drop(node)
            self._nameless[node] = (time.monotonic(), boot)
            return
        except (pyro_errors.CommunicationError, OSError):
            self._drop(node)  # re-resolve: a restarted agent has a new port
            self.hub.set_reachable(node, False)
            return
        finally:
            if self._probes.get(node) is proxy:  # the next run may probe this node from another pool thread
                disown(proxy)
        self._nameless.pop(node, None)
        self._asked[node] = time.monotonic()
        self.hub.set_reachable(node, True, health)

    def _drop(self, node: str) -> None:
        proxy = self._probes.pop(node, None)
        self._boots.pop(node, None)
        self._asked.pop(node, None)
        if proxy is not None:
            release(proxy)

    def close(self) -> None:
        """Stop the probe threads (after the scheduler stopped calling run())."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for node in list(self._probes):
            self._drop(node)
