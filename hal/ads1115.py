"""The TI ADS1115 as a soil moisture Sensor: one single-ended input, single-shot conversions.

Registers, config bits and output codes from the ADS111x datasheet (SBAS444): a read writes
the config register (OS = 1 start, MUX = 1xx AINx against GND, the PGA range, MODE = 1
single-shot, 128 SPS, comparator off), waits one data-rate period plus the datasheet's ±10 %
rate tolerance, polls the OS bit (1 = idle) and reads the conversion register, a signed
16-bit code of FSR / 2^15 per LSB. The chip sends no CRC, so a register value counts once two
reads of it agree.

Calibration: the raw code maps linearly to 0 % at `dry` and 100 % at `wet`, either order
(capacitive probes read lower when wet), clamped to 0..100. A code beyond the calibrated span
by more than SPAN_TOLERANCE of the span, or at the ADC's full-scale limit, is a failed reading:
an open input drifts to a rail or to about 0 V, and a clamped 0 or 100 % would hide that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hal.driver import SensorDriver, check_int
from hal.errors import DeviceUnavailable, HalConfigError, ImplausibleValue, ReadingError
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

CONVERSION, CONFIG = 0, 1
OS = 0x8000  # write 1: start a single conversion; reads 1 when no conversion runs
MODE_SINGLE = 0x0100
COMPARATOR_OFF = 0x0003  # COMP_QUE = 11
PGA = {6.144: 0b000, 4.096: 0b001, 2.048: 0b010, 1.024: 0b011, 0.512: 0b100, 0.256: 0b101}
DATA_RATES = {8: 0b000, 16: 0b001, 32: 0b010, 64: 0b011, 128: 0b100, 250: 0b101, 475: 0b110, 860: 0b111}
SPS = 128
RATE_TOLERANCE = 0.10  # the datasheet's data-rate variation
MARGIN_S = 0.0005  # the chip's wake-up from power-down and the transfers themselves
POLLS = 4  # OS bit polls after the nominal conversion time, a quarter period apart
READS = 5  # reads of one register to find two that agree
SPAN_TOLERANCE = 0.25  # share of the dry..wet span a raw code may lie beyond before it is a fault
FULL_SCALE_CODES = (0x7FFF, -0x8000)
PART_CHIP, PART_PROBE = "ADS1115", "probe"

# Sensors sharing one chip (a probe per channel) take turns: write config, wait, read.
_CHIP_LOCKS: dict[tuple[int, int], threading.Lock] = {}
_CHIP_LOCKS_GUARD = threading.Lock()


def config_word(channel: int, gain: float, sps: int = SPS) -> int:
    """The config register value for one single-shot conversion of AINx against GND."""
    return (OS | ((0b100 | channel) << 12) | (PGA[_gain_key(gain)] << 9) | MODE_SINGLE
            | (DATA_RATES[sps] << 5) | COMPARATOR_OFF)


def code_to_volts(code: int, gain: float) -> float:
    """The input voltage a signed output code stands for at a full-scale range."""
    return code * gain / 0x8000


def signed16(msb: int, lsb: int) -> int:
    """Two bytes, MSB first, as a two's complement 16-bit value."""
    value = (msb << 8) | lsb
    return value - 0x10000 if value & 0x8000 else value


def moisture_percent(raw: int, dry: int, wet: int) -> float:
    """Soil moisture % for a raw code, linear from dry (0 %) to wet (100 %), not clamped."""
    return (raw - dry) * 100.0 / (wet - dry)


def _gain_key(gain: float) -> float:
    for key in PGA:
        if abs(key - gain) < 1e-9:
            return key
    raise HalConfigError(f"gain must be one of {', '.join(map(str, PGA))} V, got {gain!r}")


def _chip_lock(bus: int, address: int) -> threading.Lock:
    with _CHIP_LOCKS_GUARD:
        return _CHIP_LOCKS.setdefault((bus, address), threading.Lock())


