"""The generic Python sandbox: one component that runs any plain-.py plugin behind the world.

Built by plugins/sandbox/build.py with componentize-py --stub-wasi, so the only way out is
the `host` interface. Each store holds one instance of this app and one plugin.
"""

# Only stdlib modules imported at build time exist inside the component: import every
# module a plugin may import (harvester_plugin.ALLOWED_IMPORTS) here, once.
import bisect  # noqa: F401
import collections  # noqa: F401
import contextlib
import copy  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import enum  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import operator  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import struct  # noqa: F401
import sys
import typing  # noqa: F401
import warnings
from collections.abc import Iterator
from typing import Any

import harvester_plugin as sdk
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

_SEVERITY = {"info": types.Severity.INFO, "warning": types.Severity.WARNING, "critical": types.Severity.CRITICAL}
_LEVEL = {"debug": host.Level.DEBUG, "info": host.Level.INFO, "warning": host.Level.WARNING,
          "error": host.Level.ERROR}


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Err as err:
        raise sdk.host_error(str(err.value)) from None


class WitPort:
    """The SDK's port onto the WIT host imports; an `Err` becomes HostError/HostDenied."""

    def now(self) -> float:
        return host.now()

    def log(self, level: str, message: str) -> None:
        _call(host.log, _LEVEL[level], message)

    def set_led(self, node: str, index: int, rgb: tuple[int, int, int]) -> None:
        _call(host.set_led, node, index, types.Rgb(*rgb))

    def beep(self, node: str, count: int, on_ms: int) -> None:
        _call(host.beep, node, count, on_ms)

    def play(self, node: str, pattern: str) -> None:
        _call(host.play, node, pattern)

    def i2c_read(self, bus: int, address: int, register: int, length: int) -> bytes:
        return _call(host.i2c_read, bus, address, register, length)

    def i2c_write(self, bus: int, address: int, register: int, data: bytes) -> None:
        _call(host.i2c_write, bus, address, register, data)

    def state_get(self, key: str) -> str | None:
        return _call(host.state_get, key)

    def state_set(self, key: str, value: str | None) -> None:
        _call(host.state_set, key, value)

    def raise_alert(self, a: dict[str, Any]) -> None:
        alert = types.Alert(a["id"], _SEVERITY[a["severity"]], a["message"], a["node"], a["sensor"],
                            a["quantity"], a["value"])
        _call(host.raise_alert, alert)

    def clear_alert(self, alert_id: str, message: str, value: float | None) -> None:
        _call(host.clear_alert, alert_id, message, value)


class _LogStream:
    """sys.stdout/sys.stderr inside the sandbox: lines go to the host log (stdio is stubbed)."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.buffer = ""

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line:
                # A refusal (the log rate limit) is counted by the host; there is nowhere else to write.
                with contextlib.suppress(Err):
                    host.log(_LEVEL[self.level], line)
        return len(text)

    def flush(self) -> None:
        pass


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    # The default handler reads the source line through linecache, which opens a file:
    # that traps here. A plugin's warning (say, a SyntaxWarning) goes to the host log.
    sys.stderr.write(f"{filename}:{lineno}: {category.__name__}: {message}\n")


_compiling = False


def _refuse_files_while_compiling(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: an "open" while the plugin file compiles raises instead of reaching WASI."""
    # To quote the offending line of a syntax error, CPython's compiler opens the file named
    # in compile() (Py_fopen); under --stub-wasi that open traps, and a plugin's typo became
    # a sandbox trap. Py_fopen raises the "open" audit event first: refused there, the open
    # fails as an exception and the compiler carries on without the line. Only while the
    # plugin file compiles: at any other time no plugin code path is changed.
    if _compiling and event == "open":
        raise PermissionError("the sandbox has no files")


@contextlib.contextmanager
def _no_files() -> Iterator[None]:
    """While the plugin file compiles, opening a file fails instead of trapping."""
    global _compiling
    _compiling = True
    try:
        yield
    finally:
        _compiling = False


sys.addaudithook(_refuse_files_while_compiling)
sys.stdout = _LogStream("info")
sys.stderr = _LogStream("error")
warnings.showwarning = _show_warning
_runtime = sdk.Runtime(WitPort(), compile_guard=_no_files)


class Plugin(exports.Plugin):
    """The world's `plugin` export, delegating to the SDK runtime."""

    def load(self, name: str, source: str, config: str) -> None:
        try:
            _runtime.load(name, source, config)
        except sdk.PluginFailure as exc:
            raise Err(str(exc)) from None

    def evaluate(self, request: str) -> str:
        try:
            return _runtime.evaluate(request)
        except sdk.PluginFailure as exc:
            raise Err(str(exc)) from None

    def poll(self) -> str:
        try:
            return _runtime.poll()
        except sdk.PluginFailure as exc:
            raise Err(str(exc)) from None
