"""Drain a spoke's outbox to the hub's aggregator, in order, deleting only what the hub acknowledged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5.api import Proxy

from actors.spoke.outbox import Outbox
from nameserver.pyro import CALL_TIMEOUT
from nameserver.registry import find_aggregator, ns_uri

log = logging.getLogger(__name__)
PUSH_CALLS_PER_RUN = 20  # bounds one push run; a backlog drains over consecutive runs


class Pusher:
    """One push run at a time (the scheduler's max_instances=1 makes sure of it)."""

    def __init__(self, node: str, outbox: Outbox, ns_host: str, ns_port: int, hub_name: str | None,
                 batch_limit: int, hello_info: Callable[[], dict[str, Any]]) -> None:
        self.node = node
        self.outbox = outbox
        self._ns_uri = ns_uri(ns_host, ns_port)
        self._hub_name = hub_name
        self._batch_limit = batch_limit
        self._hello_info = hello_info
        self._agg_uri: str | None = None
        self._hello_done = False
        self._failing = False

    def _aggregator(self) -> Proxy:
        """A new proxy to the hub's aggregator for one push run.

        The name is resolved once and cached; the connection is not kept between runs, so
        a hub with hundreds of spokes holds no idle connections (Pyro5's thread server
        refuses connections beyond its pool)."""
        if self._agg_uri is None:
            with Proxy(self._ns_uri) as ns:
                ns._pyroTimeout = CALL_TIMEOUT
                self._agg_uri = find_aggregator(ns, self._hub_name)[1]
        proxy = Proxy(self._agg_uri)
        proxy._pyroTimeout = CALL_TIMEOUT
        return proxy

    def push_once(self) -> int:
        """Drain the outbox to the hub in order; returns batches acknowledged in this run."""
        acked_total = 0
        self.outbox.retry()  # batches held in memory while the disk was full go to disk first
        try:
            with self._aggregator() as agg:
                acked_total = self._drain(agg)
        except Exception as exc:  # the hub down, unreachable, or refusing (disk full): keep the outbox
            self._hello_done = False
            if isinstance(exc, pyro_errors.CommunicationError | pyro_errors.NamingError | OSError):
                self._agg_uri = None  # the hub may have restarted on another port
            if not self._failing:
                log.warning("push to hub failed, readings stay in the outbox: %s: %s", type(exc).__name__, exc)
            self._failing = True
            return acked_total
        if self._failing:
            log.info("push to hub works again")
        self._failing = False
        return acked_total

    def _drain(self, agg: Proxy) -> int:
        """Hello if needed, then push batches until the outbox is empty or the run's bound is hit."""
        acked_total = 0
        batches = self.outbox.peek(self._batch_limit)
        if not self._hello_done or not batches:
            # hello doubles as the heartbeat when there is nothing to push
            answer = agg.hello(self._hello_info(), time.time())
            self.outbox.ensure_after(int(answer.get("last_seq", 0)))
            self._hello_done = True
        for _ in range(PUSH_CALLS_PER_RUN):
            if not batches:
                break
            answer = agg.push(batches, time.time())
            self.outbox.ack(answer["acked"])
            acked_total += len(answer["acked"])
            if self.node in answer.get("hello", []):
                self._hello_done = False  # the hub restarted and forgot us
            if len(batches) < self._batch_limit:
                break
            batches = self.outbox.peek(self._batch_limit)
        return acked_total
