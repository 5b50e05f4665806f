"""One place that sets Pyro5's global configuration, deliberately, for every process."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack
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


class TypedCall(NamedTuple):
    """How a daemon decodes one method's calls itself (decode_calls_typed)."""

    decode: Callable[[memoryview], tuple[Any, ...]]  # the positional arguments from their msgpack bytes
    refused: tuple[type[BaseException], ...]  # what decode raises to leave a call to Pyro5
    from_bytes: int = 0  # smaller arguments are left to Pyro5, where they cost less


_typed_calls: dict[tuple[str, str], TypedCall] = {}  # (object id, method) ->


def decode_calls_typed(object_id: str, method: str, call: TypedCall) -> None:
    """Decode calls of `method` on the object registered as `object_id` with `call.decode` rather
    than into Pyro5's dicts and lists (actors.hub.wire: a push's batches). The bytes on the wire
    are the same; a call it refuses (raising one of `call.refused`) is decoded the usual way.

    Installed in the process on first use: Pyro5 keeps one msgpack serializer per process, and a
    process without typed calls (a spoke) keeps Pyro5's own."""
    from Pyro5 import serializers

    current = serializers.serializers["msgpack"]
    if not isinstance(current, _TypedCallsSerializer):
        typed = _TypedCallsSerializer()
        serializers.serializers["msgpack"] = serializers.serializers_by_id[typed.serializer_id] = typed
    _typed_calls[(object_id, method)] = call
    _TypedCallsSerializer.smallest = min(c.from_bytes for c in _typed_calls.values())


class _TypedCallsSerializer(MsgpackSerializer):
    """Pyro5's msgpack serializer, with the calls registered by decode_calls_typed decoded their own way."""

    smallest = 0  # the smallest from_bytes registered: a shorter call is none of them

    def loadsCall(self, data: Any) -> Any:  # noqa: N802 (Pyro5's name)
        data = self._convertToBytes(data)
        if len(data) < self.smallest:  # every name-server call and small push in a hub's process
            return super().loadsCall(data)
        # A call is [object id, method, positional arguments, keyword arguments]: the names are
        # read first (about 24 us for a 47 kB push), and only a registered call's arguments typed.
        try:
            obj, method, vargs, kwargs = _call_parts(data)
        except ValueError:
            return super().loadsCall(data)
        typed = _typed_calls.get((obj, method))
        if typed is not None and not kwargs and len(vargs) >= typed.from_bytes:
            try:
                return obj, method, typed.decode(vargs), {}
            except typed.refused:
                pass
        return super().loadsCall(data)


def _call_parts(data: bytes) -> tuple[str, str, memoryview, bool]:
    """A call's object id and method, the msgpack bytes of its positional arguments (skipped
    over, not decoded), and whether keyword arguments were given; ValueError for anything that
    is not shaped as a call."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) or 1)
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() != 4:
            raise ValueError("not a call")
        obj, method = unpacker.unpack(), unpacker.unpack()
        start = unpacker.tell()
        unpacker.skip()
        end = unpacker.tell()
        kwargs = unpacker.read_map_header()
    except (msgpack.UnpackException, msgpack.OutOfData, ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if type(obj) is not str or type(method) is not str:
        raise ValueError("not a call")
    return obj, method, memoryview(data)[start:end], kwargs > 0


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
