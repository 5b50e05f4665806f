"""Keep a node's names registered: on start, and in periodic sweeps that repopulate a
restarted name server."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from Pyro5 import errors
from Pyro5.client import Proxy

from hal.names import PREFIX, object_name
from nameserver.pyro import disown, release

log = logging.getLogger(__name__)


# What an aggregator is, whatever its hub is called: the tags every hub registers it with.
AGGREGATOR_TAGS = frozenset({"role:hub", "kind:aggregator"})


class HubNotFound(errors.NamingError):
    """The name server knows no aggregator to use (none, or several and no hub name given)."""


def home_tag(host: str, port: int) -> str:
    """The tag a hub gives its objects naming its own name server: with several hubs every
    name server holds every hub's objects, and this tells which hub lives at which address."""
    return f"ns:{host}:{port}"


def find_aggregator(ns: Any, hub_name: str | None, home: str | None = None) -> tuple[str, str]:
    """(name, URI) of the hub's aggregator: by the hub's node name when given, else by its tags.

    Looking it up by what it is lets a hub have any valid name; a name server that holds
    several hubs' aggregators needs the name (or `home`, the home_tag of the hub wanted), and
    this says so rather than guess."""
    if hub_name:
        name = object_name(hub_name, "aggregator")
        return name, str(ns.lookup(name))
    found = ns.yplookup(meta_all=set(AGGREGATOR_TAGS) | ({home} if home else set()), return_metadata=False)
    if not found:
        raise HubNotFound("no hub aggregator is registered in the name server (is the hub running?)")
    if len(found) > 1:
        hubs = ", ".join(sorted(n.split(".")[1] for n in found))
        raise HubNotFound(f"several hubs are registered ({hubs}): set hub.name in this node's config")
    name, uri = next(iter(found.items()))
    return name, str(uri)


def ns_uri(host: str, port: int) -> str:
    """A direct URI for the name server (no broadcast lookup)."""
    return f"PYRO:Pyro.NameServer@{host}:{port}"


def own_prefix(names: list[str]) -> str:
    """The dotted prefix the names share (`harvester.pi4.` for a node's actors), or `harvester.`."""
    common = os.path.commonprefix(names) if names else ""
    return common[:common.rfind(".") + 1] if common.count(".") >= 2 else f"{PREFIX}."


@dataclass(frozen=True)
class Registration:
    """One name the node owns, with its URI and metadata tags."""

    name: str
    uri: str
    metadata: frozenset[str]


class Registrar:
    """Registers a node's names in every hub's name server, again whenever a sweep runs."""

    def __init__(self, addresses: list[tuple[str, int]], timeout: float = 3.0) -> None:
        self._uris = [ns_uri(host, port) for host, port in addresses]
        self._timeout = timeout
        self._lock = threading.Lock()
        self._entries: dict[str, Registration] = {}
        self._healthy: dict[str, bool] = {}
        self._sweeping = threading.Lock()  # the periodic sweep and the first-registration retry may overlap
        # name server URI -> the connection kept between sweeps (used under _sweeping)
        self._proxies: dict[str, Proxy] = {}
        self.sweeps = 0

    def add(self, name: str, uri: str, metadata: set[str]) -> None:
        """Remember a name to keep registered (registered at the next sweep).

        The name is interned: msgpack interns the keys of every map it decodes, so each sweep's
        listing would otherwise put this node's names into the interpreter's table of interned
        strings and take them out again. That churn grows the table by half a megabyte on the
        first rebuild it forces, about 27 minutes into a node's life."""
        name = sys.intern(name)
        with self._lock:
            self._entries[name] = Registration(name, str(uri), frozenset(metadata))

    def names(self) -> list[str]:
        """Names this node keeps registered."""
        with self._lock:
            return sorted(self._entries)

    def sweep(self) -> bool:
        """Register every name whose entry is missing or different, in every name server; True
        when at least one answered (a hub that is down gets them at a later sweep)."""
        with self._lock:
            entries = list(self._entries.values())
        with self._sweeping:
            answered = [self._sweep_one(uri, entries) for uri in self._uris]
            if any(answered):
                self.sweeps += 1
        return any(answered)

    def _sweep_one(self, uri: str, entries: list[Registration]) -> bool:
        healthy = self._healthy.get(uri)
        try:
            self._on(uri, lambda ns: self._register(ns, entries))
        except errors.SecurityError as exc:
            self._drop(uri)
            # Under TLS the name server accepts only this node's own names from its node certificate.
            if healthy is not False:
                log.error("name server %s refused our registrations: %s", uri, exc)
            self._healthy[uri] = False
            return False
        except (errors.CommunicationError, errors.NamingError, OSError) as exc:
            self._drop(uri)
            if healthy is not False:
                log.warning("name server %s unreachable, will retry: %s", uri, exc)
            self._healthy[uri] = False
            return False
        if healthy is False:
            log.info("name server %s reachable again; %d names registered", uri, len(entries))
        self._healthy[uri] = True
        return True

    def _on(self, uri: str, action: Callable[[Proxy], None]) -> None:
        """(under _sweeping) Run `action` on the name server's connection. When the name server
        closed a kept one (it restarted, or the connection sat idle past its limit) the action
        runs again on a new one: registering and removing names are idempotent."""
        ns, kept = self._proxy(uri)
        try:
            action(ns)
        except errors.ConnectionClosedError:
            if not kept:
                raise
            self._drop(uri)
            action(self._proxy(uri)[0])
        finally:
            if uri in self._proxies:  # each sweep may run on another scheduler thread
                disown(self._proxies[uri])

    def _proxy(self, uri: str) -> tuple[Proxy, bool]:
        """(under _sweeping) The connection to a name server, and whether it was kept from an
        earlier sweep. A new connection every sweep cost the hub an accept and a Pyro5
        handshake (under TLS, a TLS handshake too) per spoke every register_interval."""
        ns = self._proxies.get(uri)
        if ns is not None:
            ns._pyroClaimOwnership()
            return ns, True
        ns = self._proxies[uri] = Proxy(uri)
        ns._pyroTimeout = self._timeout
        return ns, False

    def _drop(self, uri: str) -> None:
        """(under _sweeping) Close a name server's kept connection; the next sweep opens a new one."""
        ns = self._proxies.pop(uri, None)
        if ns is not None:
            release(ns)

    @staticmethod
    def _register(ns: Proxy, entries: list[Registration]) -> None:
        # only this node's names: the whole fleet's listing is ten entries a spoke, and every
        # spoke sweeps every few seconds
        current = ns.list(prefix=own_prefix([e.name for e in entries]), return_metadata=True)
        for e in entries:
            have = current.get(e.name)
            if have is None or have[0] != e.uri or set(have[1]) != set(e.metadata):
                ns.register(e.name, e.uri, metadata=set(e.metadata))

    def _remove_all(self, ns: Proxy) -> None:
        for name in self.names():
            ns.remove(name)

    def unregister_all(self) -> None:
        """Remove this node's names (clean shutdown) and close the kept connections; failures are
        logged, not raised."""
        with self._sweeping:
            for uri in self._uris:
                try:
                    self._on(uri, self._remove_all)
                except (errors.CommunicationError, errors.NamingError, errors.SecurityError, OSError) as exc:
                    log.info("could not unregister names at %s on shutdown: %s", uri, exc)
                finally:
                    self._drop(uri)
