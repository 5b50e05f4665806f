"""REPL and script client: `fleet = connect("127.0.0.1"); fleet["pi4"]["dht22"].read()`.

Handles keep unbound PYRONAME proxies, one per thread, always with a call timeout.
Reads are retried with backoff; actuator commands never are (a retried beep beeps twice).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5.api import Proxy

from actors.errors import UnknownActor  # importing it also registers typed remote errors
from hal.names import PREFIX, object_name
from nameserver.pyro import CALL_TIMEOUT, configure
from nameserver.registry import ns_uri
from nameserver.security import TlsFiles, use_client_tls

# Methods safe to repeat: they only read.
IDEMPOTENT = frozenset({"ping", "health", "describe", "info", "read", "latest", "state", "readings",
                        "nodes", "fleet_health", "list", "status"})
RETRYABLE = (pyro_errors.CommunicationError, pyro_errors.NamingError)
IDLE_RECONNECT_S = 10.0  # well under the daemons' COMMTIMEOUT (actors/pyro.py)


class ActorHandle:
    """A remote actor: call its methods like local ones; `help()` prints their docs."""

    def __init__(self, name: str, ns_host: str, ns_port: int, timeout: float = CALL_TIMEOUT,
                 retries: int = 2) -> None:
        self.name = name
        self._uri = f"PYRONAME:{name}@{ns_host}:{ns_port}"
        self._timeout = timeout
        self._retries = retries
        self._local = threading.local()

    def _proxy(self) -> Proxy:
        proxy = getattr(self._local, "proxy", None)
        idle = time.monotonic() - getattr(self._local, "used", 0.0)
        if proxy is not None and idle > IDLE_RECONNECT_S:
            # the daemon drops a connection silent for COMMTIMEOUT; a command on it would fail
            # and is never retried, so reconnect before the daemon's limit, not after
            self._drop()
            proxy = None
        if proxy is None:
            proxy = Proxy(self._uri)
            proxy._pyroTimeout = self._timeout
            self._local.proxy = proxy
        self._local.used = time.monotonic()
        return proxy

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` remotely; reads are retried on connection errors, commands are not."""
        attempts = 1 + (self._retries if method in IDEMPOTENT else 0)
        delay = 0.2
        for attempt in range(attempts):
            try:
                return getattr(self._proxy(), method)(*args, **kwargs)
            except RETRYABLE:
                self._drop()
                if attempt + 1 == attempts:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        proxy = getattr(self._local, "proxy", None)
        if proxy is not None:
            proxy._pyroRelease()
        self._local.proxy = None

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.call(method, *args, **kwargs)

    def __dir__(self) -> list[str]:
        try:
            return sorted(self.call("describe"))
        except RETRYABLE:
            return ["ping", "health", "describe"]

    def help(self) -> None:
        """Print every remote method with its docstring."""
        for line in self.call("describe").values():
            print(line)

    def __repr__(self) -> str:
        return f"<actor {self.name}>"


class NodeHandle:
    """The actors of one node, by actor name."""

    def __init__(self, fleet: Fleet, node: str) -> None:
        self._fleet = fleet
        self.node = node

    def actors(self) -> list[str]:
        """Actor names registered for this node."""
        prefix = f"{PREFIX}.{self.node}."
        return sorted(n[len(prefix):] for n in self._fleet.names() if n.startswith(prefix))

    def __getitem__(self, actor: str) -> ActorHandle:
        return self._fleet.actor(object_name(self.node, actor))

    def __getattr__(self, actor: str) -> ActorHandle:
        if actor.startswith("_"):
            raise AttributeError(actor)
        return self[actor]

    def __dir__(self) -> list[str]:
        return self.actors()

    def _ipython_key_completions_(self) -> list[str]:
        return self.actors()

    def __repr__(self) -> str:
        return f"<node {self.node}: {', '.join(self.actors())}>"


class Fleet:
    """Every node registered in one name server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9090, timeout: float = CALL_TIMEOUT,
                 tls: TlsFiles | None = None) -> None:
        configure()
        self.tls = use_client_tls(tls)  # process-wide in Pyro5: files, else $HARVESTER_TLS_*, else as is
        self.host, self.port, self.timeout = host, port, timeout
        self._handles: dict[str, ActorHandle] = {}
        self._lock = threading.Lock()

    def names(self, meta_all: set[str] | None = None) -> dict[str, str]:
        """Registered Harvester names (optionally filtered by metadata tags) -> URI."""
        with Proxy(ns_uri(self.host, self.port)) as ns:
            ns._pyroTimeout = self.timeout
            if meta_all:
                found = ns.yplookup(meta_all=meta_all, return_metadata=False)
                return {k: v for k, v in found.items() if k.startswith(PREFIX + ".")}
            return ns.list(prefix=PREFIX + ".")

    def listing(self) -> dict[str, tuple[str, list[str]]]:
        """Registered names -> (URI, sorted metadata tags)."""
        with Proxy(ns_uri(self.host, self.port)) as ns:
            ns._pyroTimeout = self.timeout
            found = ns.list(prefix=PREFIX + ".", return_metadata=True)
        return {name: (str(uri), sorted(meta)) for name, (uri, meta) in found.items()}

    def nodes(self) -> list[str]:
        """Node names that have at least one registered actor."""
        return sorted({n.split(".")[1] for n in self.names()})

    def actor(self, name: str) -> ActorHandle:
        """A handle for `harvester.<node>.<actor>` (created once, shared across threads)."""
        with self._lock:
            handle = self._handles.get(name)
            if handle is None:
                handle = self._handles[name] = ActorHandle(name, self.host, self.port, self.timeout)
            return handle

    def __getitem__(self, node: str) -> NodeHandle:
        return NodeHandle(self, node)

    def __getattr__(self, node: str) -> NodeHandle:
        if node.startswith("_"):
            raise AttributeError(node)
        return NodeHandle(self, node)

    def __dir__(self) -> list[str]:
        return [*self.nodes(), "actor", "names", "nodes", "listing"]

    def _ipython_key_completions_(self) -> list[str]:
        return self.nodes()

    def __repr__(self) -> str:
        return f"<fleet at {self.host}:{self.port}: {', '.join(self.nodes())}>"


def connect(host: str = "127.0.0.1", port: int = 9090, timeout: float = CALL_TIMEOUT,
            tls: TlsFiles | None = None) -> Fleet:
    """A handle on the fleet whose name server runs at host:port (mutual TLS with `tls` or $HARVESTER_TLS_*)."""
    return Fleet(host, port, timeout, tls)


def get_actor(name: str, timeout: float = 30.0, host: str = "127.0.0.1", port: int = 9090,
              call_timeout: float = CALL_TIMEOUT, tls: TlsFiles | None = None) -> ActorHandle:
    """Wait until `name` is registered and answers ping, retrying with backoff; UnknownActor after `timeout`."""
    fleet = Fleet(host, port, call_timeout, tls)
    deadline = time.monotonic() + timeout
    delay, last = 0.1, "not tried"
    while True:
        handle = fleet.actor(name)
        try:
            handle.call("ping")
            return handle
        except RETRYABLE as exc:
            handle._drop()
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + delay > deadline:
            raise UnknownActor(f"{name} did not answer within {timeout}s ({last})")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
