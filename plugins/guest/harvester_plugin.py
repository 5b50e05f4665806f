"""The plugin SDK: what a plugin file imports (`from harvester_plugin import ThresholdRule`).

This module runs in two places with the same behaviour: inside the WebAssembly sandbox
(CPython 3.14 compiled to wasm, stdlib only, no files, clocks or threads) and natively in
a node process (Python 3.11). So it uses the standard library only, and reaches the node
solely through a *port*: the sandbox's WIT imports, or the native backend's host object.

A plugin is a plain .py file that defines `evaluate(readings, host)` and optionally
`poll(host)` (a sensor it implements over I2C). `Runtime` loads such a file with a
restricted set of builtins and imports, calls it, and encodes what it returns as JSON.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

# Modules a plugin may import. The sandbox guest imports each of them at build time (only
# modules imported then exist inside the component); the native backend enforces the same
# list so a plugin that works natively works sandboxed too.
ALLOWED_IMPORTS = frozenset({
    "harvester_plugin", "math", "statistics", "json", "re", "collections", "datetime",
    "functools", "itertools", "dataclasses", "enum", "typing", "bisect", "heapq", "struct",
    "string", "operator", "copy", "fractions",
})
# Builtins a plugin does not get: files and the interactive helpers. In the sandbox the
# real boundary is the stubbed WASI (any system call traps); this keeps natively run
# plugins honest and gives a clear error instead of a trap.
REMOVED_BUILTINS = ("open", "input", "breakpoint", "exit", "quit", "help", "copyright", "credits", "license")
SEVERITIES = ("info", "warning", "critical")
LEVELS = ("debug", "info", "warning", "error")
# Same values as hal.leds.COLOURS (a unit test keeps them equal); copied because the
# sandbox cannot import the hardware layer.
COLOURS = {
    "off": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "amber": (255, 110, 0),
    "yellow": (255, 200, 0),
    "white": (255, 255, 255),
}
MAX_RESULT_BYTES = 16 * 1024
DENIED_PREFIX = "denied: "
# An error report quotes the plugin's own text: its message and the names of its exception
# type and function, each on one line and bounded, so that whatever a plugin raises reads
# as that plugin's error and nothing more (the host bounds the whole report again).
MAX_ERROR_TEXT = 500
MAX_ERROR_NAME = 100
# A host call costs tens of microseconds in the sandbox (wasmtime-py converts every
# argument through ctypes), so the SDK does not repeat what it already knows: state it
# read or wrote, and an LED colour it set less than LED_RESEND_S ago. Both caches are
# dropped after any call whose effects the host discarded (a failure or a dry run).
LED_RESEND_S = 30.0


class HostError(RuntimeError):
    """A host call failed or was refused; the message says why."""


class HostDenied(HostError, PermissionError):
    """The plugin's manifest does not grant this call; the hardware was not touched."""


class PluginFailure(Exception):
    """Raised by `Runtime` when the plugin cannot be loaded or its call failed."""


def host_error(message: str) -> HostError:
    """The SDK error for a host error message ("denied: ..." becomes HostDenied)."""
    return HostDenied(message) if message.startswith(DENIED_PREFIX) else HostError(message)


