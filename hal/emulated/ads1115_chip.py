"""A TI ADS1115 at register level: four inputs, single-shot and continuous conversions.

From the ADS111x datasheet (SBAS444): pointer register 0 conversion (read-only), 1 config
(reset value 0x8583), 2 Lo_thresh (0x8000), 3 Hi_thresh (0x7FFF); a conversion takes one
data-rate period, during which the config register's OS bit reads 0; output codes are
FSR / 2^15 per LSB, clipped to 0x7FFF and 0x8000; inputs cannot leave GND - 0.3 V .. VDD + 0.3 V.
The comparator and the ALERT/RDY pin are not modelled.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.context import NODE_DEVICE_HISTORY
from hal.emulated import HISTORY
from hal.emulated.environment import RoomConditions

if TYPE_CHECKING:
    from hal.context import HalContext

CONVERSION, CONFIG, LO_THRESH, HI_THRESH = 0, 1, 2, 3
RESET = {CONVERSION: 0x0000, CONFIG: 0x8583, LO_THRESH: 0x8000, HI_THRESH: 0x7FFF}
OS = 0x8000
MODE_SINGLE = 0x0100
FULL_SCALE = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)  # PGA code -> ±V
DATA_RATE = (8, 16, 32, 64, 128, 250, 475, 860)  # DR code -> samples per second
# MUX code -> (positive input, negative input); None is GND
MUX = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))
Input = Callable[[RoomConditions], float]


def volts_to_code(volts: float, full_scale: float) -> int:
    """The signed output code for a differential input voltage at a full-scale range."""
    return max(-0x8000, min(0x7FFF, round(volts * 0x8000 / full_scale)))


@dataclass(frozen=True, slots=True)
class SoilProbe:
    """A capacitive probe's output: linear in soil moisture between its dry and wet voltages."""

    dry_volts: float
    wet_volts: float

    @classmethod
    def calibrated(cls, dry: int, wet: int, full_scale: float) -> SoilProbe:
        """The probe whose dry and wet raw readings at this range are `dry` and `wet`."""
        return cls(dry * full_scale / 0x8000, wet * full_scale / 0x8000)

    def __call__(self, cond: RoomConditions) -> float:
        return self.dry_volts + (self.wet_volts - self.dry_volts) * cond.soil_moisture / 100


@dataclass(frozen=True, slots=True)
class Ads1115Conversion:
    """One completed conversion: when, which inputs at which range, and the code it left."""

    started: float
    finished: float
    mux: int
    full_scale: float
    volts: float
    code: int


