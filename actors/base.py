"""The actor base: ping, health, describe, one gate that serializes and counts calls, and the
one argument check every remote method goes through."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, overload

from Pyro5.server import expose

from actors.errors import BadRequest, Busy
from hal.errors import ActuatorArgumentError
from hal.names import object_name
from nameserver.pyro import TypedCall

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


# -- argument checks -------------------------------------------------------------------------
# Names, colours, patterns and ids are all short: a longer string is a mistake or an attack.
MAX_STR = 64
# Free text inside a record (a reading's `reason`).
MAX_TEXT = 1024
# Errors that mean "the caller asked for something this actor cannot do": counted as refusals,
# never as the actor's own errors (health()'s errors and last_error describe the actor).
REFUSALS: tuple[type[Exception], ...] = (BadRequest, ActuatorArgumentError)


def _show(value: Any) -> str:
    """A short repr for an error message (a huge int's repr would itself raise on 3.11+)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


class Arg:
    """How one remote argument is checked: its type, its range, and whether None is allowed."""

    def __init__(self, *, optional: bool = False) -> None:
        self.optional = optional

    def describe(self) -> str:
        """What an acceptable value is, for error messages."""
        raise NotImplementedError

    def accept(self, value: Any) -> tuple[bool, Any]:
        """(True, the value normalised) or (False, None)."""
        raise NotImplementedError

    def check(self, name: str, value: Any, error: type[Exception]) -> Any:
        """The value, normalised; `error` when its type or range is wrong."""
        if value is None and self.optional:
            return None
        ok, normal = self.accept(value)
        if not ok:
            raise error(f"{name} must be {self.describe()}{' or None' if self.optional else ''}, got {_show(value)}")
        return normal


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, never in an argument: True is not pixel 1
    return isinstance(value, int) and not isinstance(value, bool)


class Int(Arg):
    """An int (not a bool, not a float) in lo..hi."""

    def __init__(self, lo: int, hi: int, *, optional: bool = False) -> None:
        super().__init__(optional=optional)
        self.lo, self.hi = lo, hi

    def describe(self) -> str:
        """'an int in lo..hi'."""
        return f"an int in {self.lo}..{self.hi}"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Accept an int in range."""
        return (True, int(value)) if _is_int(value) and self.lo <= value <= self.hi else (False, None)


class Number(Arg):
    """A finite int or float (not a bool, not a string) in lo..hi, answered as a float; -0.0 becomes 0.0."""

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, *, optional: bool = False) -> None:
        super().__init__(optional=optional)
        self.lo, self.hi = lo, hi

    def describe(self) -> str:
        """'a finite number in lo..hi'."""
        span = "" if math.isinf(self.lo) and math.isinf(self.hi) else f" in {self.lo:g}..{self.hi:g}"
        return f"a finite number{span}"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Accept a finite number in range."""
        if not (_is_int(value) or isinstance(value, float)):
            return False, None
        try:
            number = float(value)
        except OverflowError:  # an int past float's range is no measurement or setting of ours
            return False, None
        if not math.isfinite(number) or not self.lo <= number <= self.hi:
            return False, None
        return True, number + 0.0  # IEEE: -0.0 + 0.0 is +0.0, so -0.0 is never echoed back


class Str(Arg):
    """A non-empty str of at most max_len characters, optionally one of `choices`."""

    def __init__(self, max_len: int = MAX_STR, *, choices: tuple[str, ...] = (), optional: bool = False) -> None:
        super().__init__(optional=optional)
        self.max_len, self.choices = max_len, choices

    def describe(self) -> str:
        """'one of ...' or 'a string of 1..N characters'."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        return f"a string of 1..{self.max_len} characters"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Accept a short enough string (from `choices` when given)."""
        if not isinstance(value, str) or not 0 < len(value) <= self.max_len:
            return False, None
        if self.choices and value not in self.choices:
            return False, None
        return True, value


class Bool(Arg):
    """True or False: never 0/1, never a string ('no' would be truthy)."""

    def describe(self) -> str:
        """'True or False'."""
        return "True or False"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Accept a bool."""
        return (True, value) if isinstance(value, bool) else (False, None)


class Record(Arg):
    """A flat dict with short string keys and scalar values (None, bool, finite number, text)."""

    def __init__(self, max_keys: int = 16, *, optional: bool = False) -> None:
        super().__init__(optional=optional)
        self.max_keys = max_keys

    def describe(self) -> str:
        """'an object of ...'."""
        return f"an object of at most {self.max_keys} string keys with plain values"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Accept a flat, small dict; numbers keep their type (the receiver checks its fields)."""
        if not isinstance(value, dict) or len(value) > self.max_keys:
            return False, None
        for key, item in value.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_STR or not _scalar(item):
                return False, None
        return True, {k: v + 0.0 if isinstance(v, float) else v for k, v in value.items()}


def _scalar(value: Any) -> bool:
    """True for a plain record value: None, a bool, short text or a finite number."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    return Number().accept(value)[0]


class ListOf(Arg):
    """A list (a tuple from serpent) of at most max_items values, each checked by `item`."""

    def __init__(self, item: Arg, max_items: int, *, optional: bool = False) -> None:
        super().__init__(optional=optional)
        self.item, self.max_items = item, max_items

    def describe(self) -> str:
        """'a list of at most N of ...'."""
        return f"a list of at most {self.max_items} of {self.item.describe()}"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Accept a short list whose every item is accepted."""
        if not isinstance(value, (list, tuple)) or len(value) > self.max_items:
            return False, None
        out = []
        for item in value:
            ok, normal = self.item.accept(item)
            if not ok:
                return False, None
            out.append(normal)
        return True, out


def _argument_checker(fn: Callable[..., Any], specs: dict[str, Arg]) -> Callable[..., inspect.BoundArguments]:
    """Bind a call to fn's signature and check each given argument against its spec.

    Wrong arity or an unknown keyword is refused like a bad value: Pyro5 would otherwise
    hand the caller a bare TypeError from deep inside the daemon."""
    sig = inspect.signature(fn)
    unknown = set(specs) - set(sig.parameters)
    if unknown:
        raise TypeError(f"{fn.__qualname__}: argument checks for unknown parameter(s) {sorted(unknown)}")
    name = fn.__name__

    def check(self: Actor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        error = self.argument_error
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise error(f"{name}(): {exc}") from None
        for param, value in bound.arguments.items():
            spec = specs.get(param)
            if spec is not None:
                bound.arguments[param] = spec.check(param, value, error)
        return bound

    return check


def _gated(fn: F, specs: dict[str, Arg]) -> F:
    """The remote wrapper: check the arguments, then run through the gate, counting the outcome."""
    check = _argument_checker(fn, specs)

    @functools.wraps(fn)
    def wrapper(self: Actor, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = check(self, args, kwargs)
        except REFUSALS:
            self._count(refused=True)
            raise
        # Checked before the gate: a malformed call never waits for, or takes, a slot.
        try:
            self._gate.enter(self.object_name)
        except Busy:
            self._count(busy=True)
            raise
        t0 = time.perf_counter()
        try:
            result = fn(*bound.args, **bound.kwargs)
        except REFUSALS:
            self._count(refused=True)
            raise
        except Exception as exc:
            self._count(error=exc, seconds=time.perf_counter() - t0)
            raise
        finally:
            self._gate.leave()
        self._count(seconds=time.perf_counter() - t0)
        return result

    wrapper._harvester_remote = True  # type: ignore[attr-defined]
    wrapper._harvester_checked = True  # type: ignore[attr-defined]
    wrapper._harvester_args = dict(specs)  # type: ignore[attr-defined]
    return expose(wrapper)  # type: ignore[return-value]


@overload
def remote(fn: F) -> F: ...


@overload
def remote(fn: None = None, **specs: Arg) -> Callable[[F], F]: ...


def remote(fn: F | None = None, **specs: Arg) -> F | Callable[[F], F]:
    """Expose a method over Pyro5, through the actor's call gate, counted in health().

    `@remote(index=Int(0, 1023), colour=Str(32))` checks those arguments first; every call
    is also bound to the signature, so wrong arity is refused the same typed way."""
    if fn is not None:
        return _gated(fn, specs)
    return lambda f: _gated(f, specs)


def query(fn: F) -> F:
    """Expose a cheap read (ping, health, describe, info) outside the gate: it answers even while
    the actor is busy, and is not counted; its arguments are checked like a remote method's."""
    if getattr(fn, "_harvester_checked", False):
        return fn
    check = _argument_checker(fn, {})

    @functools.wraps(fn)
    def wrapper(self: Actor, *args: Any, **kwargs: Any) -> Any:
        bound = check(self, args, kwargs)
        return fn(*bound.args, **bound.kwargs)

    wrapper._harvester_checked = True  # type: ignore[attr-defined]
    wrapper._harvester_args = {}  # type: ignore[attr-defined]
    return expose(wrapper)  # type: ignore[return-value]


class Actor:
    """A node's remote object: plain domain object inside, thin exposed surface outside."""

    kind = "agent"
    # The typed error for bad arguments: BadRequest here, ActuatorArgumentError for actuators.
    argument_error: ClassVar[type[Exception]] = BadRequest

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass's bare @expose methods the same argument check as @remote ones."""
        super().__init_subclass__(**kwargs)
        # A method exposed with Pyro5's plain @expose (AgentActor's) would otherwise answer a
        # wrong-arity call with a bare TypeError; no exposed method may skip the check.
        for attr, fn in list(vars(cls).items()):
            if (inspect.isfunction(fn) and not attr.startswith("_") and getattr(fn, "_pyroExposed", False)
                    and not getattr(fn, "_harvester_checked", False)):
                setattr(cls, attr, query(fn))

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
        self._refused = 0
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

    def typed_calls(self) -> dict[str, TypedCall]:
        """Methods whose calls the daemon decodes its own way (nameserver.pyro.decode_calls_typed);
        none by default."""
        return {}

    def _count(self, error: BaseException | None = None, seconds: float = 0.0, busy: bool = False,
               refused: bool = False) -> None:
        with self._stats_lock:
            if busy:
                self._busy += 1
                return
            if refused:
                self._refused += 1
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

    @query
    def ping(self) -> str:
        """Answer 'pong': the cheapest liveness check."""
        return "pong"

    @query
    def health(self) -> dict[str, Any]:
        """State, last error, uptime and call counters of this actor."""
        with self._stats_lock:
            return {
                "name": self.object_name, "kind": self.kind, "state": self.availability,
                "uptime_s": round(time.time() - self._started, 3),
                "calls": self._calls, "errors": self._errors, "busy_rejections": self._busy,
                "refused": self._refused,
                "slow_calls": self._slow, "waiting": self._gate.waiting,
                "mean_call_ms": round(1000 * self._call_seconds / self._calls, 3) if self._calls else None,
                "last_error": self._last_error, "last_error_ts": self._last_error_ts,
            }

    @query
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