class Reading:
    """One reading as a plugin sees it (same fields as the node's readings)."""

    __slots__ = ("node", "sensor", "quantity", "value", "unit", "ts", "quality", "reason")

    def __init__(self, node: str, sensor: str, quantity: str, value: float | None, unit: str,
                 ts: float, quality: str = "ok", reason: str | None = None) -> None:
        self.node = node
        self.sensor = sensor
        self.quantity = quantity
        self.value = value
        self.unit = unit
        self.ts = ts
        self.quality = quality
        self.reason = reason

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reading:
        """Build from the JSON form."""
        return cls(d["node"], d["sensor"], d["quantity"], d.get("value"), d.get("unit", ""),
                   d["ts"], d.get("quality", "ok"), d.get("reason"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {k: getattr(self, k) for k in self.__slots__}

    @property
    def ok(self) -> bool:
        """True when the reading carries a trustworthy value (not calibrating, not unavailable)."""
        return self.quality == "ok" and self.value is not None

    def fresh(self, now: float, max_age_s: float) -> bool:
        """True when the value is trustworthy and at most `max_age_s` old."""
        return self.ok and now - self.ts <= max_age_s

    def __repr__(self) -> str:
        return f"Reading({self.node}.{self.sensor} {self.quantity}={self.value} {self.unit} {self.quality})"


def _rgb(colour: Any) -> tuple[int, int, int]:
    if isinstance(colour, str):
        try:
            return COLOURS[colour.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown colour {colour!r}; known: {', '.join(sorted(COLOURS))}") from None
    r, g, b = colour
    return int(r), int(g), int(b)


class Host:
    """The plugin's view of its node: clock, log, LEDs, buzzer, I2C, state and alerts."""

    def __init__(self, port: Any, name: str, config: dict[str, Any]) -> None:
        self._port = port
        self.name = name
        self.config = config
        self._now: float | None = None
        self._state: dict[str, str | None] = {}
        self._leds: dict[tuple[str, int], tuple[tuple[int, int, int], float]] = {}

    def now(self) -> float:
        """The node's clock (UTC epoch seconds), fixed for the duration of one call."""
        if self._now is None:
            self._now = float(self._port.now())
        return self._now

    def _begin_call(self, forget: bool) -> None:
        # One evaluation sees one instant: rules stay consistent, and a host call is saved.
        self._now = None
        if forget:
            self._state.clear()
            self._leds.clear()

    def log(self, message: str, level: str = "info") -> None:
        """Write to the node's log (rate-limited)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self._port.log(level, str(message))

    def set_led(self, index: int, colour: Any, node: str | None = None) -> None:
        """Set LED `index` to a colour name or (r, g, b); `node` targets another node's strip."""
        key, rgb = (node or "", int(index)), _rgb(colour)
        sent = self._leds.get(key)
        if sent is not None and sent[0] == rgb and self.now() - sent[1] < LED_RESEND_S:
            return
        self._port.set_led(key[0], key[1], rgb)
        self._leds[key] = (rgb, self.now())

    def beep(self, count: int = 1, on_ms: int = 200, node: str | None = None) -> None:
        """Beep `count` times."""
        self._port.beep(node or "", int(count), int(on_ms))

    def play(self, pattern: str, node: str | None = None) -> None:
        """Play a named buzzer pattern (alert, warning, critical, confirm)."""
        self._port.play(node or "", str(pattern))

    def i2c_read(self, bus: int, address: int, register: int, length: int = 1) -> bytes:
        """Read bytes from a granted I2C address."""
        return bytes(self._port.i2c_read(int(bus), int(address), int(register), int(length)))

    def i2c_write(self, bus: int, address: int, register: int, data: Any) -> None:
        """Write bytes to an I2C address granted read-write."""
        self._port.i2c_write(int(bus), int(address), int(register), bytes(data))

    def state_get(self, key: str, default: Any = None) -> Any:
        """A value this plugin stored (JSON-decoded), or `default`."""
        if key in self._state:
            raw = self._state[key]
        else:
            raw = self._state[key] = self._port.state_get(key)
        return default if raw is None else json.loads(raw)

    def state_set(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value; it survives reloads, traps and restarts."""
        raw = json.dumps(value, separators=(",", ":"))
        self._port.state_set(key, raw)
        self._state[key] = raw

    def state_delete(self, key: str) -> None:
        """Forget a stored value."""
        self._port.state_set(key, None)
        self._state[key] = None

    def raise_alert(self, alert_id: str, message: str, severity: str = "warning", node: str | None = None,
                    sensor: str | None = None, quantity: str | None = None, value: float | None = None) -> None:
        """Raise an alert (a no-op while the same id is active)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        self._port.raise_alert({"id": alert_id, "severity": severity, "message": str(message), "node": node,
                                "sensor": sensor, "quantity": quantity,
                                "value": None if value is None else float(value)})

    def clear_alert(self, alert_id: str, message: str = "", value: float | None = None) -> None:
        """Clear an alert (a no-op when it is not active)."""
        self._port.clear_alert(alert_id, str(message), None if value is None else float(value))


RANK = {"ok": 0, "unknown": 1, "warn": 2, "alert": 3}


class ThresholdRule:
    """A high-threshold alert with hysteresis, a hold time, and no judgement on bad data.

    Per sensor: "ok" -> "pending" once a fresh value is above `high` -> "alert" (raised)
    when it has stayed above for `hold_s` -> "ok" (cleared) once below `high - hysteresis`.
    Stale, calibrating or unavailable readings never fire and reset a pending hold; they
    do not clear a raised alert either. The state lives in host state, so a reload, a trap
    or a restart neither fires twice nor forgets a raised alert.
    """

    def __init__(self, host: Host, alert_id: str, quantity: str, high: float, hysteresis: float = 1.0,
                 hold_s: float = 30.0, stale_after_s: float = 120.0, warn: float | None = None,
                 severity: str = "warning", sensors: list[str] | None = None, label: str | None = None) -> None:
        if hysteresis < 0 or hold_s < 0 or stale_after_s <= 0:
            raise ValueError("hysteresis and hold_s must be >= 0 and stale_after_s > 0")
        self.host = host
        self.alert_id = alert_id
        self.quantity = quantity
        self.high = float(high)
        self.hysteresis = float(hysteresis)
        self.hold_s = float(hold_s)
        self.stale_after_s = float(stale_after_s)
        self.warn = None if warn is None else float(warn)
        self.severity = severity
        self.sensors = list(sensors or [])
        self.label = label or quantity.replace("_", " ")

    @classmethod
    def from_config(cls, host: Host, alert_id: str, quantity: str, **defaults: Any) -> ThresholdRule:
        """Build from the manifest's [config] table (keys high, hysteresis, hold_s, stale_after_s, ...)."""
        keys = ("high", "hysteresis", "hold_s", "stale_after_s", "warn", "severity", "sensors", "label")
        settings = {**defaults, **{k: host.config[k] for k in keys if k in host.config}}
        return cls(host, alert_id, quantity, **settings)

    def _relevant(self, r: Reading) -> bool:
        return r.quantity == self.quantity and (not self.sensors or r.sensor in self.sensors)

    def update(self, readings: list[Reading]) -> dict[str, Any] | None:
        """Advance the rule on a batch; None when the batch has nothing for it.

        Returns {"level": "ok"|"warn"|"unknown"|"alert" over all sensors, "raised": [...],
        "cleared": [...], "sensors": {sensor: per-sensor state}}.
        """
        latest: dict[tuple[str, str], Reading] = {}
        for r in readings:
            if self._relevant(r) and ((r.node, r.sensor) not in latest or r.ts >= latest[(r.node, r.sensor)].ts):
                latest[(r.node, r.sensor)] = r
        if not latest:
            return None
        now = self.host.now()
        key = f"rule:{self.alert_id}"
        states: dict[str, Any] = self.host.state_get(key, {})
        before = {k: dict(v) for k, v in states.items()}
        raised: list[dict[str, Any]] = []
        cleared: list[dict[str, Any]] = []
        for (node, sensor), r in sorted(latest.items()):
            slot = f"{node}.{sensor}"
            st = states.get(slot) or {"state": "ok", "since": None}
            change = self._step(st, r, now)
            # `seen` is written coarsely: a state write on every evaluation would cost a
            # host call and a file write each time for nothing.
            if now - st.get("seen", -1e18) >= self.stale_after_s / 4:
                st["seen"] = now
            states[slot] = st
            if change is not None:
                event = {"id": f"{self.alert_id}.{slot}", "node": node, "sensor": sensor, "value": r.value}
                if change == "raised":
                    self.host.raise_alert(event["id"], self._message(r), self.severity, node=node, sensor=sensor,
                                          quantity=self.quantity, value=r.value)
                    raised.append(event)
                else:
                    self.host.clear_alert(event["id"], f"{self.label} back to {r.value:g}", value=r.value)
                    cleared.append(event)
        if states != before:
            self.host.state_set(key, states)
        values = {f"{n}.{s}": r.value for (n, s), r in latest.items()}
        return {"level": self._overall(states, now), "raised": raised, "cleared": cleared, "sensors": states,
                "values": values}

    def _step(self, st: dict[str, Any], r: Reading, now: float) -> str | None:
        """Move one sensor's state on its latest reading; returns "raised", "cleared" or None."""
        if not r.fresh(now, self.stale_after_s):
            st["level"] = "alert" if st["state"] == "alert" else "unknown"
            if st["state"] == "pending":
                st["state"], st["since"] = "ok", None
            return None
        value = float(r.value)
        if st["state"] == "alert":
            if value < self.high - self.hysteresis:
                st["state"], st["since"], st["level"] = "ok", None, self._plain_level(value)
                return "cleared"
            st["level"] = "alert"
            return None
        if value <= self.high:
            st["state"], st["since"], st["level"] = "ok", None, self._plain_level(value)
            return None
        if st["state"] != "pending":
            st["state"], st["since"] = "pending", now
        if now - st["since"] >= self.hold_s:
            st["state"], st["level"] = "alert", "alert"
            return "raised"
        st["level"] = "warn"
        return None

    def _plain_level(self, value: float) -> str:
        return "warn" if self.warn is not None and value >= self.warn else "ok"

    def _overall(self, states: dict[str, Any], now: float) -> str:
        level = "ok"
        for st in states.values():
            lv = st.get("level", "unknown")
            if lv != "alert" and now - st.get("seen", now) > self.stale_after_s * 1.25:
                lv = "unknown"  # a sensor that stopped reporting no longer vouches for "ok"
            if RANK[lv] > RANK[level]:
                level = lv
        return level

    def _message(self, r: Reading) -> str:
        where = f"{r.node}.{r.sensor}"
        return f"{self.label} {r.value:g} {r.unit} on {where} above {self.high:g} for {self.hold_s:g} s"


def run_alert_row(readings: list[Reading], host: Host, alert_id: str, quantity: str,
                  on_raise: Any = None, **defaults: Any) -> dict[str, Any] | None:
    """One row of the alert table: a ThresholdRule plus its LED and an action on raise.

    Config keys: led (index), led_node ("" = this node), repeat_s (repeat `on_raise` while
    the alert stays active; 0 = once), plus ThresholdRule's keys. Actuator refusals are
    reported in the result, not raised, so an alert still fires on a node without LEDs.
    """
    rule = ThresholdRule.from_config(host, alert_id, quantity, **defaults)
    outcome = rule.update(readings)
    if outcome is None:
        return None
    cfg = host.config
    colour = {"alert": "red", "warn": "amber", "unknown": "amber", "ok": "green"}[outcome["level"]]
    result: dict[str, Any] = {"level": outcome["level"], "colour": colour, "values": outcome["values"],
                              "raised": [e["id"] for e in outcome["raised"]],
                              "cleared": [e["id"] for e in outcome["cleared"]]}
    node = cfg.get("led_node") or None
    problems = []
    if cfg.get("led") is not None:
        try:
            host.set_led(cfg["led"], colour, node=node)
        except HostError as exc:
            problems.append(str(exc))
    if on_raise is not None and _due(host, alert_id, outcome, float(cfg.get("repeat_s", 0))):
        try:
            on_raise(host, node)
        except HostError as exc:
            problems.append(str(exc))
    if problems:
        result["problems"] = problems
    return result


def _due(host: Host, alert_id: str, outcome: dict[str, Any], repeat_s: float) -> bool:
    """True on a raise, and every `repeat_s` while the alert stays active."""
    key = f"sounded:{alert_id}"
    now = host.now()
    if outcome["raised"]:
        host.state_set(key, now)
        return True
    if outcome["level"] != "alert" or repeat_s <= 0:
        return False
    last = host.state_get(key)
    if last is None or now - last >= repeat_s:
        host.state_set(key, now)
        return True
    return False


# -- loading and calling a plugin file -------------------------------------------------------

def _guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level != 0:
        raise ImportError("relative imports are not available to plugins")
    if name.partition(".")[0] not in ALLOWED_IMPORTS:
        raise ImportError(f"module {name!r} is not available to plugins "
                          f"(allowed: {', '.join(sorted(ALLOWED_IMPORTS))})")
    return builtins.__import__(name, globals, locals, fromlist, level)


def one_line(text: str, limit: int) -> str:
    """`text` with control characters escaped, cut to at most `limit` characters."""
    # Escaped, a newline in a plugin's message cannot start a line of its own in the node's log.
    # repr() escapes without a codec: looking up "unicode_escape" would import a module the
    # sandbox was built without, and that import searches the filesystem (a trap).
    text = text[:limit + 1]  # one past the limit, so the cut below still shows
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _message(value: object) -> str:
    """str(value) of a plugin's exception or its message, even when its __str__ raises."""
    try:
        return str(value)
    except BaseException:  # the plugin's class may raise anything here; the report must still go out
        return "<the message could not be formatted>"


def _where(exc: BaseException, filename: str) -> str:
    """' (line N in func) in NAME.py' for the innermost frame in the plugin file, or ''."""
    # Walk the frames by hand: the traceback module reads source lines through linecache,
    # which opens files, and opening a file traps inside the sandbox.
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            found = f" (line {tb.tb_lineno} in {one_line(code.co_name, MAX_ERROR_NAME)}) in {filename}"
        tb = tb.tb_next
    return found


def describe_exception(exc: BaseException, filename: str) -> str:
    """'Type: message (line N in func) in NAME.py'; 'SyntaxError: msg (line N, column C) in NAME.py'."""
    kind = one_line(type(exc).__name__, MAX_ERROR_NAME)
    if (isinstance(exc, SyntaxError) and type(exc.filename) is str and exc.filename == filename
            and type(exc.lineno) is int):
        # The compiler's own error: its position is in the plugin file, not in a frame, and
        # str() would name the file again. The source line is left out (no files to read).
        column = f", column {exc.offset}" if type(exc.offset) is int and exc.offset > 0 else ""
        text, where = _message("" if exc.msg is None else exc.msg), f" (line {exc.lineno}{column}) in {filename}"
    else:
        text, where = _message(exc), _where(exc, filename)
    text = one_line(text, MAX_ERROR_TEXT)
    return f"{kind}{': ' + text if text else ''}{where}"


class Runtime:
    """Loads one plugin file and calls it; used alike by the sandbox guest and the native backend."""

    def __init__(self, port: Any,
                 compile_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self._port = port
        # Entered around compiling the plugin file. The sandbox passes one that refuses file
        # opens: to quote the line of a syntax error CPython opens the file named in compile(),
        # and under the stubbed WASI that open would trap instead of failing.
        self._compile_guard = compile_guard
        self.host: Host | None = None
        self._evaluate: Any = None
        self._poll: Any = None
        self._filename = "plugin.py"
        self._forget = True  # the host discarded the last call's effects: drop the SDK's caches

    def _builtins(self) -> dict[str, Any]:
        table = dict(vars(builtins))
        for name in REMOVED_BUILTINS:
            table.pop(name, None)
        port = self._port

        def plugin_print(*args: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
            # print() goes to the node's log, never to a stream the plugin could not see
            port.log("info", sep.join(str(a) for a in args))

        table["__import__"] = _guarded_import
        table["print"] = plugin_print
        return table

    def load(self, name: str, source: str, config_json: str) -> None:
        """Compile and run the plugin file; it must define evaluate(readings, host)."""
        self._filename = f"{name}.py"  # errors and frames name the file the author edits
        try:
            config = json.loads(config_json or "{}")
            if not isinstance(config, dict):
                raise ValueError("config must be a JSON object")
            with self._compile_guard():
                code = compile(source, self._filename, "exec")
            namespace: dict[str, Any] = {"__name__": f"plugin_{name}", "__builtins__": self._builtins()}
            exec(code, namespace)
        except BaseException as exc:  # everything a plugin file can do wrong, reported as text
            raise PluginFailure(describe_exception(exc, self._filename)) from None
        evaluate = namespace.get("evaluate")
        poll = namespace.get("poll")
        if not callable(evaluate):
            raise PluginFailure("the plugin defines no evaluate(readings, host) function")
        self.host = Host(self._port, name, config)
        self._evaluate = evaluate
        self._poll = poll if callable(poll) else None

    def evaluate(self, request_json: str) -> str:
        """Call evaluate(readings, host) on {"readings": [...], "dry_run": bool}; returns JSON text."""
        if self._evaluate is None or self.host is None:
            raise PluginFailure("no plugin loaded")
        forget, self._forget = self._forget, True
        try:
            request = json.loads(request_json)
            readings = [Reading.from_dict(d) for d in request["readings"]]
            self.host._begin_call(forget)
            result = self._evaluate(readings, self.host)
            if result is not None and not isinstance(result, dict):
                raise TypeError(f"evaluate must return a dict or None, not {type(result).__name__}")
            text = json.dumps(result, allow_nan=False, separators=(",", ":"))
        except BaseException as exc:  # a plugin's failure is a value for the host, never a crash
            raise PluginFailure(describe_exception(exc, self._filename)) from None
        if len(text) > MAX_RESULT_BYTES:
            raise PluginFailure(f"result is {len(text)} bytes; the limit is {MAX_RESULT_BYTES}")
        self._forget = bool(request.get("dry_run"))
        return text

    def poll(self) -> str:
        """Call poll(host) of a plugin that implements a sensor; returns readings as JSON text."""
        if self._poll is None or self.host is None:
            raise PluginFailure("the plugin implements no sensor (no poll(host) function)")
        forget, self._forget = self._forget, True
        try:
            self.host._begin_call(forget)
            rows = self._poll(self.host)
            out = [r.to_dict() if isinstance(r, Reading) else r for r in rows]
            text = json.dumps(out, allow_nan=False, separators=(",", ":"))
        except BaseException as exc:
            raise PluginFailure(describe_exception(exc, self._filename)) from None
        self._forget = False
        return text
