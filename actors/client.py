"""REPL and script client: `fleet = connect("127.0.0.1"); fleet["pi4"]["dht22"].read()`.

Handles keep one proxy per thread, resolved through the name server with the call timeout.
Reads are retried with backoff; actuator commands never are (a retried beep beeps twice).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from Pyro5 import errors as pyro_errors
from Pyro5.client import Proxy

from actors.errors import UnknownActor  # importing it also registers typed remote errors
from hal.names import PREFIX, object_name
from nameserver.pyro import CALL_TIMEOUT, configure
from nameserver.registry import ns_uri
from nameserver.security import TlsFiles, use_client_tls

# Methods safe to repeat: they only read.
IDEMPOTENT = frozenset({"ping", "health", "describe", "info", "read", "latest", "state", "readings",
                        "nodes", "fleet_health", "list", "status"})
RETRYABLE = (pyro_errors.CommunicationError, pyro_errors.NamingError)
IDLE_RECONNECT_S = 10.0  # well under the idle time after which daemons close a connection (nameserver.transport.IDLE_S)
READING_KEYS = frozenset({"sensor", "quantity", "value", "unit", "ts"})
TABLE_ROWS = 100  # a history of thousands of readings is for code, not for the screen


class NotInFleet(UnknownActor, KeyError):
    """No such node, or no such actor on a node, in the name server (a KeyError, as a mapping raises)."""

    # KeyError's str() is the repr of its key; this one carries a sentence
    __str__ = BaseException.__str__


def is_reading(item: Any) -> bool:
    """True for a reading dict as actors return them (sensor, quantity, value, unit, ts)."""
    return isinstance(item, dict) and item.keys() >= READING_KEYS


def _age(seconds: float) -> str:
    if seconds <= -1:  # the node's clock is ahead of ours
        return f"in {-seconds:.0f} s"
    seconds = max(seconds, 0.0)  # a fraction of a second ahead is rounding, not skew
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds / 86400:.0f} d ago"


def _value(reading: dict[str, Any]) -> str:
    value = reading["value"]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-" if value is None else str(value)
    # 6 significant digits, but never an exponent for a large count (uptime, gas resistance)
    text = f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"
    return f"{text} {reading['unit']}".rstrip()


class Readings(list[dict[str, Any]]):
    """A list of reading dicts that shows as a table in the REPL; equal to, and encoded as, the plain list."""

    def table(self, now: float | None = None) -> str:
        """The readings as a table: sensor, quantity, value with unit, age, quality (and stale where given)."""
        now = time.time() if now is None else now
        many_nodes = len({r.get("node") for r in self}) > 1  # the hub's views mix nodes
        has_stale = any("stale" in r for r in self)
        rows = [[*(["NODE"] if many_nodes else []), "SENSOR", "QUANTITY", "VALUE", "AGE", "QUALITY",
                 *(["STALE"] if has_stale else [])]]
        for r in self[:TABLE_ROWS]:
            quality = str(r.get("quality", "-")) + (f" ({r['reason']})" if r.get("reason") else "")
            ts = r["ts"]
            rows.append([*([str(r.get("node", "-"))] if many_nodes else []), str(r["sensor"]), str(r["quantity"]),
                         _value(r), _age(now - ts) if isinstance(ts, (int, float)) else "-", quality,
                         *(["stale" if r.get("stale") else ""] if has_stale else [])])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        if len(self) > TABLE_ROWS:
            lines.append(f"... and {len(self) - TABLE_ROWS} more (index or iterate for all)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        # a list that was edited into something else shows as the list it now is
        if not self or not all(is_reading(r) for r in self):
            return list.__repr__(self)
        return self.table()

    def __str__(self) -> str:
        # print() and logging in scripts keep showing the plain list, as before
        return list.__repr__(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def as_readings(result: Any) -> Any:
    """`result` as Readings when it is a non-empty list of reading dicts, else unchanged."""
    if type(result) is list and result and all(is_reading(r) for r in result):
        return Readings(result)
    return result


Servers = list[tuple[str, int]]
T = TypeVar("T")


def ask_name_servers(servers: Servers, timeout: float, question: Callable[[Any], T]) -> T:
    """Ask the first name server that answers (several hubs run one each, holding the same names).

    With one name server its errors pass through as Pyro5 raises them. With several, one that
    cannot be reached, or does not know the name asked for, passes the question on to the
    next; when none could answer, NamingError says what each said."""
    if len(servers) == 1:
        with Proxy(ns_uri(*servers[0])) as ns:
            ns._pyroTimeout = timeout
            return question(ns)
    failures: list[str] = []
    last: BaseException | None = None
    for host, port in servers:
        try:
            with Proxy(ns_uri(host, port)) as ns:
                ns._pyroTimeout = timeout
                return question(ns)
        except pyro_errors.NamingError as exc:
            last = exc
            failures.append(f"{host}:{port}: {exc}")
        except pyro_errors.CommunicationError as exc:
            last = exc
            failures.append(f"cannot reach the name server at {host}:{port}: {exc}")
    raise pyro_errors.NamingError("; ".join(failures)) from last


def lookup(ns_host: str, ns_port: int, name: str, timeout: float, servers: Servers | None = None) -> str:
    """The PYRO URI registered for `name`, asking the name server(s) with `timeout` for every step.

    A name server that cannot be reached raises NamingError from the transport's error, as
    Pyro5's own lookup does, so callers tell it apart from the actor not answering."""
    try:
        return ask_name_servers(servers or [(ns_host, ns_port)], timeout, lambda ns: str(ns.lookup(name)))
    except pyro_errors.NamingError:
        raise
    except pyro_errors.CommunicationError as exc:
        raise pyro_errors.NamingError(f"cannot reach the name server at {ns_host}:{ns_port}: {exc}") from exc


