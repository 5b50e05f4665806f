"""The hub pings every spoke's agent, so a crashed node shows offline at once, not after three push intervals."""

from __future__ import annotations

import time
from concurrent import futures

from Pyro5 import errors as pyro_errors
from Pyro5.api import Proxy

from actors.hub.state import Hub
from hal.names import object_name

PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 1.0
PROBE_THREADS = 16
# A spoke that pushes but never had an agent the hub could reach (an HTTP-only sender) is looked
# up again only this often: each failed lookup costs the hub's name server a formatted traceback,
# 100 of them a second for 200 such senders. A node that was reachable once is probed every
# PROBE_INTERVAL whatever happens, so a restarted one shows online as soon as it registers.
NAMELESS_RECHECK = 30.0


class SpokeProber:
    """Probes run side by side: a partitioned fleet costs one timeout per run, not one per node.

    Only a refused or failed connection marks a node unreachable; a node that never
    registered (an HTTP-only sender) keeps its push-based liveness."""

    def __init__(self, hub: Hub, ns_host: str, ns_port: int) -> None:
        self.hub = hub
        self._ns = f"{ns_host}:{ns_port}"
        self._probes: dict[str, Proxy] = {}  # one per spoke; a probe run uses each from one thread
        self._nameless: dict[str, float] = {}  # spoke -> when its agent's name was found missing
        self._pool: futures.ThreadPoolExecutor | None = None

    def run(self) -> None:
        """Probe every spoke once."""
        if self._pool is None:
            self._pool = futures.ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")
        list(self._pool.map(self._probe_one, self.hub.spokes()))

    def _probe_one(self, node: str) -> None:
        missing_since = self._nameless.get(node)
        if missing_since is not None and time.monotonic() - missing_since < NAMELESS_RECHECK \
                and self.hub.reachability(node) is None:
            return
        proxy = self._probes.get(node)
        if proxy is None:
            proxy = Proxy(f"PYRONAME:{object_name(node, 'agent')}@{self._ns}")
            proxy._pyroTimeout = PROBE_TIMEOUT
            self._probes[node] = proxy
        proxy._pyroClaimOwnership()  # each run may probe this node from another pool thread
        try:
            health = proxy.fleet_health()
        except pyro_errors.NamingError:
            proxy._pyroRelease()
            self._nameless[node] = time.monotonic()
            return
        except (pyro_errors.CommunicationError, OSError):
            proxy._pyroRelease()
            self._probes.pop(node, None)  # re-resolve: a restarted agent has a new port
            self.hub.set_reachable(node, False)
            return
        self._nameless.pop(node, None)
        self.hub.set_reachable(node, True, health)

    def close(self) -> None:
        """Stop the probe threads (after the scheduler stopped calling run())."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for proxy in self._probes.values():
            proxy._pyroClaimOwnership()  # last used by a pool thread
            proxy._pyroRelease()
