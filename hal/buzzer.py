"""The buzzer: beeps and named patterns over gpiozero, with a mute for quiet hours and acknowledged alerts."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hal.errors import ActuatorArgumentError, DeviceUnavailable, HalConfigError

# name -> (count, on_ms, off_ms); off_ms 0 is only meaningful for a single beep.
PATTERNS: dict[str, tuple[int, int, int]] = {
    "alert": (3, 150, 100),
    "warning": (1, 400, 0),
    "critical": (6, 100, 60),
    "confirm": (1, 60, 0),
}

MAX_COUNT = 20
MIN_MS, MAX_MS = 10, 5000


class BuzzerDevice:
    """A buzzer on one GPIO: non-blocking beep patterns, continuous on/off, and a mute.

    Patterns run on a gpiozero background thread; the first beep starts before
    `beep()` returns, so a caller that gets "sounded" knows the buzzer is already on.
    A new command replaces the running pattern. While muted, `beep`, `play` and `on`
    do nothing and say so; muting also silences whatever is sounding.
    """

    def __init__(self, pin: int, pin_factory: Any, tonal: bool = False, active_high: bool = True, *,
                 clock: Callable[[], float] = time.time) -> None:
        if pin_factory is None:
            # gpiozero would fall back to the process-global factory; the HAL never
            # lets a device pick hardware behind the context's back.
            raise HalConfigError("BuzzerDevice needs an explicit pin_factory (HalContext.pin_factory())")
        if tonal and not active_high:
            raise HalConfigError("a tonal buzzer is driven by PWM and has no active_high=False mode")
        from gpiozero import Buzzer, TonalBuzzer
        from gpiozero.exc import GPIOPinInUse, GPIOZeroError, PinInvalidPin, PinPWMUnsupported

        try:
            if tonal:
                self._device: Any = TonalBuzzer(pin, pin_factory=pin_factory)
            else:
                self._device = Buzzer(pin, active_high=active_high, pin_factory=pin_factory)
        except (PinInvalidPin, GPIOPinInUse, PinPWMUnsupported) as exc:
            raise HalConfigError(f"cannot use GPIO {pin!r} for the buzzer: {exc}") from exc
        except GPIOZeroError as exc:
            raise DeviceUnavailable(f"cannot open the buzzer on GPIO {pin!r}: {exc}") from exc
        self._pin = pin
        self._tonal = tonal
        self._clock = clock
        # _lock serialises commands; _stats guards what the pattern thread updates.
        # The thread never takes _lock, so a command may join it while holding _lock.
        self._lock = threading.Lock()
        self._stats = threading.Lock()
        self._runner: Any = None
        self._generation = 0
        self._pattern: str | None = None
        self._muted = False
        self._beeps = 0
        self._suppressed = 0
        self._last_command: dict[str, Any] | None = None
        self._closed = False

    @property
    def tonal(self) -> bool:
        """True if this is a passive buzzer that plays tones (TonalBuzzer)."""
        return self._tonal

    @property
    def tone_range(self) -> tuple[float, float] | None:
        """(lowest, highest) tone in Hz a tonal buzzer accepts, or None for a plain buzzer."""
        if not self._tonal:
            return None
        return (float(self._device.min_tone.frequency), float(self._device.max_tone.frequency))

    @property
    def muted(self) -> bool:
        """True while beeps and `on()` are suppressed (quiet hours, acknowledged alert)."""
        with self._stats:
            return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ActuatorArgumentError(f"muted must be True or False, got {value!r}")
        with self._lock:
            self._check_open()
            if value:
                self._stop_pattern()
            with self._stats:
                self._muted = value
            self._record("mute" if value else "unmute", {}, "done")

    def beep(self, count: int = 1, on_ms: float = 200, off_ms: float = 200,
             tone_hz: float | None = None, wait: bool = False) -> dict[str, Any]:
        """Beep `count` times; returns at once unless wait=True. Reports {"sounded", "reason"}."""
        _check_count(count)
        _check_ms("on_ms", on_ms)
        _check_off_ms(off_ms, count)
        hz = self._check_tone(tone_hz)
        args = {"count": count, "on_ms": on_ms, "off_ms": off_ms, "tone_hz": tone_hz}
        return self._start("beep", args, f"beep {count}x{on_ms}/{off_ms}ms", count, on_ms, off_ms, hz, wait)

    def play(self, pattern_name: str, tone_hz: float | None = None, wait: bool = False) -> dict[str, Any]:
        """Play a named pattern from `PATTERNS` ("alert", "warning", ...)."""
        try:
            count, on_ms, off_ms = PATTERNS[pattern_name]
        except (KeyError, TypeError) as exc:
            raise ActuatorArgumentError(
                f"unknown buzzer pattern {pattern_name!r}; known: {', '.join(sorted(PATTERNS))}") from exc
        hz = self._check_tone(tone_hz)
        args = {"pattern": pattern_name, "tone_hz": tone_hz}
        return self._start("play", args, pattern_name, count, on_ms, off_ms, hz, wait)

    def on(self, tone_hz: float | None = None) -> dict[str, Any]:
        """Sound continuously until `off()`/`silence()`; replaces any running pattern."""
        hz = self._check_tone(tone_hz)
        with self._lock:
            self._check_open()
            if self._suppress_if_muted("on", {"tone_hz": tone_hz}):
                return {"sounded": False, "reason": "muted"}
            self._stop_pattern()
            self._sound(hz)
            with self._stats:
                self._pattern = "continuous"
            self._record("on", {"tone_hz": tone_hz}, "sounded")
        return {"sounded": True, "reason": None}

    def off(self) -> None:
        """Stop sounding (same effect as `silence()`)."""
        self._silence("off")

    def silence(self) -> None:
        """Stop any pattern or continuous tone now."""
        self._silence("silence")

    def state(self) -> dict[str, Any]:
        """Plain-types snapshot: active, muted, pattern, last_command, beeps, suppressed (ignored while muted)."""
        with self._stats:
            return {
                "active": self._pattern is not None,
                "muted": self._muted,
                "pattern": self._pattern,
                "last_command": dict(self._last_command) if self._last_command else None,
                "beeps": self._beeps,
                "suppressed": self._suppressed,
                "tonal": self._tonal,
                "pin": self._pin,
            }

    def close(self) -> None:
        """Stop any pattern and release the pin (the pin factory belongs to the caller)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._stop_pattern()
            finally:
                self._closed = True
                self._device.close()

    def __enter__(self) -> BuzzerDevice:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self, command: str, args: dict[str, Any], pattern: str, count: int,
               on_ms: float, off_ms: float, hz: float | None, wait: bool) -> dict[str, Any]:
        from gpiozero.threads import GPIOThread

        with self._lock:
            self._check_open()
            if self._suppress_if_muted(command, args):
                return {"sounded": False, "reason": "muted"}
            self._stop_pattern()
            # First beep here, not on the thread: the caller's "sounded" is then true
            # by the time it returns, and tests see a deterministic pin history.
            self._sound(hz)
            with self._stats:
                self._beeps += 1
                self._pattern = pattern
                self._generation += 1
                generation = self._generation
            runner = GPIOThread(self._run, (count, on_ms / 1000, off_ms / 1000, hz, generation),
                                name=f"buzzer-gpio{self._pin}")
            self._runner = runner
            runner.start()
            self._record(command, args, "sounded")
        if wait:
            # Outside the lock, so silence() from another thread can cut a waited pattern short.
            runner.join()
        return {"sounded": True, "reason": None}

    def _run(self, count: int, on_s: float, off_s: float, hz: float | None, generation: int) -> None:
        stopping: threading.Event = threading.current_thread().stopping  # type: ignore[attr-defined]
        try:
            for i in range(count):
                if i > 0:
                    self._sound(hz)
                    with self._stats:
                        self._beeps += 1
                if stopping.wait(on_s):
                    return
                self._quiet()
                # No gap after the last beep: waiting callers return as soon as it ends.
                if i < count - 1 and stopping.wait(off_s):
                    return
        finally:
            self._quiet()
            with self._stats:
                if self._generation == generation:
                    self._pattern = None

    def _silence(self, command: str) -> None:
        with self._lock:
            self._check_open()
            self._stop_pattern()
            self._record(command, {}, "done")

    def _stop_pattern(self) -> None:
        """Stop the pattern thread (joins it) and make sure the buzzer is quiet; caller holds _lock."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop()
        self._quiet()
        with self._stats:
            self._pattern = None

    def _sound(self, hz: float | None) -> None:
        if self._tonal:
            from gpiozero.tones import Tone

            # Tone(440) would mean MIDI note 440; from_frequency says Hz explicitly.
            self._device.play(Tone.from_frequency(hz))
        else:
            self._device.on()

    def _quiet(self) -> None:
        if self._tonal:
            self._device.stop()
        else:
            self._device.off()

    def _suppress_if_muted(self, command: str, args: dict[str, Any]) -> bool:
        """If muted, count and record the command as ignored; caller holds _lock."""
        with self._stats:
            if not self._muted:
                return False
            self._suppressed += 1
        self._record(command, args, "muted")
        return True

    def _record(self, command: str, args: dict[str, Any], result: str) -> None:
        with self._stats:
            self._last_command = {"command": command, "args": args, "result": result, "ts": self._clock()}

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceUnavailable(f"buzzer on GPIO {self._pin} is closed")

    def _check_tone(self, tone_hz: float | None) -> float | None:
        """Validate tone_hz; for a tonal buzzer return the Hz to play (the mid tone by default)."""
        if not self._tonal:
            if tone_hz is not None:
                raise ActuatorArgumentError(f"buzzer on GPIO {self._pin} is not tonal; tone_hz must be None")
            return None
        low, high = self.tone_range or (0.0, 0.0)
        if tone_hz is None:
            return float(self._device.mid_tone.frequency)
        if not _is_number(tone_hz) or not low <= tone_hz <= high:
            raise ActuatorArgumentError(f"tone_hz must be a number in {low:g}..{high:g} Hz, got {tone_hz!r}")
        return float(tone_hz)


def _is_number(value: object) -> bool:
    # isnan only on floats: math.isnan(10**400) raises OverflowError instead of answering
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not (isinstance(value, float) and math.isnan(value)))


def _check_count(count: int) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise ActuatorArgumentError(f"count must be an int in 1..{MAX_COUNT}, got {count!r}")


def _check_ms(name: str, value: float) -> None:
    if not _is_number(value) or not MIN_MS <= value <= MAX_MS:
        raise ActuatorArgumentError(f"{name} must be a number of ms in {MIN_MS}..{MAX_MS}, got {value!r}")


def _check_off_ms(off_ms: float, count: int) -> None:
    # A single beep has no gap, so 0 is allowed there (PATTERNS["warning"]).
    if count == 1 and _is_number(off_ms) and off_ms == 0:
        return
    _check_ms("off_ms", off_ms)