def parse_servers(hosts: Any, default_port: int) -> Servers:
    """["h1", "h2:9190", ("h3", 9290)] as [(host, port)]; ValueError naming a bad entry."""
    out: Servers = []
    for entry in hosts:
        if isinstance(entry, tuple) and len(entry) == 2:
            host, port = entry
        elif isinstance(entry, str):
            host, sep, port_text = entry.rpartition(":")
            if not sep:
                host, port_text = entry, str(default_port)
            if not port_text.isdigit():
                raise ValueError(f"name server {entry!r}: expected \"host\" or \"host:port\"")
            port = int(port_text)
        else:
            raise ValueError(f"name server {entry!r}: expected \"host\", \"host:port\" or (host, port)")
        out.append((str(host), int(port)))
    if not out:
        raise ValueError("no name servers given")
    return out


def check_method_name(method: Any) -> None:
    """AttributeError unless `method` can name a remote method (Python's own attributes never can)."""
    if not isinstance(method, str) or not method.isidentifier() or method.startswith("_"):
        raise AttributeError(f"{method!r} is not a remote method name; `harvester call NAME describe` lists them")


class ActorHandle:
    """A remote actor: call its methods like local ones; `help()` prints their docs."""

    def __init__(self, name: str, ns_host: str, ns_port: int, timeout: float = CALL_TIMEOUT,
                 retries: int = 2, servers: Servers | None = None) -> None:
        self.name = name
        self._ns_host, self._ns_port = ns_host, ns_port
        self._servers = servers
        self._timeout = timeout
        self._retries = retries
        self._local = threading.local()

    def _proxy(self) -> Proxy:
        proxy = getattr(self._local, "proxy", None)
        idle = time.monotonic() - getattr(self._local, "used", 0.0)
        if proxy is not None and idle > IDLE_RECONNECT_S:
            # the daemon closes a connection idle for IDLE_S; a command on a closed one would fail
            # and is never retried, so reconnect before the daemon's limit, not after
            self._drop()
            proxy = None
        if proxy is None:
            # Resolved here, not by Pyro5's PYRONAME machinery: its name-server proxy has no
            # timeout of ours, so a listener that accepts and never answers held a caller for
            # COMMTIMEOUT per try. Every new connection looks the name up again (a restarted
            # daemon has a new port).
            proxy = Proxy(lookup(self._ns_host, self._ns_port, self.name, self._timeout, self._servers))
            proxy._pyroTimeout = self._timeout
            self._local.proxy = proxy
        self._local.used = time.monotonic()
        return proxy

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` remotely; reads are retried on connection errors, commands are not."""
        check_method_name(method)
        attempts = 1 + (self._retries if method in IDEMPOTENT else 0)
        delay = 0.2
        for attempt in range(attempts):
            try:
                return as_readings(getattr(self._proxy(), method)(*args, **kwargs))
            except RETRYABLE as exc:
                self._drop()
                # A node that let one read time out is frozen or overloaded: another try only
                # makes the caller wait longer. A refused or closed connection is worth one.
                timed_out = isinstance(exc, pyro_errors.TimeoutError) or \
                    isinstance(exc.__cause__, pyro_errors.TimeoutError)
                if attempt + 1 == attempts or timed_out:
                    if isinstance(exc, pyro_errors.TimeoutError):
                        # Pyro5 says only "receiving: timeout"; say who and how long
                        exc.add_note(f"{self.name}.{method} did not answer within {self._timeout:g} s: "
                                     "is the node's process running and not stopped?")
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


V = TypeVar("V")


class _LiveView(Mapping[str, V]):
    """A read-only mapping over what the name server holds now: equal only to itself, hashable,
    and truthy without a round trip (Mapping's defaults would list the name server for each)."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        return True


class NodeHandle(_LiveView[ActorHandle]):
    """The actors of one node: a read-only mapping of actor name -> ActorHandle (`node.dht22` works too)."""

    def __init__(self, fleet: Fleet, node: str) -> None:
        self._fleet = fleet
        self.node = node

    def _names(self) -> dict[str, str]:
        return self._fleet._listing(f"{PREFIX}.{self.node}.")

    def actors(self) -> list[str]:
        """Actor names registered for this node (one name-server round trip)."""
        prefix = f"{PREFIX}.{self.node}."
        return sorted(n[len(prefix):] for n in self._names())

    def __getitem__(self, actor: str) -> ActorHandle:
        names = self._names()
        if not isinstance(actor, str) or object_name(self.node, actor) not in names:
            known = ", ".join(sorted(n.split(".", 2)[2] for n in names)) or "none"
            raise NotInFleet(f"node {self.node} has no actor {actor!r} in the name server at "
                             f"{self._fleet.host}:{self._fleet.port}; its actors: {known}")
        return self._fleet.actor(object_name(self.node, actor))

    def __contains__(self, actor: object) -> bool:
        return isinstance(actor, str) and object_name(self.node, actor) in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.actors())

    def __len__(self) -> int:
        return len(self._names())

    def get(self, actor: str, default: Any = None) -> Any:
        """The actor's handle, or `default` when the node has no such actor."""
        return self._fleet.actor(object_name(self.node, actor)) if actor in self else default

    def __getattr__(self, actor: str) -> ActorHandle:
        if actor.startswith("_"):
            raise AttributeError(actor)
        try:
            return self[actor]
        except KeyError as exc:  # getattr(), hasattr() and Tab completion expect AttributeError
            raise AttributeError(str(exc)) from None

    def __dir__(self) -> list[str]:
        try:
            actors = [a for a in self.actors() if a.isidentifier()]  # `node.network-gw` is not Python
        except RETRYABLE:
            actors = []
        return sorted({*actors, "actors", "get", "items", "keys", "node", "values"})

    def _ipython_key_completions_(self) -> list[str]:
        return self.actors()

    def __repr__(self) -> str:
        try:
            return f"<node {self.node}: {', '.join(self.actors())}>"
        except RETRYABLE as exc:
            return f"<node {self.node}: name server unreachable ({type(exc).__name__})>"


class Fleet(_LiveView[NodeHandle]):
    """Every node registered in the name server (or, with several hubs, in the first of theirs
    that answers): a read-only mapping of node name -> NodeHandle."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9090, timeout: float = CALL_TIMEOUT,
                 tls: TlsFiles | None = None, servers: Servers | None = None) -> None:
        configure()
        self.tls = use_client_tls(tls)  # process-wide in Pyro5: files, else $HARVESTER_TLS_*, else as is
        self.servers = servers or [(host, port)]
        self.host, self.port = self.servers[0]
        self.timeout = timeout
        self._handles: dict[str, ActorHandle] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """The name server(s) this fleet asks, for messages."""
        return ", ".join(f"{h}:{p}" for h, p in self.servers)

    def _ask(self, question: Callable[[Any], T]) -> T:
        return ask_name_servers(self.servers, self.timeout, question)

    def _listing(self, prefix: str) -> dict[str, str]:
        """Registered names under `prefix` -> URI: one name-server round trip."""
        return self._ask(lambda ns: ns.list(prefix=prefix))

    def names(self, meta_all: set[str] | None = None) -> dict[str, str]:
        """Registered Harvester names (optionally filtered by metadata tags) -> URI."""
        if not meta_all:
            return self._listing(PREFIX + ".")
        found = self._ask(lambda ns: ns.yplookup(meta_all=meta_all, return_metadata=False))
        return {k: v for k, v in found.items() if k.startswith(PREFIX + ".")}

    def listing(self) -> dict[str, tuple[str, list[str]]]:
        """Registered names -> (URI, sorted metadata tags)."""
        found = self._ask(lambda ns: ns.list(prefix=PREFIX + ".", return_metadata=True))
        return {name: (str(uri), sorted(meta)) for name, (uri, meta) in found.items()}

    def nodes(self) -> list[str]:
        """Node names that have at least one registered actor."""
        return sorted({n.split(".")[1] for n in self.names()})

    def actor(self, name: str) -> ActorHandle:
        """A handle for `harvester.<node>.<actor>` (created once, shared across threads; no name-server call)."""
        with self._lock:
            handle = self._handles.get(name)
            if handle is None:
                handle = self._handles[name] = ActorHandle(name, self.host, self.port, self.timeout,
                                                                    servers=self.servers)
            return handle

    def _has(self, node: object) -> bool:
        # the trailing dot keeps "pi" from matching pi4's names
        return isinstance(node, str) and "." not in node and bool(self._listing(f"{PREFIX}.{node}."))

    def __getitem__(self, node: str) -> NodeHandle:
        if not self._has(node):
            raise NotInFleet(f"no node {node!r} in the name server at {self.where}; "
                             f"known nodes: {', '.join(self.nodes()) or 'none'}")
        return NodeHandle(self, node)

    def __contains__(self, node: object) -> bool:
        return self._has(node)

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes())

    def __len__(self) -> int:
        return len(self.nodes())

    def get(self, node: str, default: Any = None) -> Any:
        """The node's handle, or `default` when no actor of that node is registered."""
        return NodeHandle(self, node) if self._has(node) else default

    def __getattr__(self, node: str) -> NodeHandle:
        if node.startswith("_"):
            raise AttributeError(node)
        try:
            return self[node]
        except KeyError as exc:  # getattr(), hasattr() and Tab completion expect AttributeError
            raise AttributeError(str(exc)) from None

    def __dir__(self) -> list[str]:
        try:
            nodes = [n for n in self.nodes() if n.isidentifier()]  # `fleet.pi-4` is not Python
        except RETRYABLE:
            nodes = []
        return sorted({*nodes, "actor", "get", "items", "keys", "listing", "names", "nodes", "values"})

    def _ipython_key_completions_(self) -> list[str]:
        return self.nodes()

    def __repr__(self) -> str:
        try:
            nodes = ", ".join(self.nodes())
        except RETRYABLE as exc:
            nodes = f"name server unreachable ({type(exc).__name__})"
        return f"<fleet at {self.where}: {nodes}>"


def connect(host: str | list[Any] = "127.0.0.1", port: int = 9090, timeout: float = CALL_TIMEOUT,
            tls: TlsFiles | None = None) -> Fleet:
    """A handle on the fleet whose name server runs at host:port (mutual TLS with `tls` or $HARVESTER_TLS_*).

    With several hubs, give them all: connect(["h1", "h2:9190", ("h3", 9290)]) (port defaults to
    `port`) works while any of them is up."""
    if isinstance(host, (list, tuple)) and not (isinstance(host, tuple) and len(host) == 2
                                                 and isinstance(host[1], int)):
        servers = parse_servers(host, port)
        return Fleet(servers[0][0], servers[0][1], timeout, tls, servers=servers)
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
