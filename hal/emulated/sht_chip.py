"""A command-level Sensirion SHT4x or SHT3x that measures the simulated room.

Commands and typical measurement durations are the datasheets' (SHT4x: command table and
timing table; SHT3x-DIS: single shot, status, reset and heater commands, timing table); the
serial-number command 0x3780 of the SHT3x is the one Sensirion's own driver uses. Values
are the room's, quantised to the 16-bit words the chip sends, each with its CRC-8. What the
chip does not know (an SHT3x command sent to an SHT4x, periodic mode, a write while it is
busy) is NACKed, as is a read while it measures or with nothing to read. The SHT4x heater
commands measure the room without warming it.
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.crc import sensirion_crc8
from hal.emulated import HISTORY
from hal.emulated.environment import RoomConditions

if TYPE_CHECKING:
    from hal.context import HalContext

# command -> typical duration in seconds
SHT4X_MEASURE = {0xFD: 0.0069, 0xF6: 0.0037, 0xE0: 0.0013,
                 # heater 200/110/20 mW for 1 s or 0.1 s, then a high-precision measurement
                 0x39: 1.0069, 0x32: 0.1069, 0x2F: 1.0069, 0x24: 0.1069, 0x1E: 1.0069, 0x15: 0.1069}
SHT4X_SERIAL, SHT4X_RESET = 0x89, 0x94
SHT3X_SINGLE_SHOT = {0x2400: 0.0125, 0x240B: 0.0045, 0x2416: 0.0025}
SHT3X_STRETCHED = {0x2C06: 0.0125, 0x2C0D: 0.0045, 0x2C10: 0.0025}  # SCL held until done
SHT3X_SERIAL = (0x3780, 0x3682)
SHT3X_RESET, SHT3X_BREAK, SHT3X_STATUS, SHT3X_CLEAR = 0x30A2, 0x3093, 0xF32D, 0x3041
SHT3X_HEATER_ON, SHT3X_HEATER_OFF = 0x306D, 0x3066
RESET_S = {"sht4x": 0.001, "sht3x": 0.0015}  # soft reset time, maximum
# SHT3x status: alert pending (15) and reset detected (4) are set by a reset; heater is bit 13,
# "last command not processed" bit 1.
STATUS_AFTER_RESET, STATUS_HEATER, STATUS_BAD_COMMAND = 0x8010, 0x2000, 0x0002


def nack(what: str) -> OSError:
    """The OSError a NACK gives on Linux."""
    return OSError(errno.EREMOTEIO, f"NACK: {what}")


def words(*values: int) -> list[int]:
    """16-bit words as the chip sends them: MSB, LSB, CRC-8 for each."""
    out: list[int] = []
    for v in values:
        pair = [(v >> 8) & 0xFF, v & 0xFF]
        out += [*pair, sensirion_crc8(pair)]
    return out


@dataclass(frozen=True, slots=True)
class ShtMeasurement:
    """One completed measurement: what the room was and what the chip reported."""

    started: float
    finished: float
    command: int
    room: RoomConditions
    raw_t: int
    raw_rh: int


class EmulatedSht:
    """A CommandChip: an SHT4x ("sht4x") or SHT3x ("sht3x") in single-shot mode."""

    def __init__(self, room: Any, model: str = "sht4x", clock: Callable[[], float] = time.time,
                 serial: int | None = None, timing_scale: float = 1.0, seed: int = 1,
                 history: int = HISTORY) -> None:
        if model not in ("sht4x", "sht3x"):
            raise ValueError(f"model must be sht4x or sht3x, got {model!r}")
        self.room = room
        self.model = model
        self.clock = clock
        self.timing_scale = timing_scale  # >1: a chip slower than the typical duration
        self.serial = random.Random(seed).getrandbits(32) if serial is None else serial & 0xFFFFFFFF
        self.status = STATUS_AFTER_RESET
        self._lock = threading.Lock()
        self._busy_until = 0.0
        self._pending: dict[str, Any] | None = None
        self._output: list[int] | None = None
        self.commands: deque[tuple[float, int]] = deque(maxlen=history)
        self.measurements: deque[ShtMeasurement] = deque(maxlen=history)
        self.nacks = 0
        self.resets = 0

    # -- bus side (CommandChip) --------------------------------------------------------

    def command(self, data: list[int]) -> None:
        """One write message: a command the chip knows, or a NACK."""
        with self._lock:
            now = self.clock()
            self._tick(now)
            if self._pending is not None or now < self._busy_until:
                self.nacks += 1
                raise nack("busy measuring")  # the chip does not answer its address while it works
            width = 1 if self.model == "sht4x" else 2
            if len(data) != width:
                return self._refuse(f"{self.model} commands are {width} byte(s), got {len(data)}")
            code = int.from_bytes(bytes(data), "big")
            self.commands.append((now, code))
            if self.model == "sht4x":
                self._sht4x(code, now)
            else:
                self._sht3x(code, now)

    def read_raw(self, n: int) -> list[int]:
        """One read message: what the last command left, once; NACK while measuring or if nothing."""
        with self._lock:
            now = self.clock()
            self._tick(now)
            pending = self._pending
            if pending is not None and pending["stretch"]:
                self._complete(pending)  # SCL is held until the result is there
            elif pending is not None or now < self._busy_until:
                self.nacks += 1
                raise nack("read while measuring")
            if self._output is None:
                self.nacks += 1
                raise nack("nothing to read")
            out, self._output = self._output, None
            return (out + [0xFF] * n)[:n]

    # -- commands ----------------------------------------------------------------------

    def _sht4x(self, code: int, now: float) -> None:
        if code in SHT4X_MEASURE:
            self._start(code, now, SHT4X_MEASURE[code], stretch=False)
        elif code == SHT4X_SERIAL:
            self._output = words(self.serial >> 16, self.serial & 0xFFFF)
        elif code == SHT4X_RESET:
            self._reset(now)
        else:
            self._refuse(f"unknown SHT4x command 0x{code:02x}")

    def _sht3x(self, code: int, now: float) -> None:
        self.status &= ~STATUS_BAD_COMMAND
        if code in SHT3X_SINGLE_SHOT:
            self._start(code, now, SHT3X_SINGLE_SHOT[code], stretch=False)
        elif code in SHT3X_STRETCHED:
            self._start(code, now, SHT3X_STRETCHED[code], stretch=True)
        elif code in SHT3X_SERIAL:
            self._output = words(self.serial >> 16, self.serial & 0xFFFF)
        elif code == SHT3X_STATUS:
            self._output = words(self.status)
        elif code == SHT3X_CLEAR:
            self.status &= ~0x8C10  # alert, both tracking alerts, reset detected
        elif code == SHT3X_HEATER_ON:
            self.status |= STATUS_HEATER
        elif code == SHT3X_HEATER_OFF:
            self.status &= ~STATUS_HEATER
        elif code == SHT3X_RESET:
            self._reset(now)
        elif code == SHT3X_BREAK:
            pass  # stops periodic mode, which this model never enters
        else:
            self.status |= STATUS_BAD_COMMAND
            self._refuse(f"unknown SHT3x command 0x{code:04x}")

    def _refuse(self, why: str) -> None:
        self.nacks += 1
        raise nack(why)

    def _reset(self, now: float) -> None:
        self.resets += 1
        self._pending = self._output = None
        self.status = STATUS_AFTER_RESET
        self._busy_until = now + RESET_S[self.model]

    def _start(self, code: int, now: float, duration: float, stretch: bool) -> None:
        self._output = None
        self._pending = {"code": code, "start": now, "end": now + duration * self.timing_scale,
                         "stretch": stretch}

    def _tick(self, now: float) -> None:
        if self._pending is not None and now >= self._pending["end"]:
            self._complete(self._pending)

    def _complete(self, p: dict[str, Any]) -> None:
        cond = self.room.at(p["end"])
        raw_t = _quantise((cond.temperature + 45.0) / 175.0)
        if self.model == "sht4x":
            raw_rh = _quantise((cond.humidity + 6.0) / 125.0)
        else:
            raw_rh = _quantise(cond.humidity / 100.0)
        self._output = words(raw_t, raw_rh)
        self._pending = None
        self.measurements.append(ShtMeasurement(p["start"], p["end"], p["code"], cond, raw_t, raw_rh))


def _quantise(fraction: float) -> int:
    return min(0xFFFF, max(0, round(fraction * 0xFFFF)))


def emulate(ctx: HalContext, params: dict[str, Any]) -> None:
    """Mock mode: an SHT of the configured model at the configured address, unless a chip is there."""
    from hal.context import NODE_DEVICE_HISTORY

    ctx.emulate_i2c(params["bus"], params["address"],
                    lambda c: EmulatedSht(c.room, model=params["model"], clock=c.clock,
                                          seed=params["address"], history=NODE_DEVICE_HISTORY))
