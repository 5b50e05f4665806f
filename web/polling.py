"""Cached reads of many spokes' actors for the page and /metrics: LED strips, buzzers, pings, plugins.

A request never waits long on a dead spoke: when the answers are older than `ttl` it starts
one background refresh (only one at a time) and waits at most FRESH_WAIT for it, else it
gets the previous answers. Only the very first request waits for the bounded poll timeout,
and only if it is patient (the dashboard's live update is, in its first build only)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from web.http import ApiError
from web.upstream import MARGIN, Upstream

log = logging.getLogger(__name__)
FRESH_WAIT = 0.25  # seconds a request waits for a refresh it started (a dead spoke costs no more)
# Calls a second one poller may make on average: a refresh of n nodes is not started again
# within n / MAX_CALLS_PER_S seconds, whatever its ttl. At 1000 spokes with LED strips and
# buzzers, polling each every second (2,000 calls a second with the pings) took 7 % of the hub's
# core and pushed /api/readings' p99 past 50 ms (bench/loadgen.py --actuators); bounded, a page
# shows their states up to 5 s old at that size, and as before up to 200 nodes.
MAX_CALLS_PER_S = 200.0
Result = dict[str, Any]  # {"ok": True, "value": ..., "seconds": rtt} or {"ok": False, "error": "..."}


class StatePoller:
    """One read-only method (e.g. `leds.state`) on many nodes, answered from a cache at most `ttl` s
    old (or n / MAX_CALLS_PER_S s for n nodes, when that is longer)."""

    def __init__(self, upstream: Upstream, actor: str, method: str, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream, self.actor, self.method, self.ttl = upstream, actor, method, ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, Result] = {}
        self._at: float | None = None
        self._nodes: frozenset[str] = frozenset()
        self._refreshing = False
        self._done = threading.Event()
        self._put_at: dict[str, float] = {}

    def get(self, nodes: list[str] | set[str], patient: bool = True) -> dict[str, Result]:
        """The latest answer of every node in `nodes` (missing ones only on the very first call).

        `patient=False`: a call that finds none of `nodes` answered yet waits for the refresh it
        starts no longer than any call does (FRESH_WAIT), and returns without the answers still
        missing (that refresh fills them in for the next call), instead of waiting up to the poll
        timeout for them."""
        wanted = frozenset(nodes)
        if not wanted:
            return {}
        ttl = max(self.ttl, len(wanted) / MAX_CALLS_PER_S)
        with self._lock:
            stale = self._at is None or self._clock() - self._at >= ttl or not wanted <= self._nodes
            first = not (wanted & set(self._cache))
            start = stale and not self._refreshing
            if start:
                self._refreshing = True
                self._done.clear()
            done = self._done
        if start:
            threading.Thread(target=self._refresh, args=(wanted, self._clock()), name=f"poll-{self.actor}",
                             daemon=True).start()
        if first and patient:
            done.wait(self.upstream.poll_timeout + 2 * MARGIN)
        elif start:
            done.wait(FRESH_WAIT)  # live spokes answer in a few ms: then this answer is fresh, not one round late
        with self._lock:
            return {n: self._cache[n] for n in wanted if n in self._cache}

    def put(self, node: str, value: Any) -> None:
        """A command's answer is the freshest state there is."""
        with self._lock:
            self._cache[node] = {"ok": True, "value": value, "seconds": None}
            self._put_at[node] = self._clock()

    def _refresh(self, nodes: frozenset[str], started: float) -> None:
        """Ask every node in parallel; only the nodes asked for now stay cached (a removed node is dropped)."""
        results: dict[str, Result] = {}
        try:
            futures = {}
            for node in sorted(nodes):
                try:
                    futures[node] = self.upstream.submit(node, self.actor, self.method, poll=True, timed=True)
                except ApiError as exc:
                    results[node] = {"ok": False, "error": exc.message}
                except RuntimeError as exc:  # the pool is shut down: the app is stopping
                    results[node] = {"ok": False, "error": str(exc)}
            for node, future in futures.items():
                try:
                    value, seconds = self.upstream.result(future, node, self.actor, poll=True)
                    results[node] = {"ok": True, "value": value, "seconds": seconds}
                except ApiError as exc:
                    results[node] = {"ok": False, "error": exc.message}
        finally:
            with self._lock:
                # a command answered after this refresh started knows better than the refresh
                fresh = {n: r for n, r in results.items() if self._put_at.get(n, float("-inf")) < started}
                self._cache = {**{n: r for n, r in self._cache.items() if n in nodes}, **fresh}
                self._at, self._nodes = self._clock(), nodes
                self._refreshing = False
                self._done.set()
