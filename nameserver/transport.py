"""A Pyro5 transport server where an idle connection costs a file descriptor, not a thread.

Pyro5's thread server gives every open connection one worker thread until it closes, and
refuses connections once its pool is full: a few hundred idle TCP connections, from anyone
who can reach the port, lock out every legitimate client. Here one selector thread watches
the listening socket and every idle connection; only a connection with bytes waiting is
handed to a worker thread, for one handshake or one request, and comes back to the selector
afterwards. Idle connections are bounded three ways: a connection must finish its handshake
within the daemon's handshake timeout, one idle for IDLE_S is closed, and past MAX_CONNECTIONS the longest
idle one (of the busiest peer address first) is closed to make room for the newcomer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import resource
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from Pyro5 import config, errors, socketutil

log = logging.getLogger(__name__)

# Every spoke keeps one connection to its hub between pushes: a thousand spokes, their agents'
# REPL users and the peers fit with room to spare. An idle one costs a descriptor and about a
# kilobyte, not a thread.
MAX_CONNECTIONS = 4096
FIRST_MESSAGE_S = 5.0  # connect -> handshake done, unless the daemon has a handshake_timeout of its own
# A spoke pushes far more often than this; one whose kept connection was reaped reconnects on
# its next push. REPL proxies reconnect after 10 s idle.
IDLE_S = 60.0
REQUEST_S = 10.0  # once a message started, the rest must come within this (clients wait 5 s)
# Calls one peer address may have running at once; its further ready connections wait their
# turn, so one host trickling partial messages cannot take every worker from the others.
PER_PEER_WORKERS = 32
HOUSEKEEPING_S = 1.0
PARTIAL_CHECK_S = 0.1  # how often connections holding part of a message are looked at again
# A message longer than this is handed to a worker once this much of it has arrived (a
# socket buffer may not hold a whole 8 MiB push); shorter ones only once complete.
PEEK_LIMIT = 64 * 1024
PYRO_HEADER = struct.Struct("!4sHBBHHII16sHH")  # Pyro5's message header (protocol 502)
TLS_RECORD = struct.Struct("!BHH")  # content type, version, length
TLS_CONTENT_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec, alert, handshake, application_data


@dataclass(eq=False)
class _Client:
    """One accepted connection and where it stands."""

    conn: Any  # Pyro5 SocketConnection
    peer: str
    accepted: float
    last: float
    handshaken: bool = False
    busy: bool = False
    closed: bool = field(default=False)
    partial_since: float | None = None  # when it was first seen holding part of a message


def message_waiting(sock: socket.socket) -> bool:
    """True when a whole message (or PEEK_LIMIT bytes of one) waits in the socket's buffer.

    Looks without reading (MSG_PEEK, on the raw socket also under TLS): Pyro5's header gives
    the message length; under TLS a whole record must be there. Anything that is neither (a
    closed peer, garbage) counts as waiting, so a worker reads it and closes the connection."""
    def raw_recv(s: socket.socket, n: int) -> bytes:
        # SSLSocket.recv refuses flags; the raw bytes are what we want. Never blocks.
        return socket.socket.recv(s, n, socket.MSG_PEEK | socket.MSG_DONTWAIT)

    try:
        if isinstance(sock, ssl.SSLSocket):
            head = raw_recv(sock, TLS_RECORD.size)
            if not head or head[0] not in TLS_CONTENT_TYPES:
                return True  # closed, or not TLS at all (a plaintext client): let the handshake refuse it
            if len(head) < TLS_RECORD.size:
                return False
            kind, version, length = TLS_RECORD.unpack(head)
            if version >> 8 != 3:
                return True
            want = TLS_RECORD.size + length
        else:
            head = raw_recv(sock, PYRO_HEADER.size)
            if len(head) < PYRO_HEADER.size:
                return not head or not b"PYRO".startswith(head[:4])  # closed, or not Pyro5 at all
            fields = PYRO_HEADER.unpack(head)
            if fields[0] != b"PYRO":
                return True
            want = PYRO_HEADER.size + fields[7] + fields[6]  # + annotations + payload
        want = min(want, PEEK_LIMIT)
        return len(raw_recv(sock, want)) >= want
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def raise_fd_limit(wanted: int = 4 * MAX_CONNECTIONS) -> None:
    """Lift the soft open-files limit towards the hard one: connections are file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class ConnectionTable:
    """Every open connection of one server, and the choice of which to close (thread-safe)."""

    def __init__(self, max_connections: int, first_message_s: float) -> None:
        self.max_connections = max_connections
        self.first_message_s = first_message_s
        self._lock = threading.Lock()
        self._clients: dict[int, _Client] = {}  # id(client) -> client

    def add(self, client: _Client) -> bool:
        """Remember a new connection; True when that makes one too many."""
        with self._lock:
            self._clients[id(client)] = client
            return len(self._clients) > self.max_connections

    def remove(self, client: _Client) -> bool:
        """Forget a connection; True only the first time (whoever gets True closes it)."""
        with self._lock:
            if client.closed:
                return False
            client.closed = True
            self._clients.pop(id(client), None)
            return True

    def victim(self, newcomer: str) -> tuple[_Client, int] | None:
        """The longest-idle connection of the peer address holding the most (and how many it holds)."""
        with self._lock:
            idle = [c for c in self._clients.values() if not c.busy and not c.closed]
        if not idle:
            return None
        counts = Counter(c.peer for c in idle)
        busiest = max(counts, key=lambda p: (counts[p], p == newcomer))
        return min((c for c in idle if c.peer == busiest), key=lambda c: c.last), counts[busiest]

    def stale(self, now: float) -> list[_Client]:
        """Connections that never finished their handshake in time, stalled mid-message, or sat idle too long."""
        with self._lock:
            return [c for c in self._clients.values() if not c.busy and (
                (not c.handshaken and now - c.accepted > self.first_message_s)
                or (c.partial_since is not None and now - c.partial_since > REQUEST_S)
                or now - c.last > IDLE_S)]

    def per_peer(self) -> dict[str, int]:
        """Open connections per peer address."""
        with self._lock:
            return dict(Counter(c.peer for c in self._clients.values()))

    def all(self) -> list[_Client]:
        """Every open connection."""
        with self._lock:
            return list(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)


