"""Drain a spoke's outbox to the hubs' aggregators, in order, deleting only what the hubs acknowledged.

With one hub a batch is deleted once that hub acknowledged its commit. With several, each
hub has its own link (its own job, so a frozen hub stalls only its link), every link pushes
every batch, and a batch is deleted once a majority of the hubs has committed it: the hubs
that missed it copy it from a peer (actors.hub.replica). Without a majority the batches stay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5.client import Proxy

from actors.errors import BadRequest
from actors.spoke.outbox import Outbox
from nameserver.pyro import CALL_TIMEOUT, disown, release
from nameserver.registry import find_aggregator, home_tag, ns_uri

log = logging.getLogger(__name__)
PUSH_CALLS_PER_RUN = 20  # bounds one push run; a backlog drains over consecutive runs


class HubLink:
    """One hub as a spoke sees it: where its aggregator is, and how far it has acknowledged."""

    def __init__(self, host: str, port: int, hub_name: str | None, several: bool) -> None:
        self.address = f"{host}:{port}"
        self.ns_uri = ns_uri(host, port)
        # with several hubs every name server holds every hub's aggregator: take the one living here
        self.hub_name = None if several else hub_name
        self.home = home_tag(host, port) if several else None
        self.agg_uri: str | None = None
        self.hello_done = False
        self.declared: Any = None  # the quantities this hub was last told about
        self.failing = False
        self.acked = 0  # every outbox batch up to this seq is committed on this hub (this process's view)
        self.proxy: Proxy | None = None  # the connection kept between push runs

    def drop(self) -> None:
        """Close the kept connection (the next run opens a new one)."""
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            release(proxy)


class Pusher:
    """One push run per hub at a time (the scheduler's max_instances=1 makes sure of it)."""

    def __init__(self, node: str, outbox: Outbox, hubs: list[tuple[str, int]], hub_name: str | None,
                 batch_limit: int, hello_info: Callable[[], dict[str, Any]]) -> None:
        self.node = node
        self.outbox = outbox
        self.links = [HubLink(host, port, hub_name, len(hubs) > 1) for host, port in hubs]
        self.majority = len(hubs) // 2 + 1
        self._batch_limit = batch_limit
        self._hello_info = hello_info
        self._lock = threading.Lock()

    def _aggregator(self, link: HubLink) -> tuple[Proxy, bool]:
        """The proxy to a hub's aggregator, and whether its connection was kept from an earlier run.

        The name is resolved once and cached, and the connection is kept between runs: a new
        one costs the hub an accept and a Pyro5 handshake (under TLS, a TLS handshake too) for
        every push of every spoke. The hub's transport holds an idle connection as a file
        descriptor, not a thread, and closes one idle for a minute."""
        if link.proxy is not None:
            link.proxy._pyroClaimOwnership()
            return link.proxy, True
        if link.agg_uri is None:
            with Proxy(link.ns_uri) as ns:
                ns._pyroTimeout = CALL_TIMEOUT
                link.agg_uri = find_aggregator(ns, link.hub_name, link.home)[1]
        link.proxy = Proxy(link.agg_uri)
        link.proxy._pyroTimeout = CALL_TIMEOUT
        return link.proxy, False

    def push_once(self) -> int:
        """Push to every hub in turn; returns the batches deleted from the outbox in this run."""
        return sum(self.push_to(i) for i in range(len(self.links)))

    def push_to(self, index: int) -> int:
        """Drain the outbox to one hub in order; returns the batches this run deleted from the outbox."""
        link = self.links[index]
        self.outbox.retry()  # batches held in memory while the disk was full go to disk first
        try:
            return self._push_to(link)
        finally:
            if link.proxy is not None:  # the next run may come on another scheduler thread
                disown(link.proxy)

    def _push_to(self, link: HubLink) -> int:
        try:
            agg, kept = self._aggregator(link)
            try:
                deleted = self._drain(link, agg)
            except pyro_errors.ConnectionClosedError:
                if not kept:
                    raise
                # the hub closed the kept connection (idle too long, or it restarted): a push is
                # idempotent, so the run starts again on a new connection. A timeout is not
                # retried: a hub that hangs would hold the run for twice the call timeout.
                link.drop()
                link.hello_done = False
                agg, _ = self._aggregator(link)
                deleted = self._drain(link, agg)
        except Exception as exc:  # the hub down, unreachable, or refusing (disk full): keep the outbox
            link.hello_done = False
            link.drop()
            if isinstance(exc, pyro_errors.CommunicationError | pyro_errors.NamingError | OSError):
                link.agg_uri = None  # the hub may have restarted on another port
            if not link.failing:
                where = f" at {link.address}" if len(self.links) > 1 else ""
                log.warning("push to hub%s failed, readings stay in the outbox: %s: %s", where,
                            type(exc).__name__, exc)
            link.failing = True
            return 0
        if link.failing:
            log.info("push to hub%s works again", f" at {link.address}" if len(self.links) > 1 else "")
        link.failing = False
        return deleted

    def _drain(self, link: HubLink, agg: Proxy) -> int:
        """Hello if needed, then push batches until the outbox is empty or the run's bound is hit."""
        deleted = 0
        batches = self.outbox.peek(self._batch_limit, after=link.acked)
        info = self._hello_info()
        # hello doubles as the heartbeat when there is nothing to push; it goes first, too, when
        # the node declares new quantities (a plugin loaded), or the hub would refuse their readings
        if not link.hello_done or not batches or info.get("quantities") != link.declared:
            answer = agg.hello(info, time.time())
            self.outbox.ensure_after(int(answer.get("last_seq", 0)))
            link.hello_done = True
            link.declared = info.get("quantities")
        for _ in range(PUSH_CALLS_PER_RUN):
            if not batches:
                break
            answer = self._push(agg, batches)
            acked = [int(s) for s in answer["acked"]]
            if len(self.links) == 1:
                self.outbox.ack(acked)
                deleted += len(acked)
            elif acked:
                deleted += self._settle(link, max(acked))
            if self.node in answer.get("hello", []):
                link.hello_done = False  # the hub restarted and forgot us
            if len(batches) < self._batch_limit:
                break
            batches = self.outbox.peek(self._batch_limit, after=link.acked)
        return deleted

    def _push(self, agg: Proxy, batches: list[dict[str, Any]]) -> dict[str, Any]:
        """agg.push(); when the hub refuses the call (all or nothing), push the batches one at a
        time to find the one it refuses and set that one aside (Outbox.reject): retried as it is,
        it would be refused again and hold back every batch behind it."""
        try:
            return agg.push(batches, time.time())
        except BadRequest as exc:
            if len(batches) == 1:
                self.outbox.reject(batches[0]["seq"], str(exc))
                return {"acked": [], "hello": []}
        answer: dict[str, Any] = {"acked": [], "hello": []}
        for batch in batches:
            try:
                one = agg.push([batch], time.time())
            except BadRequest as exc:
                self.outbox.reject(batch["seq"], str(exc))
                break
            answer["acked"] += one["acked"]
            answer["hello"] += one.get("hello", [])
        return answer

    def _settle(self, link: HubLink, acked_upto: int) -> int:
        """Record how far this hub acknowledged; delete what a majority of the hubs now holds."""
        with self._lock:
            link.acked = max(link.acked, acked_upto)
            marks = sorted((lk.acked for lk in self.links), reverse=True)
            upto = marks[self.majority - 1]
        return self.outbox.ack_upto(upto) if upto else 0

    def close(self) -> None:
        """Close the kept connections."""
        for link in self.links:
            link.drop()

    def links_state(self) -> list[dict[str, Any]]:
        """Each hub link: its address, whether pushing to it works, and how far it acknowledged."""
        return [{"hub": lk.address, "ok": not lk.failing, "acked_seq": lk.acked} for lk in self.links]
