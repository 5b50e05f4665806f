"""The actor base: ping, health, describe, and one gate that serializes and counts calls."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from Pyro5.api import expose

from actors.errors import Busy
from hal.names import object_name

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# How long a call waits for the actor's previous call before answering Busy.
DEFAULT_QUEUE_WAIT = 5.0
# How many calls may wait behind the running one; the next gets Busy at once, so a slow
# actor costs at most this many Pyro5 worker threads, never the whole pool.
DEFAULT_MAX_WAITING = 4
SLOW_CALL_S = 2.0


class CallGate:
    """At most `concurrency` calls run and `max_waiting` wait; everything else is Busy."""

    def __init__(self, concurrency: int = 1, max_waiting: int = DEFAULT_MAX_WAITING,
                 wait: float = DEFAULT_QUEUE_WAIT) -> None:
        self.concurrency, self.max_waiting, self.wait = concurrency, max_waiting, wait
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self.waiting = 0

    def enter(self, what: str) -> None:
        """Take a slot or raise Busy (immediately when the queue is full)."""
        if self._slots.acquire(blocking=False):
            return
        with self._lock:
            if self.waiting >= self.max_waiting:
                raise Busy(f"{what} is busy: {self.concurrency} call(s) running and {self.waiting} waiting")
            self.waiting += 1
        try:
            if not self._slots.acquire(timeout=self.wait):
                raise Busy(f"{what} is busy: no slot within {self.wait}s")
        finally:
            with self._lock:
                self.waiting -= 1

    def leave(self) -> None:
        """Give the slot back."""
        self._slots.release()


def remote(fn: F) -> F:
    """Expose a method over Pyro5, through the actor's call gate, counted in health()."""

    @functools.wraps(fn)
    def wrapper(self: Actor, *args: Any, **kwargs: Any) -> Any:
        try:
            self._gate.enter(self.object_name)
        except Busy:
            self._count(busy=True)
            raise
        t0 = time.perf_counter()
        try:
            result = fn(self, *args, **kwargs)
        except Exception as exc:
            self._count(error=exc, seconds=time.perf_counter() - t0)
            raise
        finally:
            self._gate.leave()
        self._count(seconds=time.perf_counter() - t0)
        return result

    wrapper._harvester_remote = True  # type: ignore[attr-defined]
    return expose(wrapper)  # type: ignore[return-value]


class Actor:
    """A node's remote object: plain domain object inside, thin exposed surface outside."""

    kind = "agent"

    def __init__(self, node: str, name: str, role: str = "spoke", tags: set[str] | None = None,
                 gate: CallGate | None = None) -> None:
        self.node = node
        self.name = name
        self.role = role
        self.extra_tags = set(tags or ())
        # One call at a time by default: device drivers are not written for concurrency,
        # and Pyro5's thread server would otherwise run calls to one actor in parallel.
        self._gate = gate or CallGate()
        self._stats_lock = threading.Lock()
        self._started = time.time()
        self._calls = 0
        self._errors = 0
        self._busy = 0
        self._slow = 0
        self._call_seconds = 0.0
        self._last_error: str | None = None
        self._last_error_ts: float | None = None
        self.availability = "ok"  # not `state`: LedsActor and BuzzerActor expose state()

    @property
    def object_name(self) -> str:
        """`harvester.<node>.<actor>`."""
        return object_name(self.node, self.name)

    def metadata(self) -> set[str]:
        """Name-server tags used for discovery."""
        return {f"node:{self.node}", f"role:{self.role}", f"kind:{self.kind}", f"actor:{self.name}",
                "api:1", *self.extra_tags}

    def _count(self, error: BaseException | None = None, seconds: float = 0.0, busy: bool = False) -> None:
        with self._stats_lock:
            if busy:
                self._busy += 1
                return
            self._calls += 1
            self._call_seconds += seconds
            if seconds > SLOW_CALL_S:
                self._slow += 1
            if error is not None:
                self._errors += 1
                self._last_error = f"{type(error).__name__}: {error}"
                self._last_error_ts = time.time()

    def note_error(self, message: str | None) -> None:
        """Record a device-level problem (or its clearance) for health()."""
        with self._stats_lock:
            if message is None:
                if self.availability != "ok":
                    log.info("%s recovered", self.object_name)
                self.availability = "ok"
                return
            if self.availability == "ok":
                log.warning("%s unavailable: %s", self.object_name, message)
            self.availability = "unavailable"
            self._last_error = message
            self._last_error_ts = time.time()

    @expose
    def ping(self) -> str:
        """Answer 'pong': the cheapest liveness check."""
        return "pong"

    @expose
    def health(self) -> dict[str, Any]:
        """State, last error, uptime and call counters of this actor."""
        with self._stats_lock:
            return {
                "name": self.object_name, "kind": self.kind, "state": self.availability,
                "uptime_s": round(time.time() - self._started, 3),
                "calls": self._calls, "errors": self._errors, "busy_rejections": self._busy,
                "slow_calls": self._slow, "waiting": self._gate.waiting,
                "mean_call_ms": round(1000 * self._call_seconds / self._calls, 3) if self._calls else None,
                "last_error": self._last_error, "last_error_ts": self._last_error_ts,
            }

    @expose
    def describe(self) -> dict[str, str]:
        """Every remote method with its signature and docstring (help for the REPL)."""
        out = {}
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            if callable(fn) and getattr(fn, "_pyroExposed", False) and not attr.startswith("_"):
                target = inspect.unwrap(fn)
                sig = str(inspect.signature(target)).replace("(self, ", "(").replace("(self)", "()").replace("'", "")
                out[attr] = f"{attr}{sig}: {inspect.getdoc(target) or ''}"
        return out
