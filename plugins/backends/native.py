"""Native backend: plugin files run in the node process, for boards too small for wasmtime.

TRUSTED PLUGINS ONLY. The same files, the same SDK, the same host API and JSON protocol
as the sandbox, so results are identical; but nothing here is a security boundary. The
import allow-list and the missing `open` keep honest plugins portable, not hostile ones
contained (any Python code can reach the interpreter's internals). Memory is not limited.
The time limit is enforced on a best-effort basis: a watchdog raises an exception inside
the overrunning call, which stops pure-Python loops but not a call blocked in C.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from typing import Any

from plugins.backends.base import EMPTY_REQUEST, Backend, PluginInstance, PluginSource, plugin_error_text
from plugins.errors import PluginCallError, PluginLoadError, PluginTimeout
from plugins.hostapi import HostApi, HostRefusal
from plugins.sdk import load_sdk

log = logging.getLogger(__name__)


class _Deadline(BaseException):
    """Raised asynchronously into a native plugin call that ran past its limit."""


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    # PyThreadState_SetAsyncExc is CPython's documented way to interrupt another thread's
    # Python code at the next bytecode boundary; None clears a pending one.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class Watchdog:
    """One thread that interrupts calls past their deadline (re-firing if the plugin swallows it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, float, int]] = {}  # token -> (deadline, period, thread id)
        self._fired: set[int] = set()
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        """Start timing the calling thread; returns a token for disarm()."""
        with self._cond:
            self._next += 1
            token = self._next
            self._armed[token] = (time.monotonic() + seconds, max(seconds, 0.05), threading.get_ident())
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="plugin-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Stop timing; True if the deadline fired. Clears an exception not yet delivered."""
        with self._cond:
            entry = self._armed.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
            if fired:
                # Under the lock the watchdog cannot fire again: after this no _Deadline is pending.
                _async_raise(entry[2] if entry else threading.get_ident(), None)
            return fired

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._armed:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                token, (deadline, period, tid) = min(self._armed.items(), key=lambda kv: kv[1][0])
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                self._fired.add(token)
                self._armed[token] = (now + period, period, tid)
                _async_raise(tid, _Deadline)


_WATCHDOG = Watchdog()


class NativePort:
    """The SDK's port onto a HostApi, in-process: refusals become the SDK's HostError/HostDenied."""

    def __init__(self, api: HostApi, sdk: Any) -> None:
        self._api = api
        self._sdk = sdk

    def _do(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except HostRefusal as exc:
            raise self._sdk.host_error(str(exc)) from None
        except Exception as exc:  # a bug on our side: the plugin gets an error, the log the details
            log.exception("plugin %s: host function %s failed", self._api.name, getattr(fn, "__name__", fn))
            self._api.env.count("host_errors")
            raise self._sdk.HostError(f"internal host error: {type(exc).__name__}") from None

    def now(self) -> float:
        return self._api.now()

    def log(self, level: str, message: str) -> None:
        self._do(self._api.log, level, message)

    def set_led(self, node: str, index: int, rgb: tuple[int, int, int]) -> None:
        self._do(self._api.set_led, node, index, rgb)

    def beep(self, node: str, count: int, on_ms: int) -> None:
        self._do(self._api.beep, node, count, on_ms)

    def play(self, node: str, pattern: str) -> None:
        self._do(self._api.play, node, pattern)

    def i2c_read(self, bus: int, address: int, register: int, length: int) -> bytes:
        return self._do(self._api.i2c_read, bus, address, register, length)

    def i2c_write(self, bus: int, address: int, register: int, data: bytes) -> None:
        self._do(self._api.i2c_write, bus, address, register, bytes(data))

    def state_get(self, key: str) -> str | None:
        return self._do(self._api.state_get, key)

    def state_set(self, key: str, value: str | None) -> None:
        self._do(self._api.state_set, key, value)

    def raise_alert(self, alert: dict[str, Any]) -> None:
        self._do(self._api.raise_alert, dict(alert))

    def clear_alert(self, alert_id: str, message: str, value: float | None) -> None:
        self._do(self._api.clear_alert, alert_id, message, value)


class NativeInstance(PluginInstance):
    """A plugin file loaded into this process by the SDK runtime."""

    def __init__(self, source: PluginSource, api: HostApi) -> None:
        super().__init__(source, api)
        self._sdk = load_sdk()
        self._runtime: Any = None

    @property
    def alive(self) -> bool:
        """False after a timeout, until restart()."""
        return self._runtime is not None

    def _guarded(self, limit_ms: int, fn: Any, *args: Any) -> Any:
        token = _WATCHDOG.arm(limit_ms / 1000)
        fired = False
        try:
            try:
                return fn(*args)
            finally:
                fired = _WATCHDOG.disarm(token)
        except _Deadline:
            _WATCHDOG.disarm(token)  # it may have landed inside disarm() itself, before the entry went
            fired = True
            raise PluginTimeout(f"stopped after exceeding its {limit_ms} ms limit (native backend, best effort)") from None
        except self._sdk.PluginFailure as exc:
            if fired:  # the SDK turned our _Deadline into a failure message
                raise PluginTimeout(f"stopped after exceeding its {limit_ms} ms limit (native backend, best effort)") from None
            raise PluginCallError(plugin_error_text(str(exc))) from None  # held to the sandbox's bound
        finally:
            if fired:
                self._runtime = None  # its state was interrupted mid-way: reload before the next call

    def _boot(self) -> None:
        runtime = self._sdk.Runtime(NativePort(self.api, self._sdk))
        m = self.source.manifest
        try:
            self._guarded(m.limits.load_ms, runtime.load, self.source.name, self.source.text, m.config_json())
        except PluginCallError as exc:
            raise PluginLoadError(str(exc)) from None
        self._runtime = runtime

    def call(self, method: str, arg: str | None = None) -> str:
        """Run evaluate/poll under the watchdog."""
        if self._runtime is None:
            raise PluginTimeout("not running (stopped earlier; restart pending)")
        runtime = self._runtime
        limit = self.source.manifest.limits.call_ms
        if method == "evaluate":
            return self._guarded(limit, runtime.evaluate, arg or EMPTY_REQUEST)
        if method == "poll":
            return self._guarded(limit, runtime.poll)
        raise PluginCallError(f"unknown plugin method {method!r}")

    def close(self) -> None:
        """Drop the plugin's namespace."""
        self._runtime = None


class NativeBackend(Backend):
    """Runs .py plugins in-process (trusted only); .wasm plugins need the wasm profile."""

    name = "native"

    def _create(self, source: PluginSource, api: HostApi) -> PluginInstance:
        if source.kind != "py":
            raise PluginLoadError(f"{source.path.name}: a .wasm plugin needs the wasm profile")
        return NativeInstance(source, api)
