"""Several hubs: each copies from its peers the batches it lacks (anti-entropy), so a hub
that was down, frozen or cut off catches up by itself, and says how far behind each hub is.

A batch (node, seq) never changes, so copying needs no agreement: a hub asks each peer what
it holds (a few intervals of seqs per node, actors.hub.holdings), fetches what it lacks, and
stores it exactly as a push (idempotent on (node, seq)). Every hub pulls; none pushes to
another, so a hub only ever writes what it chose to ask for, from the hubs its config names."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5.api import Proxy

from actors.base import Actor, CallGate, remote
from actors.hub.holdings import SeqSet, check_intervals
from actors.hub.state import Hub
from nameserver.pyro import CALL_TIMEOUT
from nameserver.registry import home_tag, ns_uri

log = logging.getLogger(__name__)
SYNC_INTERVAL_S = 2.0  # how often a hub compares holdings with each peer
FETCH_BATCHES = 200  # batches per fetch call (about 100 kB for batches of ten readings)
FETCH_PER_ROUND = 5000  # batches copied from one peer per round: a long catch-up takes several rounds
PEER_TAGS = frozenset({"role:hub", "kind:peer"})


class PeerActor(Actor):
    """`harvester.<hub>.peer`: what a hub tells its peers (read only: nothing here writes)."""

    kind = "peer"

    def __init__(self, node: str, replica: Replica, tags: set[str]) -> None:
        super().__init__(node, "peer", role="hub", tags=tags, gate=CallGate(concurrency=4, max_waiting=8))
        self.replica = replica

    @remote
    def exchange(self, hub: str, holdings: dict[str, Any], known: list[str]) -> dict[str, Any]:
        """A peer's holdings for this hub's: answers this hub's holdings, the nodes the peer does
        not know yet, and how far behind this hub finds the peer (seconds)."""
        return self.replica.answer(hub, holdings, known)

    @remote
    def batches(self, node: str, intervals: list[Any], limit: int = FETCH_BATCHES) -> list[Any]:
        """Up to `limit` held batches of `node` within the intervals, as (seq, rows JSON, alerts JSON)."""
        return self.replica.hub.store.fetch_batches(str(node), check_intervals(intervals),
                                                    max(1, min(int(limit), FETCH_BATCHES)))


@dataclass
class PeerLink:
    """What this hub knows of one peer, from the last exchange with it."""

    address: tuple[str, int]  # the peer's name server
    name: str | None = None
    uri: str | None = None
    holdings: dict[str, SeqSet] = field(default_factory=dict)
    ok_at: float | None = None  # last successful exchange (monotonic)
    lag_s: float = 0.0  # how far behind the peer is, by this hub's holdings
    my_lag_s: float | None = None  # how far behind the peer finds this hub
    error: str | None = None
    copied: int = 0


class Replica:
    """Anti-entropy with every peer hub, one scheduler job per peer (a frozen peer stalls only its own)."""

    def __init__(self, hub: Hub, name: str, own: tuple[str, int], peers: list[tuple[str, int]]) -> None:
        self.hub = hub
        self.name = name
        self.home = home_tag(*own)
        self.links = {addr: PeerLink(addr) for addr in peers}
        self._lock = threading.Lock()

    # -- serving a peer -------------------------------------------------------------------
    def answer(self, peer: str, holdings: Any, known: Any) -> dict[str, Any]:
        """The callee's side of an exchange."""
        theirs = _holdings(holdings)
        mine = self.hub.store.holdings()
        known_set = {k for k in known if isinstance(k, str)} if isinstance(known, list) else set()
        if isinstance(peer, str):
            self.hub.peer_seen(peer)
        return {"hub": self.name, "holdings": mine, "lag_s": self._lag(mine, theirs),
                "nodes": self.hub.node_infos(set(mine) - known_set)}

    def _lag(self, mine: dict[str, list[tuple[int, int]]], theirs: dict[str, SeqSet]) -> float:
        """Age (s) of the oldest batch this hub holds that `theirs` lacks; 0 when it lacks none."""
        oldest = None
        floors = self.hub.store.floors()
        for node, intervals in mine.items():
            lacking = (theirs.get(node) or SeqSet()).missing_from(intervals, floors.get(node, 0))
            if lacking:
                t = self.hub.store.oldest_received(node, lacking)
                if t is not None and (oldest is None or t < oldest):
                    oldest = t
        return 0.0 if oldest is None else round(max(0.0, time.time() - oldest), 1)

    # -- pulling from a peer --------------------------------------------------------------
    def _proxy(self, link: PeerLink) -> Proxy:
        if link.uri is None:
            with Proxy(ns_uri(*link.address)) as ns:
                ns._pyroTimeout = CALL_TIMEOUT
                found = ns.yplookup(meta_all=set(PEER_TAGS) | {home_tag(*link.address)}, return_metadata=False)
            if not found:
                raise pyro_errors.NamingError(f"no hub's peer object is registered at {link.address[0]}:"
                                              f"{link.address[1]} (is that hub running?)")
            link.uri = str(next(iter(found.values())))
        proxy = Proxy(link.uri)
        proxy._pyroTimeout = CALL_TIMEOUT
        return proxy

    def sync(self, address: tuple[str, int]) -> int:
        """One round with one peer: exchange holdings, copy what this hub lacks; returns batches copied."""
        link = self.links[address]
        mine = self.hub.store.holdings()
        try:
            with self._proxy(link) as peer:
                answer = peer.exchange(self.name, mine, self.hub.node_names())
                self.hub.learn_nodes(answer.get("nodes"))
                theirs = _holdings(answer.get("holdings"))
                copied = self._copy(peer, theirs)
        except Exception as exc:  # the peer down, frozen, cut off, or answering nonsense
            if isinstance(exc, pyro_errors.CommunicationError | pyro_errors.NamingError | OSError):
                link.uri = None  # it may come back on another port
            if link.error is None:
                log.warning("hub peer %s:%d unreachable, its copy falls behind: %s: %s", *address,
                            type(exc).__name__, exc)
            with self._lock:
                link.error = f"{type(exc).__name__}: {exc}"
                link.lag_s = self._lag(mine, link.holdings)  # measured against what it last held
            return 0
        if link.error is not None:
            log.info("hub peer %s:%d answers again", *address)
        name = answer.get("hub") if isinstance(answer.get("hub"), str) else None
        if name:
            self.hub.peer_seen(name)
        mine = self.hub.store.holdings()
        lag = self._lag(mine, theirs)
        my_lag = answer.get("lag_s")
        with self._lock:
            link.name, link.holdings, link.ok_at, link.error = name, theirs, time.monotonic(), None
            link.lag_s = lag
            link.my_lag_s = float(my_lag) if isinstance(my_lag, (int, float)) and not isinstance(my_lag, bool) else None
            link.copied += copied
        return copied

    def _copy(self, peer: Proxy, theirs: dict[str, SeqSet]) -> int:
        copied = 0
        for node, held in theirs.items():
            missing = self.hub.store.missing(node, held.intervals())
            while missing and copied < FETCH_PER_ROUND:
                fetched = peer.batches(node, missing, FETCH_BATCHES)
                if not fetched:
                    break
                self.hub.ingest_peer(node, [tuple(f) for f in fetched])
                copied += len(fetched)
                missing = self.hub.store.missing(node, missing)
        return copied

    # -- the view -------------------------------------------------------------------------
    def peers(self) -> list[dict[str, Any]]:
        """Each peer: name, name-server address, reachable, lag (s), last error, batches copied."""
        now = time.monotonic()
        with self._lock:
            return [{"name": link.name, "address": f"{link.address[0]}:{link.address[1]}",
                     "reachable": link.error is None and link.ok_at is not None
                                  and now - link.ok_at < 3 * SYNC_INTERVAL_S + CALL_TIMEOUT,
                     "lag_s": link.lag_s, "error": link.error, "copied": link.copied}
                    for link in self.links.values()]

    def own_lag(self) -> float:
        """How far behind this hub is: the largest lag its reachable peers find in it."""
        with self._lock:
            lags = [link.my_lag_s for link in self.links.values() if link.error is None and link.my_lag_s is not None]
        return max(lags, default=0.0)


def _holdings(value: Any) -> dict[str, SeqSet]:
    """A peer's holdings, checked: {node: [[lo, hi], ...]}."""
    if not isinstance(value, dict):
        raise ValueError("holdings must be a mapping of node to [lo, hi] intervals")
    return {node: SeqSet(check_intervals(intervals)) for node, intervals in value.items() if isinstance(node, str)}
