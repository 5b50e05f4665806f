"""Calls from the web app to the fleet's actors: bounded in time, never retried, errors mapped to HTTP.

A spoke can be dead (connection refused), frozen (no answer), or answer with a typed error.
Every call runs on a small worker pool and the request waits at most `timeout` plus a
margin, whatever Pyro5 does underneath (a name lookup on a silent name server would
otherwise wait for COMMTIMEOUT), so a dashboard request never hangs on a dead node."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5.api import Proxy

from actors.client import Fleet
from actors.errors import ActorUnavailable, BadRequest, Busy
from hal.errors import ActuatorArgumentError
from hal.names import object_name
from nameserver.pyro import configure, disown, release
from web.http import ApiError

log = logging.getLogger(__name__)
COMMAND_TIMEOUT = 3.0  # seconds a spoke gets to answer a command
POLL_TIMEOUT = 1.0  # seconds a spoke gets to answer a state read for the page
MARGIN = 0.5  # on top of a call's timeout, for the name lookup and thread hand-over
# A connection idle longer than this is closed rather than reused: the spoke's daemon closes
# connections idle for nameserver.transport.IDLE_S, and a command sent on a closed one fails.
IDLE_REUSE = 10.0
MAX_IDLE_PER_ACTOR = 4
# waitress serves every request from 8 threads. A command holds its request's thread while it
# waits for the spoke, so commands may hold at most COMMAND_SLOTS of them (reads keep the
# rest), at most PER_NODE_COMMANDS per node, and a node that let a command time out gets no
# new one for STUCK_S: its commands fail at once instead of each waiting COMMAND_TIMEOUT.
COMMAND_SLOTS = 4
PER_NODE_COMMANDS = 2
STUCK_S = 10.0


class Connections:
    """Pyro5 proxies per actor name, reused while fresh, handed between worker threads.

    Unlike a proxy per thread, this keeps about one connection per actor a page polls,
    whatever the pool size: each connection holds a worker thread on the spoke."""

    def __init__(self, host: str, port: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[str, list[tuple[Proxy, float]]] = {}

    def call(self, name: str, method: str, args: tuple[Any, ...], timeout: float, retry_closed: bool) -> Any:
        """One call on a fresh-enough connection; `retry_closed` retries once if the peer had closed it."""
        for attempt in (1, 2):
            proxy, reused = self._take(name)
            proxy._pyroTimeout = timeout
            try:
                result = getattr(proxy, method)(*args)
            except pyro_errors.CommunicationError as exc:
                proxy._pyroRelease()
                if retry_closed and reused and attempt == 1 and isinstance(exc, pyro_errors.ConnectionClosedError):
                    continue
                raise
            except BaseException:
                self._give(name, proxy)  # a typed error from the actor: the connection is fine
                raise
            self._give(name, proxy)
            return result
        raise AssertionError("unreachable")

    def _take(self, name: str) -> tuple[Proxy, bool]:
        now, expired, found = self._clock(), [], None
        with self._lock:
            stack = self._idle.get(name, [])
            while stack:
                proxy, last = stack.pop()
                if now - last < IDLE_REUSE:
                    found = proxy
                    break
                expired.append(proxy)
        for proxy in expired:
            release(proxy)
        if found is not None:
            found._pyroClaimOwnership()
            return found, True
        return Proxy(f"PYRONAME:{name}@{self.host}:{self.port}"), False

    def _give(self, name: str, proxy: Proxy) -> None:
        with self._lock:
            stack = self._idle.setdefault(name, [])
            if len(stack) < MAX_IDLE_PER_ACTOR:
                disown(proxy)  # taken again from whichever web thread comes next
                stack.append((proxy, self._clock()))
                return
        proxy._pyroRelease()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for stack in idle.values():
            for proxy, _ in stack:
                release(proxy)


class CommandGate:
    """Bounds how many web threads wait on commands, per node and in all, and remembers stuck nodes."""

    def __init__(self, slots: int = COMMAND_SLOTS, per_node: int = PER_NODE_COMMANDS, stuck_s: float = STUCK_S,
                 reachability: Callable[[str], bool | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots, self.per_node, self.stuck_s = slots, per_node, stuck_s
        self._reachability = reachability
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._stuck_until: dict[str, float] = {}

    def enter(self, node: str) -> None:
        """Take a slot for a command to `node`, or an ApiError at once saying why not."""
        now = self._clock()
        with self._lock:
            until = self._stuck_until.get(node)
            if until is not None and now < until:
                raise ApiError(504, f"{node} let its last command time out; commands to it fail at once for "
                                    f"{until - now:.0f} s more (is its process running? `harvester health "
                                    f"--node {node}`)", {"Retry-After": str(max(1, round(until - now)))})
            if self._reachability is not None and self._reachability(node) is False:
                raise ApiError(504, f"{node} did not answer the hub's last probe; try again once the dashboard "
                                    "shows it online", {"Retry-After": "2"})
            if self._running.get(node, 0) >= self.per_node:
                raise ApiError(503, f"{node} already has {self.per_node} commands waiting for an answer; "
                                    "try again in a moment", {"Retry-After": "1"})
            if sum(self._running.values()) >= self.slots:
                raise ApiError(503, f"the hub is already waiting on {self.slots} commands; try again in a moment",
                               {"Retry-After": "1"})
            self._running[node] = self._running.get(node, 0) + 1

    def leave(self, node: str, timed_out: bool) -> None:
        """Give the slot back; a timeout marks the node stuck, an answer clears it."""
        with self._lock:
            left = self._running.get(node, 1) - 1
            if left:
                self._running[node] = left
            else:
                self._running.pop(node, None)
            if timed_out:
                if node not in self._stuck_until:
                    log.warning("%s did not answer a command; its commands fail at once for %.0f s", node,
                                self.stuck_s)
                self._stuck_until[node] = self._clock() + self.stuck_s
            elif self._stuck_until.pop(node, None) is not None:
                log.info("%s answers commands again", node)


class Upstream:
    """The fleet client of the web app: `call(node, actor, method, ...)` or an ApiError saying what failed."""

    def __init__(self, fleet: Fleet | None, command_timeout: float = COMMAND_TIMEOUT,
                 poll_timeout: float = POLL_TIMEOUT, gate: CommandGate | None = None) -> None:
        self.fleet = fleet
        self.gate = gate or CommandGate()
        self.command_timeout = command_timeout
        self.poll_timeout = poll_timeout
        configure()
        self._connections = Connections(fleet.host, fleet.port) if fleet is not None else None
        # Commands and page polls get separate pools: polls of many dead spokes must not
        # delay an operator's command to a live one.
        self._commands = ThreadPoolExecutor(8, thread_name_prefix="web-command")
        self._polls = ThreadPoolExecutor(16, thread_name_prefix="web-poll")

    @property
    def available(self) -> bool:
        """True when the app was given a fleet client (the hub's agent always gives one)."""
        return self.fleet is not None

    def call(self, node: str, actor: str, method: str, *args: Any, poll: bool = False) -> Any:
        """Call `harvester.<node>.<actor>.<method>(*args)` once; ApiError (404/400/429/502/503/504) on failure."""
        future = self.submit(node, actor, method, *args, poll=poll)
        return self.result(future, node, actor, poll=poll)

    def submit(self, node: str, actor: str, method: str, *args: Any, poll: bool = False,
               timed: bool = False) -> Future:
        """Start a call on the worker pool; pair with result(). `timed`: the result is (value, seconds)."""
        connections = self._connections
        if connections is None:
            raise ApiError(503, "this web app has no fleet client, so it cannot reach the spokes")
        timeout = self.poll_timeout if poll else self.command_timeout
        name = object_name(node, actor)
        if not poll:
            self.gate.enter(node)  # released by result(), which every caller of submit() pairs with it

        def run() -> Any:
            # Commands are never retried (a retried beep beeps twice); a read may retry once
            # when the spoke had closed the connection under us.
            t0 = time.perf_counter()
            value = connections.call(name, method, args, timeout, retry_closed=poll)
            return (value, time.perf_counter() - t0) if timed else value

        try:
            return (self._polls if poll else self._commands).submit(run)
        except RuntimeError:  # the pool is shut down: the app is stopping
            if not poll:
                self.gate.leave(node, False)
            raise ApiError(503, "the web app is stopping") from None

    def result(self, future: Future, node: str, actor: str, poll: bool = False) -> Any:
        """Wait (bounded) for a submitted call and map its failure to an ApiError."""
        timeout = self.poll_timeout if poll else self.command_timeout
        name = object_name(node, actor)
        timed_out = False
        try:
            return future.result(timeout=timeout + MARGIN)
        except FutureTimeout:
            # Not started yet (pool busy with frozen spokes): it must not run after we answered.
            future.cancel()
            timed_out = True
            raise ApiError(504, f"{name} did not answer within {timeout:g} s") from None
        except Exception as exc:
            timed_out = isinstance(exc, pyro_errors.TimeoutError)
            raise map_error(exc, node, actor, timeout) from None
        finally:
            if not poll:
                self.gate.leave(node, timed_out)

    def close(self) -> None:
        """Stop the worker pools without waiting for calls stuck on dead spokes."""
        self._commands.shutdown(wait=False, cancel_futures=True)
        self._polls.shutdown(wait=False, cancel_futures=True)
        if self._connections is not None:
            self._connections.close()


def map_error(exc: BaseException, node: str, actor: str, timeout: float) -> ApiError:
    """The HTTP answer for a failed actor call: the client's mistake is 4xx, the fleet's is 502/503/504."""
    name = object_name(node, actor)
    if isinstance(exc, pyro_errors.NamingError):
        return ApiError(404, f"node {node!r} has no {actor} actor registered with the name server")
    if isinstance(exc, pyro_errors.TimeoutError):
        return ApiError(504, f"{name} did not answer within {timeout:g} s")
    if isinstance(exc, pyro_errors.CommunicationError | ConnectionError):
        return ApiError(502, f"cannot reach {name}: {exc}")
    if isinstance(exc, ActuatorArgumentError | BadRequest):
        return ApiError(400, str(exc))
    if isinstance(exc, Busy):
        return ApiError(503, f"{name} is busy: {exc}", {"Retry-After": "1"})
    if isinstance(exc, ActorUnavailable):
        return ApiError(503, str(exc), {"Retry-After": "5"})
    log.warning("%s answered with an unexpected error: %s: %s", name, type(exc).__name__, exc)
    return ApiError(502, f"{name} failed: {type(exc).__name__}: {exc}")
