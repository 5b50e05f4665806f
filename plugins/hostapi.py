"""The host side of the plugin interface: every call checked against the manifest, effects buffered.

A plugin call (load, evaluate, poll) runs inside a `CallContext`. Host functions check
the grant and the arguments at once and answer a refusal as an error value (a
`HostRefusal`, which the backends turn into the WIT `result` error or the SDK's
HostError); nothing reaches hardware during the call. Actuator commands, state writes and
alert changes are collected and applied only after the call succeeded and its result was
valid, so a failed, trapped or timed-out call has no effects, and a validation run of a
new version (a dry run) has none either. I2C transfers are the exception: a driver needs
the answer of a read during the call, so reads (and writes outside dry runs) happen at once.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hal.buzzer import MAX_COUNT, MAX_MS, MIN_MS, PATTERNS
from hal.errors import HalConfigError, HalError, PermissionDenied
from hal.i2c import I2CGrants
from hal.names import NODE_NAME_RULE, is_node_name
from plugins.alerts import AlertBook
from plugins.manifest import Manifest
from plugins.services import NotFitted, Services
from plugins.state import PluginState, StateLimit, check_entry

log = logging.getLogger(__name__)

ALERT_ID_RE = re.compile(r"^[a-z0-9_.:-]{1,64}\Z")
SEVERITIES = ("info", "warning", "critical")
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_LOG_CHARS = 1000
MAX_LOGS_PER_CALL = 50
MAX_LOGS_PER_MINUTE = 600
MAX_MESSAGE_CHARS = 500
# An LED already showing the requested colour is not written again for this long: a rule
# that re-asserts "green" every poll would otherwise cost a frame (or a remote call) each time.
LED_REFRESH_S = 60.0
DENIAL_LOG_EVERY_S = 60.0


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


class HostRefusal(Exception):
    """A host call answered with an error value; `denied` when the manifest does not grant it."""

    def __init__(self, message: str, denied: bool = False) -> None:
        super().__init__(f"denied: {message}" if denied else message)
        self.denied = denied


@dataclass
class CallContext:
    """What one plugin call asked for, applied after it returns (or dropped)."""

    purpose: str
    dry_run: bool
    actions: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, str | None] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    logs: int = 0


class PluginEnv:
    """What a plugin keeps across its versions: services, state, alert book, counters, LED cache."""

    def __init__(self, name: str, services: Services, state: PluginState, alerts: AlertBook,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.services = services
        self.state = state
        self.alerts = alerts
        self.clock = clock
        self.logger = logging.getLogger(f"harvester.plugin.{name}")
        self.lock = threading.Lock()
        self.counts = {"denied": 0, "host_errors": 0, "applied": 0, "apply_errors": 0, "logs_dropped": 0}
        self.last_denied: str | None = None
        self.last_apply_error: str | None = None
        self.led_cache: dict[tuple[str | None, int], tuple[tuple[int, int, int], float]] = {}
        self._log_times: deque[float] = deque()
        self._denials_logged: dict[str, float] = {}
        self._failing: set[str] = set()

    def count(self, key: str, n: int = 1) -> None:
        """Add to a counter."""
        with self.lock:
            self.counts[key] += n

    def note_denied(self, message: str, what: str) -> None:
        """Count a refused call; log it, at most once a minute per kind of refusal."""
        now = time.monotonic()
        with self.lock:
            self.counts["denied"] += 1
            self.last_denied = message
            last = self._denials_logged.get(what)
            if last is not None and now - last < DENIAL_LOG_EVERY_S:
                return
            self._denials_logged[what] = now
        log.warning("plugin %s: %s (refused; counted, further ones logged once a minute)", self.name, message)

    def log_budget(self) -> bool:
        """True if the plugin may log one more line this minute."""
        now = time.monotonic()
        with self.lock:
            while self._log_times and now - self._log_times[0] > 60.0:
                self._log_times.popleft()
            if len(self._log_times) >= MAX_LOGS_PER_MINUTE:
                self.counts["logs_dropped"] += 1
                return False
            self._log_times.append(now)
            return True

    def note_apply(self, what: str, error: BaseException | None) -> None:
        """Count an applied effect; log a failing kind once, and its recovery once."""
        with self.lock:
            if error is None:
                self.counts["applied"] += 1
                recovered = what in self._failing
                self._failing.discard(what)
            else:
                self.counts["apply_errors"] += 1
                self.last_apply_error = f"{what}: {type(error).__name__}: {error}"
                first = what not in self._failing
                self._failing.add(what)
        if error is not None and first and isinstance(error, NotFitted):
            # a shared plugin asking a node for a strip or buzzer it lacks: nothing is broken
            log.info("plugin %s: %s has no effect here: %s", self.name, what, error)
        elif error is not None and first:
            log.warning("plugin %s: %s failed: %s: %s", self.name, what, type(error).__name__, error)
        elif error is None and recovered:
            log.info("plugin %s: %s works again", self.name, what)


class HostApi:
    """One plugin version's host functions, bound to its manifest."""

    def __init__(self, env: PluginEnv, manifest: Manifest) -> None:
        self.env = env
        self.manifest = manifest
        self.name = env.name
        self._i2c = I2CGrants(manifest.permissions.i2c, env.services.i2c_bus)
        self._ctx: CallContext | None = None

    # -- call lifecycle ------------------------------------------------------------------
    def begin(self, purpose: str, dry_run: bool) -> CallContext:
        """Start collecting a call's effects."""
        self._ctx = CallContext(purpose, dry_run)
        return self._ctx

    def end(self, commit: bool) -> CallContext:
        """Finish a call: apply its effects if `commit` (and not a dry run), else drop them."""
        ctx = self._ctx
        self._ctx = None
        if ctx is None:
            raise RuntimeError("end() without begin()")
        if commit and not ctx.dry_run:
            self._apply(ctx)
        return ctx

    def _call(self) -> CallContext:
        if self._ctx is None:
            raise HostRefusal("host functions are only available during load, evaluate and poll")
        return self._ctx

    def _deny(self, ctx: CallContext, what: str, message: str) -> HostRefusal:
        ctx.denied.append(message)
        self.env.note_denied(message, what)
        return HostRefusal(message, denied=True)

    @staticmethod
    def _node(node: str | None) -> str | None:
        return node or None

    def _where(self, node: str | None) -> str:
        return "this node" if node is None else f"node {node}"

    # -- host functions (each returns a value or raises HostRefusal) -----------------------
    def log(self, level: str, message: str) -> None:
        """Write a line to the node's log as harvester.plugin.<name>."""
        ctx = self._call()
        if level not in LOG_LEVELS:
            raise HostRefusal(f"log level must be one of {', '.join(LOG_LEVELS)}")
        ctx.logs += 1
        if ctx.logs > MAX_LOGS_PER_CALL or not self.env.log_budget():
            raise HostRefusal(f"log limit reached ({MAX_LOGS_PER_CALL} per call, {MAX_LOGS_PER_MINUTE} per minute)")
        self.env.logger.log(LOG_LEVELS[level], "%s", clip(message, MAX_LOG_CHARS))

    def now(self) -> float:
        """The node's clock."""
        return float(self.env.clock())

    def set_led(self, node: str | None, index: int, rgb: tuple[int, int, int]) -> None:
        """Queue an LED colour on a granted index."""
        ctx = self._call()
        target = self._target(node)
        grant = self.manifest.permissions.for_node(target)
        if index not in grant.leds:
            granted = ", ".join(map(str, sorted(grant.leds))) or "none"
            raise self._deny(ctx, f"set-led:{target}:{index}",
                             f"LED {index} on {self._where(target)} is not granted (granted: {granted})")
        r, g, b = (int(c) for c in rgb)
        if not all(0 <= c <= 255 for c in (r, g, b)):
            raise HostRefusal(f"colour components must be 0..255, got {(r, g, b)}")
        ctx.actions.append({"action": "set_led", "node": target, "index": index, "rgb": [r, g, b]})

    def beep(self, node: str | None, count: int, on_ms: int) -> None:
        """Queue beeps on a granted buzzer."""
        ctx = self._call()
        target = self._buzzer_target(ctx, node, "beep")
        # whole numbers only, as the buzzer actor takes them: a float is refused here, to the plugin
        if any(type(v) is not int for v in (count, on_ms)) or not 1 <= count <= MAX_COUNT \
                or not MIN_MS <= on_ms <= MAX_MS:
            raise HostRefusal(f"beep needs count 1..{MAX_COUNT} and on-ms {MIN_MS}..{MAX_MS} as integers, "
                              f"got {count!r}, {on_ms!r}")
        ctx.actions.append({"action": "beep", "node": target, "count": count, "on_ms": on_ms})

    def play(self, node: str | None, pattern: str) -> None:
        """Queue a named pattern on a granted buzzer."""
        ctx = self._call()
        target = self._buzzer_target(ctx, node, "play")
        if pattern not in PATTERNS:
            raise HostRefusal(f"unknown buzzer pattern {pattern!r}; known: {', '.join(sorted(PATTERNS))}")
        ctx.actions.append({"action": "play", "node": target, "pattern": pattern})

    def i2c_read(self, bus: int, address: int, register: int, length: int) -> bytes:
        """Read from a granted I2C address now."""
        ctx = self._call()
        device = self._i2c_device(ctx, bus, address, "r")
        try:
            return bytes(device.read_block(register, length))
        except HalConfigError as exc:
            raise HostRefusal(f"i2c-read: {exc}") from None
        except (HalError, OSError) as exc:
            self.env.count("host_errors")
            raise HostRefusal(f"i2c-read bus {bus} 0x{address:02x}: {exc}") from None

    def i2c_write(self, bus: int, address: int, register: int, data: bytes) -> None:
        """Write to an I2C address granted read-write (not in a dry run)."""
        ctx = self._call()
        device = self._i2c_device(ctx, bus, address, "rw")
        action = {"action": "i2c_write", "bus": bus, "address": address, "register": register, "data": list(data)}
        if ctx.dry_run:
            action["result"] = "dry run: not written"
            ctx.actions.append(action)
            return
        try:
            device.write_block(register, data)
        except HalConfigError as exc:
            raise HostRefusal(f"i2c-write: {exc}") from None
        except (HalError, OSError) as exc:
            self.env.count("host_errors")
            raise HostRefusal(f"i2c-write bus {bus} 0x{address:02x}: {exc}") from None
        action["result"] = "ok"
        ctx.actions.append(action)

    def state_get(self, key: str) -> str | None:
        """A state value: this call's own write, else the committed one."""
        ctx = self._call()
        if key in ctx.state:
            return ctx.state[key]
        return self.env.state.get(key)

    def state_set(self, key: str, value: str | None) -> None:
        """Queue a state write (None deletes)."""
        ctx = self._call()
        try:
            check_entry(key, value)
            self.env.state.check({**ctx.state, key: value})
        except StateLimit as exc:
            raise HostRefusal(str(exc)) from None
        ctx.state[key] = value

    def raise_alert(self, alert: dict[str, Any]) -> None:
        """Queue raising an alert."""
        ctx = self._call()
        self._check_alert_id(alert.get("id"))
        if alert.get("severity") not in SEVERITIES:
            raise HostRefusal(f"severity must be one of {SEVERITIES}")
        node = alert.get("node")
        if node is not None and not is_node_name(node):
            raise HostRefusal(f"alert node must match {NODE_NAME_RULE}, got {node!r}")
        for key in ("sensor", "quantity"):
            v = alert.get(key)
            if v is not None and not (isinstance(v, str) and 0 < len(v) <= 64):
                raise HostRefusal(f"alert {key} must be a short string, got {v!r}")
        clean = {"id": alert["id"], "severity": alert["severity"], "message": self._message(alert.get("message")),
                 "node": node, "sensor": alert.get("sensor"), "quantity": alert.get("quantity"),
                 "value": self._value(alert.get("value"))}
        ctx.alerts.append({"op": "raise", **clean})

    def clear_alert(self, alert_id: str, message: str, value: float | None) -> None:
        """Queue clearing an alert."""
        ctx = self._call()
        self._check_alert_id(alert_id)
        ctx.alerts.append({"op": "clear", "id": alert_id, "message": self._message(message),
                           "value": self._value(value)})

    # -- checks ----------------------------------------------------------------------------
    def _target(self, node: str | None) -> str | None:
        node = self._node(node)
        return None if node == self.env.services.node else node

    def _buzzer_target(self, ctx: CallContext, node: str | None, what: str) -> str | None:
        target = self._target(node)
        if not self.manifest.permissions.for_node(target).buzzer:
            raise self._deny(ctx, f"{what}:{target}", f"the buzzer on {self._where(target)} is not granted")
        return target

    def _i2c_device(self, ctx: CallContext, bus: int, address: int, mode: str) -> Any:
        try:
            return self._i2c.device(bus, address, mode)
        except PermissionDenied as exc:
            raise self._deny(ctx, f"i2c:{bus}:{address}:{mode}", f"I2C: {exc}") from None
        except HalConfigError as exc:
            raise HostRefusal(f"I2C: {exc}") from None
        except (HalError, OSError) as exc:
            self.env.count("host_errors")
            raise HostRefusal(f"I2C bus {bus} unavailable: {exc}") from None

    @staticmethod
    def _check_alert_id(alert_id: Any) -> None:
        if not isinstance(alert_id, str) or not ALERT_ID_RE.match(alert_id):
            raise HostRefusal(f"alert ids match [a-z0-9_.:-]{{1,64}}, got {alert_id!r}")

    @staticmethod
    def _message(message: Any) -> str:
        return clip(str(message or ""), MAX_MESSAGE_CHARS)

    @staticmethod
    def _value(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HostRefusal(f"alert value must be a finite number or none, got {value!r}")
        return float(value)

    # -- applying effects after a successful call ---------------------------------------------
    def _apply(self, ctx: CallContext) -> None:
        env = self.env
        if ctx.state:
            try:
                env.state.commit(ctx.state)
            except OSError as exc:  # kept in memory; the file catches up on the next change
                env.note_apply("state file", exc)
        for action in ctx.actions:
            if "result" not in action:
                action["result"] = self._apply_action(action)
        for op in ctx.alerts:
            if op["op"] == "raise":
                event = env.alerts.raise_alert(self.name, self.manifest.version, op)
            else:
                event = env.alerts.clear_alert(self.name, self.manifest.version, op["id"], op["message"], op["value"])
            op["result"] = "no change" if event is None else event["state"]

    def _apply_action(self, action: dict[str, Any]) -> str:
        env, services, kind = self.env, self.env.services, action["action"]
        node = action.get("node")
        if kind == "set_led":
            key, rgb = (node, action["index"]), tuple(action["rgb"])
            cached = env.led_cache.get(key)
            now = time.monotonic()
            if cached is not None and cached[0] == rgb and now - cached[1] < LED_REFRESH_S:
                return "unchanged"
        elif env.alerts.silenced(self.name):
            return "silenced: alert acknowledged"
        what = f"{kind} on {self._where(node)}"
        try:
            if kind == "set_led":
                services.set_led(node, action["index"], *action["rgb"])
                env.led_cache[(node, action["index"])] = (tuple(action["rgb"]), time.monotonic())
            elif kind == "beep":
                services.beep(node, action["count"], action["on_ms"])
            else:
                services.play(node, action["pattern"])
        except Exception as exc:  # a device or remote failure is the plugin's result, not our crash
            env.led_cache.pop((node, action.get("index", -1)), None)
            env.note_apply(what, exc)
            return f"error: {type(exc).__name__}: {exc}"
        env.note_apply(what, None)
        return "ok"
