"""A command-level ROHM BH1750FVI ambient light sensor that measures the simulated room.

From the datasheet's instruction set and measurement sequence: the chip starts powered down;
power on 0x01, power down 0x00, reset 0x07 (clears the data register, ignored while powered
down), continuous 0x10/0x11/0x13 and one-time 0x20/0x21/0x23 in H, H2 and L resolution,
MTreg (default 69) written as 0x40|bits 7-5 and 0x60|bits 4-0. A one-time measurement powers
the chip down when done. Measurement time is the typical 120 ms (H, H2) or 16 ms (L) scaled by
MTreg/69; counts are lux * 1.2 * MTreg/69 (times 2 in H2), saturating at 0xFFFF, and L counts
come in steps of 4 (an assumption: the datasheet gives only the 4 lx resolution).

A read never NACKs: it returns the data register, which holds the previous result (0 after
power-up or reset) until a measurement completes. Unknown opcodes are NACKed.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.emulated import HISTORY
from hal.emulated.environment import RoomConditions

if TYPE_CHECKING:
    from hal.context import HalContext

POWER_DOWN, POWER_ON, RESET = 0x00, 0x01, 0x07
# opcode -> (mode, continuous)
MODES = {0x10: ("H", True), 0x11: ("H2", True), 0x13: ("L", True),
         0x20: ("H", False), 0x21: ("H2", False), 0x23: ("L", False)}
TYPICAL_S = {"H": 0.120, "H2": 0.120, "L": 0.016}
DEFAULT_MTREG = 69


@dataclass(frozen=True, slots=True)
class LightMeasurement:
    """One completed measurement."""

    started: float
    finished: float
    mode: str
    mtreg: int
    room: RoomConditions
    counts: int


class EmulatedBh1750:
    """A CommandChip; `powered`, `mtreg` and `data` (the data register) are the chip's state."""

    def __init__(self, room: Any, clock: Callable[[], float] = time.time, timing_scale: float = 1.0,
                 history: int = HISTORY) -> None:
        self.room = room
        self.clock = clock
        self.timing_scale = timing_scale  # >1: a chip slower than typical
        self.powered = False
        self.mtreg = DEFAULT_MTREG
        self._data = 0
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self.opcodes: deque[tuple[float, int]] = deque(maxlen=history)
        self.measurements: deque[LightMeasurement] = deque(maxlen=history)
        self.nacks = 0

    @property
    def data(self) -> int:
        """The data register as a read would see it now."""
        with self._lock:
            self._tick(self.clock())
            return self._data

    @property
    def measuring(self) -> bool:
        """True while a measurement runs (continuous mode always measures)."""
        with self._lock:
            self._tick(self.clock())
            return self._pending is not None

    def command(self, data: list[int]) -> None:
        """Each byte of a write is one opcode."""
        with self._lock:
            now = self.clock()
            self._tick(now)
            for opcode in data:
                self._opcode(opcode, now)

    def read_raw(self, n: int) -> list[int]:
        """The data register, MSB first (then 0xFF: the bus idles high)."""
        with self._lock:
            self._tick(self.clock())
            return ([self._data >> 8, self._data & 0xFF] + [0xFF] * n)[:n]

    def _opcode(self, opcode: int, now: float) -> None:
        self.opcodes.append((now, opcode))
        if opcode == POWER_DOWN:
            self.powered = False
            self._pending = None
        elif opcode == POWER_ON:
            self.powered = True
        elif opcode == RESET:
            if self.powered:
                self._data = 0
        elif opcode in MODES:
            mode, continuous = MODES[opcode]
            self.powered = True
            self._start(mode, continuous, now)
        elif opcode & 0xF8 == 0x40:
            self.mtreg = (self.mtreg & 0x1F) | ((opcode & 0x07) << 5)
        elif opcode & 0xE0 == 0x60:
            self.mtreg = (self.mtreg & 0xE0) | (opcode & 0x1F)
        else:
            self.nacks += 1
            raise OSError(errno.EREMOTEIO, f"NACK: unknown BH1750 opcode 0x{opcode:02x}")

    def _duration(self, mode: str, mtreg: int) -> float:
        return TYPICAL_S[mode] * mtreg / DEFAULT_MTREG * self.timing_scale

    def _start(self, mode: str, continuous: bool, now: float) -> None:
        self._pending = {"mode": mode, "continuous": continuous, "mtreg": self.mtreg, "start": now,
                         "end": now + self._duration(mode, self.mtreg)}

    def _tick(self, now: float) -> None:
        p = self._pending
        if p is None or now < p["end"]:
            return
        if not p["continuous"]:
            self._complete(p)
            self._pending = None
            self.powered = False  # one-time modes power down by themselves
            return
        # Conversions follow each other; only the last one finished by now shows in the register.
        period = self._duration(p["mode"], p["mtreg"])
        last_end = p["end"] + int((now - p["end"]) // period) * period
        self._complete({**p, "start": last_end - period, "end": last_end})
        self._pending = {**p, "start": last_end, "end": last_end + period}

    def _complete(self, p: dict[str, Any]) -> None:
        cond = self.room.at(p["end"])
        counts = max(0.0, cond.illuminance) * 1.2 * p["mtreg"] / DEFAULT_MTREG
        if p["mode"] == "H2":
            counts *= 2
        value = 4 * round(counts / 4) if p["mode"] == "L" else round(counts)
        self._data = min(0xFFFF, value)
        self.measurements.append(LightMeasurement(p["start"], p["end"], p["mode"], p["mtreg"], cond, self._data))


def emulate(ctx: HalContext, params: dict[str, Any]) -> None:
    """Mock mode: a BH1750 at the configured address, unless a chip answers there."""
    from hal.context import NODE_DEVICE_HISTORY

    ctx.emulate_i2c(params["bus"], params["address"],
                    lambda c: EmulatedBh1750(c.room, clock=c.clock, history=NODE_DEVICE_HISTORY))
