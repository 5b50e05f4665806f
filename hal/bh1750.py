"""ROHM BH1750FVI ambient light sensor over I2C, one one-time measurement per read.

Each read: power on (0x01), MTreg = 69 (0x42, 0x65: another master may have changed it),
a one-time measurement (0x20 H-resolution 1 lx, 0x21 H-resolution mode 2 0.5 lx, 0x23
L-resolution 4 lx), a wait of the datasheet's maximum measurement time (H 180 ms, L 24 ms;
typical 120 and 16), then a 2-byte read. lux = counts / 1.2, halved in mode 2 (BH1750FVI
datasheet, instruction set and "measurement sequence example"). The chip powers itself down
after a one-time measurement.

The chip never NACKs a read: it returns whatever its data register holds, so the wait must
be long enough. 0xFFFF is saturation (54612 lx in H and L resolution, 27306 lx in mode 2):
the light is brighter than that, by an unknown amount, so the reading is unavailable with
reason "saturated" rather than a value at the top of the range.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hal.driver import SensorDriver, check_int
from hal.errors import HalConfigError
from hal.i2c import i2c_messages, root_errno
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

POWER_ON = 0x01
MTREG = 69  # the datasheet's default measurement time register
SATURATED = 0xFFFF


@dataclass(frozen=True)
class Resolution:
    """One of the one-time measurement modes."""

    label: str
    command: int
    max_s: float  # at MTreg 69
    counts_per_lux: float  # at MTreg 69


RESOLUTIONS = {
    "high": Resolution("H-resolution", 0x20, 0.180, 1.2),
    "high2": Resolution("H-resolution mode 2", 0x21, 0.180, 2.4),
    "low": Resolution("L-resolution", 0x23, 0.024, 1.2),
}
ADDRESSES = (0x23, 0x5C)  # ADDR pin low, high


def counts_to_lux(counts: int, resolution: str = "high", mtreg: int = MTREG) -> float:
    """Illuminance from the data register (datasheet: counts / 1.2, halved in mode 2, scaled by 69/MTreg)."""
    return counts / RESOLUTIONS[resolution].counts_per_lux * MTREG / mtreg


def mtreg_commands(mtreg: int) -> tuple[int, int]:
    """The two opcodes that set the measurement time register: high 3 bits, low 5 bits."""
    return 0x40 | (mtreg >> 5), 0x60 | (mtreg & 0x1F)


class Bh1750Sensor(SensorDriver[int]):
    """A BH1750 on an I2C bus of the node; close() has nothing to release (the chip powers down
    after each measurement)."""

    kind = "bh1750"
    quantities = ("illuminance",)

    def __init__(self, ctx: HalContext, name: str, bus: int = 1, address: int = 0x23,
                 resolution: str = "high", *, sleep: Callable[[float], None] | None = None) -> None:
        check_int(name, "bus", bus, 0)
        if address not in ADDRESSES:
            raise HalConfigError(f"{name}: a BH1750 answers at 0x23 (ADDR low) or 0x5c (ADDR high), "
                                 f"not {address!r}")
        if resolution not in RESOLUTIONS:
            raise HalConfigError(f"{name}: resolution must be one of {', '.join(RESOLUTIONS)}, "
                                 f"got {resolution!r}")
        super().__init__(ctx, name, log, "BH1750", "saturated")
        self.bus_number = bus
        self.address = address
        self.resolution = resolution
        self._mode = RESOLUTIONS[resolution]
        self._sleep = sleep or ctx.sleep
        self._msg = i2c_messages()
        self._stage = ""

    def __repr__(self) -> str:
        return (f"Bh1750Sensor(name={self.name!r}, bus={self.bus_number}, address=0x{self.address:02x}, "
                f"resolution={self.resolution!r})")

    @property
    def top_lux(self) -> float:
        """The brightest illuminance this resolution can report."""
        return counts_to_lux(SATURATED - 1, self.resolution)

    def _report(self, counts: int) -> list[Reading]:
        """The illuminance; 'unavailable' with the reason on saturation."""
        if counts >= SATURATED:
            self.stats["saturated"] += 1
            hint = '; resolution = "high" reaches 54612 lx' if self.resolution == "high2" else ""
            return self._failed(f"saturated: brighter than {self.top_lux:.0f} lx, the top of the "
                                f"{self._mode.label} range{hint}")
        return self._measured("illuminance", round(counts_to_lux(counts, self.resolution), 2))

    def _measure(self) -> int:
        self._stage = "bus"
        bus = self._ctx.i2c_bus(self.bus_number)
        for stage, opcode in (("power-on", POWER_ON), *(("MTreg", op) for op in mtreg_commands(MTREG)),
                              ("measurement", self._mode.command)):
            self._stage = f"{stage} command 0x{opcode:02x}"
            bus.i2c_rdwr(self._msg.write(self.address, [opcode]))
        self._sleep(self._mode.max_s * MTREG / 69)
        self._stage = "result read"
        msg = self._msg.read(self.address, 2)
        bus.i2c_rdwr(msg)
        high, low = list(msg)
        return (high << 8) | low

    def _explain(self, exc: BaseException) -> str:
        if root_errno(exc) == errno.EREMOTEIO:
            return (f"no ACK from 0x{self.address:02x} on bus {self.bus_number} ({self._stage}): "
                    f"nothing answers there (check wiring, power, and ADDR: low 0x23, high 0x5c) [{exc}]")
        return super()._explain(exc)
