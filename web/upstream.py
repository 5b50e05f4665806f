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
from nameserver.pyro import configure
from web.http import ApiError

log = logging.getLogger(__name__)
COMMAND_TIMEOUT = 3.0  # seconds a spoke gets to answer a command
POLL_TIMEOUT = 1.0  # seconds a spoke gets to answer a state read for the page
MARGIN = 0.5  # on top of a call's timeout, for the name lookup and thread hand-over
# A connection idle longer than this is closed rather than reused: the spoke's daemon drops
# connections silent for COMMTIMEOUT (30 s), and a command sent on a dropped connection fails.
IDLE_REUSE = 10.0
MAX_IDLE_PER_ACTOR = 4


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
            proxy._pyroClaimOwnership()
            proxy._pyroRelease()
        if found is not None:
            found._pyroClaimOwnership()
            return found, True
        return Proxy(f"PYRONAME:{name}@{self.host}:{self.port}"), False

    def _give(self, name: str, proxy: Proxy) -> None:
        with self._lock:
            stack = self._idle.setdefault(name, [])
            if len(stack) < MAX_IDLE_PER_ACTOR:
                stack.append((proxy, self._clock()))
                return
        proxy._pyroRelease()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for stack in idle.values():
            for proxy, _ in stack:
                proxy._pyroClaimOwnership()
                proxy._pyroRelease()


class Upstream:
    """The fleet client of the web app: `call(node, actor, method, ...)` or an ApiError saying what failed."""

    def __init__(self, fleet: Fleet | None, command_timeout: float = COMMAND_TIMEOUT,
                 poll_timeout: float = POLL_TIMEOUT) -> None:
        self.fleet = fleet
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

        def run() -> Any:
            # Commands are never retried (a retried beep beeps twice); a read may retry once
            # when the spoke had closed the connection under us.
            t0 = time.perf_counter()
            value = connections.call(name, method, args, timeout, retry_closed=poll)
            return (value, time.perf_counter() - t0) if timed else value

        return (self._polls if poll else self._commands).submit(run)

    def result(self, future: Future, node: str, actor: str, poll: bool = False) -> Any:
        """Wait (bounded) for a submitted call and map its failure to an ApiError."""
        timeout = self.poll_timeout if poll else self.command_timeout
        name = object_name(node, actor)
        try:
            return future.result(timeout=timeout + MARGIN)
        except FutureTimeout:
            # Not started yet (pool busy with frozen spokes): it must not run after we answered.
            future.cancel()
            raise ApiError(504, f"{name} did not answer within {timeout:g} s") from None
        except Exception as exc:
            raise map_error(exc, node, actor, timeout) from None

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
