"""One place that sets Pyro5's global configuration, deliberately, for every process."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from Pyro5 import config
from Pyro5.serializers import MsgpackSerializer

from nameserver.transport import raise_fd_limit

log = logging.getLogger(__name__)

# Readings cross the wire as plain dicts; msgpack is safe for untrusted input and about
# 20x faster than serpent for batches (bench/bench_ingest.py), so our own clients use it. Daemons
# answer in whatever serializer the caller used, so a plain Pyro5 proxy (serpent) works too.
CLIENT_SERIALIZER = "msgpack"
CALL_TIMEOUT = 5.0
MAX_MESSAGE_SIZE = 8 * 1024 * 1024


def configure() -> None:
    """Apply Harvester's Pyro5 settings (idempotent)."""
    # The name server keeps an entry registered without metadata as frozenset(), which
    # Pyro5's msgpack serializer cannot encode: one such entry (any foreign client may add
    # it) made every listing answer a protocol error to msgpack callers.
    MsgpackSerializer.register_type_replacement(frozenset, set)  # default() turns a set into a list
    config.SERIALIZER = CLIENT_SERIALIZER
    config.SERVERTYPE = "thread"
    # Our daemons adopt Pyro5's thread server's socket into nameserver.transport, where this
    # bounds the calls running at once; idle connections wait in a selector, not in a thread.
    config.THREADPOOL_SIZE = 128
    # Nagle + delayed ACKs add ~40 ms to every new TLS connection (48 -> 4 ms, bench/tls_handshake.py).
    config.SOCK_NODELAY = True
    # A full push (50 batches) is tens of KiB; Pyro5's 1 GiB default would let any peer make us buffer that much.
    config.MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE
    # Client side: a silent server must not hold a caller forever (servers use their own limits).
    config.COMMTIMEOUT = 30.0
    config.POLLTIMEOUT = 1.0
    # Pyro5's name server cleaner is off: the hub's runs nameserver.cleaner.AddressCleaner
    config.NS_AUTOCLEAN = 0.0
    config.DETAILED_TRACEBACK = False
    raise_fd_limit()  # every open connection is a file descriptor, also when idle


def disown(proxy: Any) -> None:
    """Leave a proxy kept between uses owned by no thread; the next use claims it
    (`_pyroClaimOwnership()`), from whichever thread it runs on.

    A Pyro5 proxy remembers the thread that owns it and, when greenlet is installed (Pyro5
    imports it when present; the development venv has it through playwright), that thread's
    greenlet object. Once a pool thread ends, that object may be torn down while the proxy still
    points at it, and the next ownership check against it (a stopping node releasing its kept
    connections from the main thread) crashed the interpreter. Each user of a kept proxy calls
    this from the thread that used it, when it is done with it."""
    proxy._Proxy__pyroOwnerThread = None


def release(proxy: Any) -> None:
    """Close a kept proxy's connection from whichever thread holds it now (a kept proxy may have
    been used last by another thread; Pyro5 refuses to close one owned elsewhere)."""
    proxy._pyroClaimOwnership()
    proxy._pyroRelease()


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InsecureBindError(RuntimeError):
    """Refusing to serve Pyro5 on a non-loopback address without TLS."""


def check_bind(host: str, tls: bool, allow_insecure: bool) -> None:
    """Refuse a plaintext bind beyond loopback unless the operator explicitly allowed it."""
    if tls or is_loopback(host):
        return
    if not allow_insecure:
        raise InsecureBindError(
            f"refusing to serve Pyro5 on {host} without TLS: anyone on the LAN could call actors. "
            "Enable TLS ([security]) or set agent.allow_insecure_lan = true to accept the risk."
        )
    log.warning("serving Pyro5 on %s WITHOUT TLS (agent.allow_insecure_lan = true)", host)