class Ads1115Sensor(SensorDriver[int]):
    """One single-ended ADS1115 input wired to a soil moisture probe, calibrated dry and wet;
    close() has nothing to release (single-shot mode powers the chip down)."""

    kind = "ads1115"
    quantities = ("soil_moisture",)

    def __init__(self, ctx: HalContext, name: str, bus: int = 1, address: int = 0x48, channel: int = 0,
                 gain: float = 4.096, dry: int = 20000, wet: int = 9000, *,
                 sleep: Callable[[float], None] | None = None) -> None:
        for label, value, low, high in (("bus", bus, 0, 255), ("address", address, 0x48, 0x4B),
                                        ("channel", channel, 0, 3), ("dry", dry, -0x8000, 0x7FFF),
                                        ("wet", wet, -0x8000, 0x7FFF)):
            check_int(name, label, value, low, high)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)):
            raise HalConfigError(f"{name}: gain must be a number of volts, got {gain!r}")
        self.gain = _gain_key(gain)
        if dry == wet:
            raise HalConfigError(f"{name}: dry and wet must differ (both {dry})")
        super().__init__(ctx, name, log, PART_CHIP, "out_of_span")
        self.bus_number = bus
        self.address = address
        self.channel = channel
        self.dry, self.wet = dry, wet
        self.config = config_word(channel, self.gain)
        # A context that pairs its clock with a sleep (a test's fake time) lends it to the driver.
        self._sleep = sleep or ctx.sleep
        self._period = 1.0 / SPS
        self.last_raw: int | None = None

    def __repr__(self) -> str:
        return (f"Ads1115Sensor(name={self.name!r}, bus={self.bus_number}, address=0x{self.address:02x}, "
                f"AIN{self.channel}, ±{self.gain} V)")

    # -- measuring ---------------------------------------------------------------------

    def _measure(self) -> int:
        with _chip_lock(self.bus_number, self.address):
            return self._convert()

    def _explain(self, exc: BaseException) -> str:
        return f"ADS1115 at 0x{self.address:02x} on bus {self.bus_number}: {exc or type(exc).__name__}"

    def _convert(self) -> int:
        bus = self._ctx.i2c_bus(self.bus_number)
        word = self.config
        # Repeating this write (a retry) only starts the same conversion again.
        bus.write_i2c_block_data(self.address, CONFIG, [word >> 8, word & 0xFF])
        self._sleep(self._period * (1 + RATE_TOLERANCE) + MARGIN_S)
        for poll in range(POLLS + 1):
            config = self._agreed_word(bus, CONFIG)
            if config & ~OS & 0xFFFF != word & ~OS & 0xFFFF:
                raise DeviceUnavailable(f"config register reads 0x{config:04x} while converting "
                                        f"0x{word:04x} (chip reset, or reconfigured by another master)")
            if config & OS:
                break
            if poll < POLLS:
                self._sleep(self._period / 4)
        else:
            waited = self._period * (1 + RATE_TOLERANCE + POLLS / 4) * 1000
            raise DeviceUnavailable(f"conversion not finished after {waited:.0f} ms (OS bit still 0)")
        value = self._agreed_word(bus, CONVERSION)
        return signed16(value >> 8, value & 0xFF)

    def _agreed_word(self, bus: Any, register: int) -> int:
        """A register read until two reads agree: this chip sends no CRC. Neither register changes
        between reads here but for the OS bit turning 1, after which the next read agrees."""
        seen: list[int] = []
        for _ in range(READS):
            msb, lsb = bus.read_i2c_block_data(self.address, register, 2)
            value = (msb << 8) | lsb
            if value in seen:
                return value
            seen.append(value)
        raise DeviceUnavailable(f"register {register} read back {', '.join(f'0x{v:04x}' for v in seen)}: "
                                f"no two reads agree, the bus corrupts transfers")

    def _moisture(self, raw: int) -> float:
        volts = code_to_volts(raw, self.gain)
        if raw in FULL_SCALE_CODES:
            raise ImplausibleValue(f"AIN{self.channel} at the ±{self.gain} V full-scale limit (raw {raw}, "
                                   f"{volts:.3f} V): probe unplugged, or the gain too high for it")
        low, high = sorted((self.dry, self.wet))
        margin = SPAN_TOLERANCE * (high - low)
        if not low - margin <= raw <= high + margin:
            raise ImplausibleValue(f"AIN{self.channel} raw {raw} ({volts:.3f} V) is far outside the "
                                   f"calibrated span dry {self.dry} .. wet {self.wet}: probe unplugged "
                                   f"or on another input?")
        return round(min(100.0, max(0.0, moisture_percent(raw, self.dry, self.wet))), 2)

    # -- readings ----------------------------------------------------------------------

    def _report(self, raw: int) -> list[Reading]:
        """The chip answered; the soil moisture, or a failed reading when the probe's value cannot be right."""
        self._availability.recovered(PART_CHIP)
        self.last_raw = raw
        try:
            value = self._moisture(raw)
            reading = Reading.measured(self._ctx.node, self.name, "soil_moisture", value, self._clock())
        except (ImplausibleValue, ReadingError) as exc:
            self.stats["out_of_span"] += 1
            return self._failed(str(exc), PART_PROBE)
        self._availability.recovered(PART_PROBE)
        return [reading]