class EmulatedAds1115:
    """Register model of an ADS1115 whose inputs measure the room."""

    def __init__(self, room: Any, clock: Callable[[], float] = time.time, vdd: float = 3.3,
                 timing_scale: float = 1.0, history: int = HISTORY) -> None:
        self.room = room
        self.clock = clock
        self.vdd = vdd
        self.timing_scale = timing_scale  # >1: a chip slower than nominal (the datasheet allows ±10 %)
        self._lock = threading.RLock()
        self._inputs: list[Input | None] = [None] * 4  # None: 0 V
        self._floating: dict[int, float] = {}  # unplugged input -> the voltage it drifts to
        self.conversions: deque[Ads1115Conversion] = deque(maxlen=history)
        self.power_cycles = 0
        self._reset()

    # -- bus side ----------------------------------------------------------------------

    def read(self, reg: int, n: int) -> list[int]:
        """Read the register the pointer names, MSB first (repeated for longer reads)."""
        with self._lock:
            self._tick()
            value = self._value(reg & 0x03)
            return [(value >> 8) & 0xFF if i % 2 == 0 else value & 0xFF for i in range(n)]

    def write(self, reg: int, data: list[int]) -> None:
        """Set the pointer and write its register (two bytes, MSB first); one byte sets only the pointer."""
        with self._lock:
            self._tick()
            pointer = reg & 0x03  # pointer bits 7:2 are reserved
            if len(data) < 2 or pointer == CONVERSION:
                return  # conversion register is read-only; an incomplete word changes nothing
            value = (data[0] << 8) | data[1]
            if pointer != CONFIG:
                self._regs[pointer] = value
                return
            self._regs[CONFIG] = value & ~OS & 0xFFFF
            if not value & MODE_SINGLE:
                self._continuous = self.clock()  # new settings: conversions start over
                self._active = None
            else:
                self._continuous = None
                if value & OS and self._active is None:
                    self._start()

    # -- inputs and test hooks ---------------------------------------------------------

    def attach_probe(self, channel: int, probe: Input) -> None:
        """Drive input AINx from the room (volts from a RoomConditions)."""
        with self._lock:
            self._inputs[channel] = probe

    def has_probe(self, channel: int) -> bool:
        """True when something drives input AINx."""
        with self._lock:
            return self._inputs[channel] is not None

    def set_input(self, channel: int, volts: float) -> None:
        """Hold input AINx at a fixed voltage."""
        self.attach_probe(channel, lambda cond: volts)

    def unplug(self, channel: int, floats_to: float = 0.0) -> None:
        """Disconnect AINx: the open input drifts to `floats_to` volts (0 V, or the rail: vdd)."""
        with self._lock:
            self._floating[channel] = floats_to

    def plug(self, channel: int) -> None:
        """Reconnect AINx."""
        with self._lock:
            self._floating.pop(channel, None)

    def power_cycle(self) -> None:
        """Power lost and back: registers at their reset values, no conversion running."""
        with self._lock:
            self.power_cycles += 1
            self._reset()

    def input_volts(self, channel: int, at: float) -> float:
        """The voltage on AINx at time `at`, within what the input protection allows."""
        with self._lock:
            if channel in self._floating:
                volts = self._floating[channel]
            else:
                source = self._inputs[channel]
                volts = 0.0 if source is None else source(self.room.at(at))
            return max(-0.3, min(self.vdd + 0.3, volts))

    @property
    def converting(self) -> bool:
        """True while a conversion runs (the OS bit reads 0)."""
        with self._lock:
            self._tick()
            return self._active is not None or self._continuous is not None

    # -- state -------------------------------------------------------------------------

    def _reset(self) -> None:
        self._regs = dict(RESET)
        self._regs[CONFIG] &= ~OS & 0xFFFF
        self._active: tuple[float, float] | None = None  # (start, end) of a single-shot conversion
        self._continuous: float | None = None  # when continuous conversion began

    def _value(self, pointer: int) -> int:
        if pointer == CONFIG:
            busy = self._active is not None or self._continuous is not None
            return self._regs[CONFIG] | (0 if busy else OS)
        return self._regs[pointer]

    def _period(self) -> float:
        return self.timing_scale / DATA_RATE[(self._regs[CONFIG] >> 5) & 0x07]

    def _start(self) -> None:
        now = self.clock()
        self._active = (now, now + self._period())

    def _tick(self) -> None:
        now = self.clock()
        if self._active is not None and now >= self._active[1]:
            start, end = self._active
            self._active = None
            self._convert(start, end)
        elif self._continuous is not None:
            period = self._period()
            done = int((now - self._continuous) // period)
            if done > 0:
                end = self._continuous + done * period
                self._convert(end - period, end)

    def _convert(self, start: float, end: float) -> None:
        config = self._regs[CONFIG]
        mux = (config >> 12) & 0x07
        full_scale = FULL_SCALE[(config >> 9) & 0x07]
        positive, negative = MUX[mux]
        volts = self.input_volts(positive, end) - (0.0 if negative is None else self.input_volts(negative, end))
        code = volts_to_code(volts, full_scale)
        self._regs[CONVERSION] = code & 0xFFFF
        if not self.conversions or self.conversions[-1].finished != end:
            self.conversions.append(Ads1115Conversion(start, end, mux, full_scale, volts, code))


def emulate(ctx: HalContext, params: dict[str, Any]) -> None:
    """Mock mode: an ADS1115 at the configured address, its channel wired to a soil probe.

    The probe is the one the configured calibration describes, so the sensor reads back the
    room's soil moisture; sensors sharing one chip each get a probe on their channel."""
    ctx.emulate_i2c(params["bus"], params["address"],
                    lambda c: EmulatedAds1115(c.room, clock=c.clock, history=NODE_DEVICE_HISTORY))
    chip = ctx.i2c_bus(params["bus"]).bus.chip(params["address"])
    if isinstance(chip, EmulatedAds1115) and not chip.has_probe(params["channel"]):
        chip.attach_probe(params["channel"], SoilProbe.calibrated(params["dry"], params["wet"], params["gain"]))
