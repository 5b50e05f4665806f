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

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# How long a call waits for the actor's previous call before answering Busy.
DEFAULT_QUEUE_WAIT = 10.0


def remote(fn: F) -> F:
    """Expose a method over Pyro5, serialized through the actor's lock and counted in health()."""

    @functools.wraps(fn)
    def wrapper(self: Actor, *args: Any, **kwargs: Any) -> Any:
        if not self._gate.acquire(timeout=self.queue_wait):
            self._count(busy=True)
            raise Busy(f"{self.object_name} is busy: a previous call has run for over {self.queue_wait}s")
        t0 = time.perf_counter()
        try:
            result = fn(self, *args, **kwargs)
        except Exception as exc:
            self._count(error=exc, seconds=time.perf_counter() - t0)
            raise
        finally:
            self._gate.release()
        self._count(seconds=time.perf_counter() - t0)
        return result

    wrapper._harvester_remote = True  # type: ignore[attr-defined]
    return expose(wrapper)  # type: ignore[return-value]


class Actor:
    """A node's remote object: plain domain object inside, thin exposed surface outside."""

    kind = "agent"

    def __init__(self, node: str, name: str, role: str = "spoke", tags: set[str] | None = None,
                 queue_wait: float = DEFAULT_QUEUE_WAIT) -> None:
        self.node = node
        self.name = name
        self.role = role
        self.queue_wait = queue_wait
        self.extra_tags = set(tags or ())
        self._gate = threading.Lock()
        self._stats_lock = threading.Lock()
        self._started = time.time()
        self._calls = 0
        self._errors = 0
        self._busy = 0
        self._call_seconds = 0.0
        self._last_error: str | None = None
        self._last_error_ts: float | None = None
        self.state = "ok"

    @property
    def object_name(self) -> str:
        """`harvester.<node>.<actor>`."""
        return f"harvester.{self.node}.{self.name}"

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
            if error is not None:
                self._errors += 1
                self._last_error = f"{type(error).__name__}: {error}"
                self._last_error_ts = time.time()

    def note_error(self, message: str | None) -> None:
        """Record a device-level problem (or its clearance) for health()."""
        with self._stats_lock:
            if message is None:
                if self.state != "ok":
                    log.info("%s recovered", self.object_name)
                self.state = "ok"
                return
            if self.state == "ok":
                log.warning("%s unavailable: %s", self.object_name, message)
            self.state = "unavailable"
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
                "name": self.object_name, "kind": self.kind, "state": self.state,
                "uptime_s": round(time.time() - self._started, 3),
                "calls": self._calls, "errors": self._errors, "busy_rejections": self._busy,
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