class SelectorPoolServer:
    """Pyro5's transport-server interface (init/loop/events/shutdown/close/sockets/wakeup)."""

    def __init__(self, daemon: Any, sock: socket.socket, location: str,
                 max_connections: int = MAX_CONNECTIONS, workers: int | None = None) -> None:
        self.daemon = daemon
        self.sock = sock
        self.locationStr = location  # noqa: N815  (Pyro5's attribute name)
        self._socketaddr = sock.getsockname()
        self.max_connections = max_connections
        self.shutting_down = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._returned: queue.SimpleQueue[_Client] = queue.SimpleQueue()
        self._running: Counter[str] = Counter()  # peer -> calls running (selector thread only)
        self._waiting: dict[str, deque[_Client]] = {}  # peer -> ready connections over its share
        self._partial: dict[int, _Client] = {}  # holding part of a message (selector thread only)
        self._next_partial_check = 0.0
        self._pool = ThreadPoolExecutor(workers or config.THREADPOOL_SIZE, thread_name_prefix="pyro-call")
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        # Pyro5 clients send their handshake at once: a connection silent this long is not one
        self._table = ConnectionTable(max_connections, float(getattr(daemon, "handshake_timeout", FIRST_MESSAGE_S)))
        self.evicted = 0

    @classmethod
    def adopt(cls, daemon: Any, threadpool_server: Any) -> SelectorPoolServer:
        """Take over the listening socket of the thread server Pyro5's Daemon just built."""
        old = threadpool_server
        if old.housekeeper is not None:  # our loop runs the daemon's housekeeping instead
            old.housekeeper.stop.set()
            old.housekeeper = None
        if old.pool is not None:  # its idle workers exit; it never got a job
            for worker in list(old.pool.idle):
                worker.process(None)
            old.pool.closed = True
        sock, location = old.sock, old.locationStr
        old.sock = None  # so its __del__ leaves the socket to us
        return cls(daemon, sock, location)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} on {self.locationStr}; {len(self._table)} connections>"

    # -- the selector loop ----------------------------------------------------------------
    def loop(self, loopCondition: Any = lambda: True) -> None:  # noqa: N803  (Pyro5's name)
        """Serve until shutdown() or the condition turns false."""
        while self.sock is not None and not self.shutting_down and loopCondition():
            try:
                self.events([self.sock])
            except OSError as exc:
                if self.shutting_down or not loopCondition():
                    break
                log.warning("transport loop error: %s", exc)

    def events(self, eventsockets: Any) -> None:
        """One round: accept, hand ready connections to workers, take back finished ones."""
        try:
            ready = self._selector.select(PARTIAL_CHECK_S if self._partial else config.POLLTIMEOUT)
        except (OSError, ValueError):  # closed under us at shutdown
            return
        for key, _ in ready:
            if key.fileobj is self.sock:
                self._accept()
            elif key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                self._ready(key.data)
        self._take_back()
        now = time.monotonic()
        if self._partial and now >= self._next_partial_check:
            self._next_partial_check = now + PARTIAL_CHECK_S
            for client in list(self._partial.values()):
                self._ready(client)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            self._reap(now)
            self.daemon._housekeeping()

    def _accept(self) -> None:
        try:
            csock, addr = self.sock.accept()
        except (TimeoutError, BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if self.shutting_down:
                return
            log.warning("accept() failed: %s", exc)
            return
        if self.shutting_down:
            csock.close()
            return
        csock.settimeout(REQUEST_S)
        peer = addr[0] if isinstance(addr, tuple) else str(addr)
        now = time.monotonic()
        client = _Client(socketutil.SocketConnection(csock), peer, now, now)
        if self._table.add(client):
            self._evict_one(peer)
        self._watch(client)

    def _watch(self, client: _Client) -> None:
        try:
            self._selector.register(client.conn.sock, selectors.EVENT_READ, client)
        except (ValueError, KeyError, OSError):  # closed meanwhile
            self._close(client)

    def _ready(self, client: _Client) -> None:
        """Readable: hand it to a worker once a whole message is there, else look again shortly.

        A worker reading half a message would wait for the rest; a few hundred peers sending
        a few bytes each would then hold every worker."""
        if client.closed:
            self._partial.pop(id(client), None)
            return
        if message_waiting(client.conn.sock):
            self._partial.pop(id(client), None)
            client.partial_since = None
            self._dispatch(client)
            return
        if id(client) not in self._partial:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(client.conn.sock)  # level-triggered: it would fire again at once
            client.partial_since = client.partial_since or time.monotonic()
            self._partial[id(client)] = client

    def _dispatch(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(client.conn.sock)
        client.busy = True
        if self._running[client.peer] >= PER_PEER_WORKERS:
            self._waiting.setdefault(client.peer, deque()).append(client)
            return
        self._running[client.peer] += 1
        try:
            self._pool.submit(self._serve, client)
        except RuntimeError:  # pool shut down
            self._close(client)

    def _take_back(self) -> None:
        while True:
            try:
                client = self._returned.get_nowait()
            except queue.Empty:
                return
            self._running[client.peer] -= 1
            waiting = self._waiting.get(client.peer)
            while waiting:  # this peer's next ready connection takes the freed share
                nxt = waiting.popleft()
                if not nxt.closed:
                    nxt.busy = False
                    self._dispatch(nxt)
                    break
            if waiting is not None and not waiting:
                del self._waiting[client.peer]
            if not self._running[client.peer]:
                del self._running[client.peer]
            if client.closed:
                continue
            client.busy = False
            self._watch(client)

    # -- in a worker thread ----------------------------------------------------------------
    def _serve(self, client: _Client) -> None:
        """One handshake or one request; then back to the selector (or straight on, with TLS bytes buffered)."""
        while True:
            if not self._serve_one(client):
                self._close(client)
                break
            client.last = time.monotonic()
            sock = client.conn.sock
            # TLS may have decrypted the next request already: the selector would never see it
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        self._returned.put(client)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _serve_one(self, client: _Client) -> bool:
        conn = client.conn
        try:
            if not client.handshaken:
                client.handshaken = bool(self.daemon._handshake(conn))
                return client.handshaken
            self.daemon.handleRequest(conn)
            return True
        except (OSError, errors.ConnectionClosedError, errors.SecurityError):
            return False  # the client went away or was refused
        except errors.TimeoutError as exc:
            log.info("%s: request not completed within %.0fs: %s", client.peer, REQUEST_S, exc)
            return False
        except Exception:
            log.warning("error handling a request from %s", client.peer, exc_info=True)
            return False

    # -- closing ---------------------------------------------------------------------------
    def _close(self, client: _Client) -> None:
        if not self._table.remove(client):
            return
        self._partial.pop(id(client), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(client.conn.sock)
        if client.handshaken:
            try:
                self.daemon._clientDisconnect(client.conn)
            except Exception as exc:
                log.warning("error in clientDisconnect: %s", exc)
        client.conn.close()

    def _evict_one(self, newcomer: str) -> None:
        """Close the longest-idle connection, from the peer address holding the most."""
        found = self._table.victim(newcomer)
        if found is None:
            return
        victim, held = found
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 1000 == 0:
            log.warning("more than %d connections: closing idle ones, %s holds %d (%d closed so far)",
                        self.max_connections, victim.peer, held, self.evicted)
        self._close(victim)

    def _reap(self, now: float) -> None:
        """Close connections that never finished their handshake in time, or sat idle too long."""
        for client in self._table.stale(now):
            self._close(client)

    def connections(self) -> dict[str, int]:
        """Open connections per peer address (for health and tests)."""
        return self._table.per_peer()

    def shutdown(self) -> None:
        """Stop the loop and close everything."""
        self.shutting_down = True
        self.wakeup()
        self.close()

    def close(self) -> None:
        """Close the listening socket, every connection and the worker pool."""
        self.shutting_down = True
        for client in self._table.all():
            self._close(client)
        sock, self.sock = self.sock, None
        if sock is not None:
            sockname = None
            with contextlib.suppress(OSError):
                sockname = sock.getsockname()
            with contextlib.suppress(OSError):
                sock.close()
            if isinstance(sockname, str) and os.path.exists(sockname):  # a Unix socket
                os.remove(sockname)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    @property
    def sockets(self) -> list[Any]:
        """The listening socket (connections belong to this server, not to outside loops)."""
        return [self.sock]

    @property
    def selector(self) -> Any:
        """Not shared: combining loops is not supported."""
        raise TypeError("this server's selector is not shared")

    def combine_loop(self, server: Any) -> None:
        """Not supported."""
        raise TypeError("this server does not combine loops")

    def wakeup(self) -> None:
        """Make a blocking select() return."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
