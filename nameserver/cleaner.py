"""The hub's name server forgets the names of daemons that stopped answering.

Pyro5's own cleaner connects to every registered name in turn, one TCP connection each,
every few seconds, and waits up to the call timeout for each one that does not answer. A
node registers seven to ten names on one daemon, so a thousand spokes meant 8,000
connections a pass made one after the other, and one powered-off board (whose SYNs go
unanswered) held the pass 30 s a name, leaving every other dead name in place meanwhile.
This cleaner connects once per daemon address, to all of a pass's addresses at once (a
bounded number of sockets at a time), with a short connect timeout; `bench/bench_names.py`
measures both."""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from Pyro5 import core

log = logging.getLogger(__name__)

CLEAN_EVERY_S = 5.0  # seconds between two passes
# A daemon address that refused or ignored every connection for this long loses its names. A
# live node registers them again within one sweep anyway (agent.register_interval).
UNREACHABLE_S = 10.0
CONNECT_TIMEOUT_S = 3.0  # a LAN peer answers a SYN within milliseconds; a powered-off one never does
PROBES_AT_ONCE = 256  # sockets open at once during a pass (each is a file descriptor)
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY}
_NOT_PROBED = (core.DAEMON_NAME, core.NAMESERVER_NAME)


def reachable(addresses: Iterable[tuple[str, int]], timeout: float = CONNECT_TIMEOUT_S,
              at_once: int = PROBES_AT_ONCE) -> set[tuple[str, int]]:
    """The addresses that accept a TCP connection within `timeout` (closed at once), tried
    `at_once` at a time with non-blocking connects, so a pass waits about `timeout` per
    `at_once` silent addresses rather than per address."""
    todo = list(addresses)
    answered: set[tuple[str, int]] = set()
    for start in range(0, len(todo), at_once):
        with selectors.DefaultSelector() as sel:
            try:
                for address in todo[start:start + at_once]:
                    sock = _connect(address)
                    if sock is True:
                        answered.add(address)
                    elif sock is not None:
                        sel.register(sock, selectors.EVENT_WRITE, address)
                deadline = time.monotonic() + timeout
                while sel.get_map() and (left := deadline - time.monotonic()) > 0:
                    for key, _ in sel.select(left):
                        sock = key.fileobj
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                            answered.add(key.data)
                        sel.unregister(sock)
                        sock.close()
            finally:
                for key in list(sel.get_map().values()):
                    key.fileobj.close()
    return answered


def _connect(address: tuple[str, int]) -> socket.socket | bool | None:
    """Start a non-blocking connect: True when it connected at once, the socket while it is
    under way, None when it failed (refused, no route, a name that does not resolve)."""
    host, port = address
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError:
        return None
    sock.setblocking(False)
    try:
        err = sock.connect_ex(sockaddr)
    except OSError:
        err = -1
    if err in _IN_PROGRESS:
        return sock
    sock.close()
    return True if err == 0 else None


class AddressCleaner(threading.Thread):
    """Removes the names registered on a daemon address that stopped accepting connections.

    Pyro5's NameServerDaemon stops its cleaner by setting `stop` and joining it; this one
    keeps that interface and wakes at once."""

    def __init__(self, nameserver: Any, every: float = CLEAN_EVERY_S, unreachable_after: float = UNREACHABLE_S,
                 timeout: float = CONNECT_TIMEOUT_S) -> None:
        super().__init__(name="nameserver-cleaner", daemon=True)
        self.nameserver = nameserver
        self.every, self.unreachable_after, self.timeout = every, unreachable_after, timeout
        self.unreachable: dict[tuple[str, int], float] = {}  # address -> when it first failed
        self.probes = 0  # connections attempted so far
        self._stopped = threading.Event()

    @property
    def stop(self) -> bool:
        return self._stopped.is_set()

    @stop.setter
    def stop(self, value: bool) -> None:
        if value:
            self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.every):
            try:
                self.clean_once()
            except Exception:  # the next pass tries again; a dead cleaner would never clean again
                log.exception("name server cleaner: the pass failed")

    def clean_once(self, now: float | None = None) -> int:
        """One pass: probe each address once, forget the names of those unreachable long enough;
        returns how many names were removed."""
        by_address: dict[tuple[str, int], dict[str, str]] = {}
        for name, uri in self.nameserver.list().items():
            if name in _NOT_PROBED:
                continue
            try:
                parsed = core.URI(uri)
            except Exception:  # noqa: BLE001 (a foreign client's odd entry: left alone, as it never resolves here)
                continue
            if parsed.host and parsed.port:  # a Unix socket's daemon is local to the name server's host
                by_address.setdefault((parsed.host, parsed.port), {})[name] = uri
        self.probes += len(by_address)
        answered = reachable(by_address, self.timeout)
        now = time.monotonic() if now is None else now
        removed = 0
        for address, names in by_address.items():
            if address in answered:
                self.unreachable.pop(address, None)
                continue
            since = self.unreachable.setdefault(address, now)
            if now - since >= self.unreachable_after:
                removed += self._remove(names)
                log.info("name server cleaner: %s:%d did not accept a connection for %.0f s; removed %s",
                         address[0], address[1], now - since, ", ".join(sorted(names)))
                del self.unreachable[address]
        for gone in set(self.unreachable) - set(by_address):
            del self.unreachable[gone]
        return removed

    def _remove(self, names: dict[str, str]) -> int:
        """Remove the names that still point where they pointed when listed: a node restarted
        meanwhile registered its names again on its new port, and those stay."""
        removed = 0
        storage = self.nameserver.storage
        with self.nameserver.lock:
            for name, uri in names.items():
                entry = storage.get(name)
                if entry is not None and entry[0] == uri:
                    del storage[name]
                    removed += 1
        return removed
